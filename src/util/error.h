// Error types shared by every layer. main() maps them to exit codes:
//   UsageError  -> 2 (bad command line, bad config value: the user can fix the input)
//   Error       -> 1 (runtime failure: I/O, corrupt file, non-finite loss, ...)
// User-facing input is validated with these, never with assert (which vanishes under NDEBUG).
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace slim {

struct Error : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct UsageError : Error {
  using Error::Error;
};

// Concatenates any streamable arguments into one message.
template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

// An internal invariant (a bug in slimtrain, not in the user's input). Unlike assert it stays in
// release builds and says where it failed.
#define SLIM_CHECK(cond, ...)                                                                   \
  do {                                                                                          \
    if (!(cond))                                                                                \
      throw ::slim::Error(::slim::cat(__FILE__, ":", __LINE__, ": check failed: " #cond ": ", \
                                      ##__VA_ARGS__));                                          \
  } while (0)

}  // namespace slim
