// Errors the library throws: one class, messages that name the file, the field and the shapes.
#pragma once

#include <cstdint>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

namespace emovlm {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Builds a message from any streamable pieces: throw Error(cat("bad shape ", shape_str(s))).
template <typename... Args>
std::string cat(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

// "[2, 3, 4]"
std::string shape_str(const std::vector<int64_t>& shape);

// Throws Error(message) when the condition is false.
inline void check(bool condition, const std::string& message) {
  if (!condition) throw Error(message);
}

}  // namespace emovlm
