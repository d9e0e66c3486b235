// cuda_check.h — the checked-call macros for every CUDA runtime and cuBLAS(Lt) call.
//
//   CUDA_CHECK(cudaMemcpyAsync(...));    throws slim::Error unless the call returns cudaSuccess
//   CUBLAS_CHECK(cublasLtMatmul(...));   throws slim::Error unless it returns CUBLAS_STATUS_SUCCESS
//   CUDA_CHECK_LAUNCH();                after simt::launch: reports a bad configuration or (under
//                                       the emulator, whose launches are synchronous) a fault
//   slim::grid_blocks(op, items, per_block)   ceil(items / per_block), checked to fit a grid
//
// The message carries the file, the line, the statement text and the library's name and
// description of the error, so a failure deep inside a training step says exactly which call
// failed. Errors are typed exceptions (not abort) so the trainer can still write its last
// checkpoint and main() can map them to exit code 1.
//
// Include this after nothing else CUDA-related: it includes cuda_compat.h first, which must
// precede every CUDA header under the emulator.
#pragma once

#include "simt/cuda_compat.h"

#include <cublasLt.h>

#include "util/error.h"

namespace slim::cuda_check_detail {

[[noreturn]] inline void throw_cuda_error(cudaError_t error, const char* statement,
                                          const char* file, int line) {
  throw ::slim::Error(::slim::cat(file, ":", line, ": CUDA call failed: ", statement, ": ",
                                  cudaGetErrorName(error), " (", cudaGetErrorString(error), ")"));
}

// Our own status names, so the message does not depend on which cuBLAS entry points a build (or
// the emulator's cuBLASLt subset) provides.
inline const char* cublas_status_name(cublasStatus_t status) {
  switch (status) {
    case CUBLAS_STATUS_SUCCESS:
      return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_NOT_INITIALIZED:
      return "CUBLAS_STATUS_NOT_INITIALIZED (no handle)";
    case CUBLAS_STATUS_ALLOC_FAILED:
      return "CUBLAS_STATUS_ALLOC_FAILED (out of memory)";
    case CUBLAS_STATUS_INVALID_VALUE:
      return "CUBLAS_STATUS_INVALID_VALUE (bad argument or layout)";
    case CUBLAS_STATUS_ARCH_MISMATCH:
      return "CUBLAS_STATUS_ARCH_MISMATCH (GPU lacks a feature)";
    case CUBLAS_STATUS_MAPPING_ERROR:
      return "CUBLAS_STATUS_MAPPING_ERROR";
    case CUBLAS_STATUS_EXECUTION_FAILED:
      return "CUBLAS_STATUS_EXECUTION_FAILED (kernel failed)";
    case CUBLAS_STATUS_INTERNAL_ERROR:
      return "CUBLAS_STATUS_INTERNAL_ERROR";
    case CUBLAS_STATUS_NOT_SUPPORTED:
      return "CUBLAS_STATUS_NOT_SUPPORTED (no algorithm for this configuration)";
    case CUBLAS_STATUS_LICENSE_ERROR:
      return "CUBLAS_STATUS_LICENSE_ERROR";
    default:
      return "unknown cublasStatus_t";
  }
}

[[noreturn]] inline void throw_cublas_error(cublasStatus_t status, const char* statement,
                                            const char* file, int line) {
  throw ::slim::Error(::slim::cat(file, ":", line, ": cuBLAS call failed: ", statement, ": ",
                                  cublas_status_name(status), " (status ", static_cast<int>(status),
                                  ")"));
}

}  // namespace slim::cuda_check_detail

#define CUDA_CHECK(statement)                                                             \
  do {                                                                                    \
    const cudaError_t slim_cuda_error_ = (statement);                                     \
    if (slim_cuda_error_ != cudaSuccess)                                                  \
      ::slim::cuda_check_detail::throw_cuda_error(slim_cuda_error_, #statement, __FILE__, \
                                                  __LINE__);                              \
  } while (0)

#define CUBLAS_CHECK(statement)                                                                \
  do {                                                                                         \
    const cublasStatus_t slim_cublas_status_ = (statement);                                    \
    if (slim_cublas_status_ != CUBLAS_STATUS_SUCCESS)                                          \
      ::slim::cuda_check_detail::throw_cublas_error(slim_cublas_status_, #statement, __FILE__, \
                                                    __LINE__);                                 \
  } while (0)

namespace slim {

// Blocks needed to cover `work_items` with `per_block` items each, checked to fit gridDim.x
// (2^31 - 1) so a huge shape fails loudly instead of launching a truncated grid.
inline unsigned int grid_blocks(const char* op, unsigned long long work_items,
                                unsigned long long per_block) {
  const unsigned long long blocks = (work_items + per_block - 1) / per_block;
  if (blocks > 0x7fffffffULL)
    throw Error(cat(op, ": ", work_items, " work items need ", blocks,
                    " blocks, more than a grid allows (2^31 - 1); split the call"));
  return static_cast<unsigned int>(blocks == 0 ? 1 : blocks);
}

}  // namespace slim

// cudaGetLastError also clears a (non-sticky) launch error, so the next check starts clean.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())
