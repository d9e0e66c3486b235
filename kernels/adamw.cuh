// adamw.cuh — the AdamW update of one tensor (OPTIMIZERS.md section 1, = cpu_ops.h adamw_update):
//
//   g = grad * grad_scale;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
//   w -= lr * ((m / bc1) / (sqrt(v / bc2) + eps) + weight_decay * w)
//
// m, v and the optional master weights are fp32; params and grads are floatX. With master weights
// the fp32 master is updated and params receive a copy: exact for fp32 params, stochastically
// rounded for bf16 params. Without master weights (bf16 params alone), params are read, updated in
// fp32 and written back with stochastic rounding too.
//
// Why stochastic rounding: an update smaller than half a bf16 ulp (2^-9 relative) would vanish
// under round-to-nearest every step; rounding up with probability equal to the remainder keeps the
// weights right on average. The random bits come from a counter-based hash of (seed, element
// index), so a run is reproducible (and resumable) given the seed, and no RNG state is kept. The
// caller varies the seed per step and per tensor.
//
// One thread per element: the update is memory-bound and every access is coalesced; params,
// master, grads, m and v need not share an alignment, so 128-bit packs are not used here.
#pragma once

#include "cuda_check.h"
#include "packed.h"

#include <cstddef>
#include <cstdint>

#include "backend/backend.h"  // AdamWArgs

namespace slim {

namespace adamw_detail {
constexpr int kThreads = 512;
}  // namespace adamw_detail

// 32 random bits from (seed, index): the splitmix64 finalizer applied to a Weyl-sequence point, a
// well-mixed counter-based hash (every input bit affects every output bit).
__device__ __host__ inline uint32_t random_bits(uint32_t seed, uint64_t index) {
  uint64_t z = index + (static_cast<uint64_t>(seed) + 1) * 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  z ^= z >> 31;
  return static_cast<uint32_t>(z >> 32);
}

// Rounds x to a neighbouring bf16 with probability proportional to closeness: adding 16 random bits
// below the kept mantissa and truncating rounds up exactly when the random number is smaller than
// the dropped remainder. NaN and infinity keep their value (round to nearest).
__device__ __host__ inline __nv_bfloat16 stochastic_round_bf16(float x, uint32_t random) {
  uint32_t bits;
  __builtin_memcpy(&bits, &x, sizeof(bits));
  if ((bits & 0x7f800000u) == 0x7f800000u) return __float2bfloat16_rn(x);
  const uint32_t rounded = (bits + (random & 0xffffu)) & 0xffff0000u;
  float result;
  __builtin_memcpy(&result, &rounded, sizeof(result));
  return __float2bfloat16_rn(result);  // exact: the low 16 bits are zero
}

template <typename floatX>
__device__ inline floatX store_param(float w, uint32_t seed, uint64_t index);
template <>
__device__ inline float store_param<float>(float w, uint32_t, uint64_t) {
  return w;
}
template <>
__device__ inline __nv_bfloat16 store_param<__nv_bfloat16>(float w, uint32_t seed, uint64_t index) {
  return stochastic_round_bf16(w, random_bits(seed, index));
}

// ---- CUDA kernels ------------------------------------------------------------------------------

template <typename floatX>
__global__ void adamw_update_kernel(floatX* params, float* master, const floatX* grads, float* m,
                                    float* v, size_t n, float lr, float beta1, float beta2,
                                    float eps, float weight_decay, float grad_scale,
                                    float bias_correction1, float bias_correction2, uint32_t seed) {
  const size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  // Same expression order as cpu_ops.h so fp32 results agree to rounding.
  const float g = to_float(grads[i]) * grad_scale;
  const float m_new = beta1 * m[i] + (1.0f - beta1) * g;
  const float v_new = beta2 * v[i] + (1.0f - beta2) * g * g;
  m[i] = m_new;
  v[i] = v_new;
  const float m_hat = m_new / bias_correction1, v_hat = v_new / bias_correction2;
  const float w_old = master != nullptr ? master[i] : to_float(params[i]);
  const float w_new = w_old - lr * (m_hat / (sqrtf(v_hat) + eps) + weight_decay * w_old);
  if (master != nullptr) master[i] = w_new;
  params[i] = store_param<floatX>(w_new, seed, i);
}

// ---- launchers ---------------------------------------------------------------------------------

// AdamW on n elements (Backend::adamw_update). master [n] fp32 may be null (params are then the
// weights that are updated). seed: the stochastic-rounding seed of this step and tensor (only used
// for bf16 params); the same seed reproduces the same bits.
template <typename floatX>
void adamw_update(floatX* params, float* master, const floatX* grads, float* m, float* v, size_t n,
                  const AdamWArgs& args, uint32_t seed, cudaStream_t stream) {
  constexpr const char* op = "adamw_update";
  if (n == 0) return;
  if (params == nullptr || grads == nullptr || m == nullptr || v == nullptr)
    throw Error(cat(op, ": params, grads, m and v must not be null"));
  if (args.bias_correction1 <= 0.0f || args.bias_correction2 <= 0.0f)
    throw Error(cat(op, ": bias corrections must be positive (1 - beta^t with t >= 1), got ",
                    args.bias_correction1, " and ", args.bias_correction2));
  simt::launch(adamw_update_kernel<floatX>, dim3(grid_blocks(op, n, adamw_detail::kThreads)),
               dim3(adamw_detail::kThreads), 0, stream, params, master, grads, m, v, n, args.lr,
               args.beta1, args.beta2, args.eps, args.weight_decay, args.grad_scale,
               args.bias_correction1, args.bias_correction2, seed);
  CUDA_CHECK_LAUNCH();
}

}  // namespace slim
