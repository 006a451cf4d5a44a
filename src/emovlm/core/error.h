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

// Throws Error("FIELD: VALUE is outside [LO, HI]") unless lo <= value <= hi. Configuration sizes
// are bounded above as well as below, so a corrupt file fails here rather than in an allocation.
inline void check_range(int64_t value, int64_t lo, int64_t hi, const std::string& field) {
  if (value < lo || value > hi)
    throw Error(cat(field, ": ", value, " is outside [", lo, ", ", hi, "]"));
}

// Throws Error("FIELD: VALUE must be a finite number in (0, HI]") for NaN, infinities, zero or
// negatives, and values over hi (epsilons, rope theta, ratios).
inline void check_positive_finite(double value, double hi, const std::string& field) {
  if (!(value > 0 && value <= hi))
    throw Error(cat(field, ": ", value, " must be a finite number in (0, ", hi, "]"));
}

}  // namespace emovlm
