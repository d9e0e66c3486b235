// Portable random numbers. std::normal_distribution and std::shuffle are implementation-defined,
// so anything that must reproduce across machines and library versions (weight init, sampling)
// uses these instead: SplitMix64 for the stream, Box-Muller for normals.
#pragma once
#include <cmath>
#include <cstdint>

namespace slim {

class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next_u64() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  // Uniform in [0, 1) with 53 random bits.
  double uniform() { return double(next_u64() >> 11) * (1.0 / 9007199254740992.0); }
  // Standard normal; one Box-Muller pair per call (the second value is discarded for simplicity,
  // which keeps the stream position a pure function of the call count).
  double normal() {
    double u1 = uniform(), u2 = uniform();
    if (u1 < 1e-300) u1 = 1e-300;
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2);
  }
  uint64_t state() const { return state_; }
  void set_state(uint64_t state) { state_ = state; }

 private:
  uint64_t state_;
};

}  // namespace slim
