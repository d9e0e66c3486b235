// Helpers shared by the cpu-label tests.
#pragma once
#include <gtest/gtest.h>

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

}  // namespace slim::test
