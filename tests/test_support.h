// Helpers shared by the cpu-label tests.
#pragma once
#include <gtest/gtest.h>

#include <sys/wait.h>

#include <cstdio>
#include <filesystem>
#include <string>

#ifndef SLIMTRAIN_TEST_TMP
#define SLIMTRAIN_TEST_TMP "/tmp/slim_test"
#endif

namespace slim::test {

// A fresh, empty directory per test (SLIMTRAIN_TEST_TMP/<area>/<suite>.<test>), so tests never
// see each other's files and a rerun starts clean.
inline std::string fresh_test_dir(const std::string& area) {
  const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::filesystem::path dir = std::filesystem::path(SLIMTRAIN_TEST_TMP) / area /
                                    (std::string(info->test_suite_name()) + "." + info->name());
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir.string();
}

// Runs the slimtrain executable under test with `args` (a shell command line tail), as a user
// would: its exit code and stdout + stderr.
struct CommandResult {
  int exit_code;
  std::string output;
};
inline CommandResult run_slimtrain(const std::string& args) {
#ifdef SLIMTRAIN_BINARY
  const std::string command = std::string(SLIMTRAIN_BINARY) + " " + args + " 2>&1";
#else
  const std::string command = "slimtrain " + args + " 2>&1";
#endif
  FILE* pipe = popen(command.c_str(), "r");
  std::string output;
  char buffer[4096];
  size_t n;
  while ((n = fread(buffer, 1, sizeof buffer, pipe)) > 0) output.append(buffer, n);
  const int status = pclose(pipe);
  return {WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status), output};
}

}  // namespace slim::test
