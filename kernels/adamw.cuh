// adamw.cuh — the AdamW update of one tensor (OPTIMIZERS.md section 1, = cpu_ops.h adamw_update):
//
//   g = grad * grad_scale;  m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2
//   w -= lr * ((m / bc1) / (sqrt(v / bc2) + eps) + weight_decay * w)
//
// v and the optional master weights are fp32; params and grads are floatX; m is floatM: fp32, or
// bf16 (optimizer.m_dtype), read as fp32 and written back stochastically rounded with its own seed
// (args.m_seed) while the weight update uses the unrounded fp32 m. With master weights the fp32
// master is updated and params receive a copy: exact for fp32 params, stochastically rounded for
// bf16 params. Without master weights (bf16 params alone), params are read, updated in fp32 and
// written back with stochastic rounding too.
//
// Why stochastic rounding: an update smaller than half a bf16 ulp (2^-9 relative) would vanish
// under round-to-nearest every step; rounding up with probability equal to the remainder keeps the
// weights (and m) right on average. The random bits come from a counter-based hash of (seed,
// element index) (random_bits in optim/block_adam.h, shared with the CPU reference), so a run is
// reproducible (and resumable) given the seed, and no RNG state is kept. The caller varies the
// seeds per step and per tensor.
//
// One thread per element: the update is memory-bound and every access is coalesced; params,
// master, grads, m and v need not share an alignment, so 128-bit packs are not used here.
#pragma once

#include "cuda_check.h"
#include "packed.h"

#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "backend/backend.h"  // AdamWArgs
#include "optim/block_adam.h"  // random_bits, stochastic_round_finite_to_bf16

namespace slim {

namespace adamw_detail {
constexpr int kThreads = 512;
}  // namespace adamw_detail

// Rounds x to a neighbouring bf16 with probability proportional to closeness (block_adam.h's
// stochastic_round_finite_to_bf16, the CPU reference's rounding). NaN and infinity keep their value
// (round to nearest).
__device__ __host__ inline __nv_bfloat16 stochastic_round_bf16(float x, uint32_t random) {
  if ((float_bits(x) & 0x7f800000u) == 0x7f800000u) return __float2bfloat16_rn(x);
  return __float2bfloat16_rn(stochastic_round_finite_to_bf16(x, random));  // exact: low bits zero
}

// Stores an fp32 result into storage type T: as is for fp32, stochastically rounded with
// random_bits(seed, index) for bf16. Weights use it with the step's weight seed, a bf16 m with
// its own m seed.
template <typename T>
__device__ inline T store_rounded(float x, uint32_t seed, uint64_t index);
template <>
__device__ inline float store_rounded<float>(float x, uint32_t, uint64_t) {
  return x;
}
template <>
__device__ inline __nv_bfloat16 store_rounded<__nv_bfloat16>(float x, uint32_t seed,
                                                             uint64_t index) {
  return stochastic_round_bf16(x, random_bits(seed, index));
}

// ---- CUDA kernels ------------------------------------------------------------------------------

template <typename floatX, typename floatM>
__global__ void adamw_update_kernel(floatX* params, float* master, const floatX* grads, floatM* m,
                                    float* v, size_t n, float lr, float beta1, float beta2,
                                    float eps, float weight_decay, float grad_scale,
                                    float bias_correction1, float bias_correction2, uint32_t seed,
                                    uint32_t m_seed) {
  const size_t i = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i >= n) return;
  // Same expression order as cpu_ops.h so fp32 results agree to rounding.
  const float g = to_float(grads[i]) * grad_scale;
  const float m_new = beta1 * to_float(m[i]) + (1.0f - beta1) * g;
  const float v_new = beta2 * v[i] + (1.0f - beta2) * g * g;
  m[i] = store_rounded<floatM>(m_new, m_seed, i);
  v[i] = v_new;
  const float m_hat = m_new / bias_correction1, v_hat = v_new / bias_correction2;
  const float w_old = master != nullptr ? master[i] : to_float(params[i]);
  const float w_new = w_old - lr * (m_hat / (sqrtf(v_hat) + eps) + weight_decay * w_old);
  if (master != nullptr) master[i] = w_new;
  params[i] = store_rounded<floatX>(w_new, seed, i);
}

// ---- launchers ---------------------------------------------------------------------------------

// AdamW on n elements (Backend::adamw_update). master [n] fp32 may be null (params are then the
// weights that are updated). m [n] is float or __nv_bfloat16, and args.m_bf16 must say which.
// seed: the stochastic-rounding seed of this step and tensor (only used for bf16 params);
// args.m_seed that of a bf16 m; the same seeds reproduce the same bits.
template <typename floatX, typename floatM>
void adamw_update(floatX* params, float* master, const floatX* grads, floatM* m, float* v, size_t n,
                  const AdamWArgs& args, uint32_t seed, cudaStream_t stream) {
  constexpr const char* op = "adamw_update";
  static_assert(std::is_same_v<floatM, float> || std::is_same_v<floatM, __nv_bfloat16>,
                "m is stored in fp32 or bf16");
  if (n == 0) return;
  if (params == nullptr || grads == nullptr || m == nullptr || v == nullptr)
    throw Error(cat(op, ": params, grads, m and v must not be null"));
  if (args.m_bf16 != std::is_same_v<floatM, __nv_bfloat16>)
    throw Error(cat(op, ": args.m_bf16 = ", args.m_bf16, " but m is passed as ",
                    std::is_same_v<floatM, float> ? "fp32" : "bf16"));
  if (args.bias_correction1 <= 0.0f || args.bias_correction2 <= 0.0f)
    throw Error(cat(op, ": bias corrections must be positive (1 - beta^t with t >= 1), got ",
                    args.bias_correction1, " and ", args.bias_correction2));
  simt::launch(adamw_update_kernel<floatX, floatM>,
               dim3(grid_blocks(op, n, adamw_detail::kThreads)), dim3(adamw_detail::kThreads), 0,
               stream, params, master, grads, m, v, n, args.lr, args.beta1, args.beta2, args.eps,
               args.weight_decay, args.grad_scale, args.bias_correction1, args.bias_correction2,
               seed, args.m_seed);
  CUDA_CHECK_LAUNCH();
}

}  // namespace slim
