// gelu.cuh — GELU (tanh approximation, as GPT-2) forward and backward as standalone element-wise
// kernels, for when the matmul's cuBLASLt epilogue does not fuse them (e.g. recomputing the MLP
// activation in the backward, or a GEMM configuration without the GELU epilogue).
//
//   gelu(x)  = 0.5 x (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)
//            = x * sigmoid(2u)                      (the form cpu_ops.h uses: one exp, no
//                                                    cancellation for large |x|)
//   gelu'(x) = s + 2 x s (1 - s) du/dx,  s = sigmoid(2u), du/dx = sqrt(2/pi) (1 + 3*0.044715 x^2)
//
// One thread per 16-byte pack; n (the element count) must be a multiple of the pack and the
// tensors 16-byte aligned (GPT-2's activations are N * 4C elements, always a multiple of 8).
#pragma once

#include "cuda_check.h"
#include "packed.h"

#include <cstddef>

namespace slim {

namespace gelu_detail {
constexpr int kThreads = 256;
constexpr float kSqrt2OverPi = 0.7978845608028654f;
constexpr float kCubic = 0.044715f;
}  // namespace gelu_detail

__device__ inline float gelu_tanh(float x) {
  const float u = gelu_detail::kSqrt2OverPi * (x + gelu_detail::kCubic * x * x * x);
  return x / (1.0f + expf(-2.0f * u));
}

__device__ inline float gelu_tanh_grad(float x) {
  const float u = gelu_detail::kSqrt2OverPi * (x + gelu_detail::kCubic * x * x * x);
  const float s = 1.0f / (1.0f + expf(-2.0f * u));
  const float du_dx = gelu_detail::kSqrt2OverPi * (1.0f + 3.0f * gelu_detail::kCubic * x * x);
  return s + 2.0f * x * s * (1.0f - s) * du_dx;
}

// ---- CUDA kernels ------------------------------------------------------------------------------

// out[i] = gelu(inp[i]).
template <typename floatX>
__global__ void gelu_forward_kernel(floatX* out, const floatX* inp, size_t packs) {
  using Pack = Packed128<floatX>;
  const size_t pack = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (pack >= packs) return;
  const Pack x = load128cs(inp + pack * Pack::size);
  Pack result;
#pragma unroll
  for (int k = 0; k < Pack::size; ++k) result[k] = from_float<floatX>(gelu_tanh(to_float(x[k])));
  store128(out + pack * Pack::size, result);
}

// dinp[i] = dout[i] * gelu'(inp[i]); dinp may be dout (in place).
template <typename floatX>
__global__ void gelu_backward_kernel(floatX* dinp, const floatX* dout, const floatX* inp,
                                     size_t packs) {
  using Pack = Packed128<floatX>;
  const size_t pack = static_cast<size_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (pack >= packs) return;
  const Pack x = load128cs(inp + pack * Pack::size);
  const Pack g = load128cs(dout + pack * Pack::size);
  Pack result;
#pragma unroll
  for (int k = 0; k < Pack::size; ++k)
    result[k] = from_float<floatX>(to_float(g[k]) * gelu_tanh_grad(to_float(x[k])));
  store128(dinp + pack * Pack::size, result);
}

// ---- launchers ---------------------------------------------------------------------------------

// out[n] = gelu(inp[n]); out may be inp.
template <typename floatX>
void gelu_forward(floatX* out, const floatX* inp, size_t n, cudaStream_t stream) {
  constexpr const char* op = "gelu_forward";
  require_packed(op, "out", out, static_cast<long long>(n));
  require_packed(op, "inp", inp, static_cast<long long>(n));
  if (n == 0) return;
  const size_t packs = n / Packed128<floatX>::size;
  simt::launch(gelu_forward_kernel<floatX>, dim3(grid_blocks(op, packs, gelu_detail::kThreads)),
               dim3(gelu_detail::kThreads), 0, stream, out, inp, packs);
  CUDA_CHECK_LAUNCH();
}

// dinp[n] = dout[n] * gelu'(inp[n]) (overwritten); dinp may be dout.
template <typename floatX>
void gelu_backward(floatX* dinp, const floatX* dout, const floatX* inp, size_t n,
                   cudaStream_t stream) {
  constexpr const char* op = "gelu_backward";
  require_packed(op, "dinp", dinp, static_cast<long long>(n));
  require_packed(op, "dout", dout, static_cast<long long>(n));
  require_packed(op, "inp", inp, static_cast<long long>(n));
  if (n == 0) return;
  const size_t packs = n / Packed128<floatX>::size;
  simt::launch(gelu_backward_kernel<floatX>, dim3(grid_blocks(op, packs, gelu_detail::kThreads)),
               dim3(gelu_detail::kThreads), 0, stream, dinp, dout, inp, packs);
  CUDA_CHECK_LAUNCH();
}

}  // namespace slim
