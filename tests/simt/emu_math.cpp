// emu_math.cpp — CUDA's fast-math intrinsics whose names glibc's <math.h> already declares (as
// internal functions that libm does not export). Defining them here, with glibc's C linkage, lets
// kernels call __expf & co under the emulator. They are the precise functions: the GPU's
// approximations differ in the last bits, which tests absorb in their tolerances.
#include <cmath>

extern "C" {
float __expf(float x) noexcept { return expf(x); }
float __logf(float x) noexcept { return logf(x); }
float __powf(float x, float y) noexcept { return powf(x, y); }
float __sinf(float x) noexcept { return sinf(x); }
float __cosf(float x) noexcept { return cosf(x); }
float __tanf(float x) noexcept { return tanf(x); }
float __exp10f(float x) noexcept { return exp10f(x); }
float __log2f(float x) noexcept { return log2f(x); }
float __log10f(float x) noexcept { return log10f(x); }
float __tanhf(float x) noexcept { return tanhf(x); }
void __sincosf(float x, float* s, float* c) noexcept { sincosf(x, s, c); }
}
