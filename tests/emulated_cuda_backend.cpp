// The CUDA backend compiled by g++ against the SIMT emulator: the same cuda_backend.cu that nvcc
// builds into slimcuda, included after the emulator's prologue (a source file has one language
// per CMake directory, so the emulated build needs this .cpp wrapper). Linked into the emulated
// tests (tests/test_cuda_step.cpp) in place of slimcuda; it defines CudaBackend,
// cuda_availability() and make_cuda_backend(), which make_backend calls.
#include "simt/cuda_compat.h"  // first: it must precede every CUDA header

#include "backend/cuda/cuda_backend.cu"
