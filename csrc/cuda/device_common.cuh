// What every CUDA file of the extension shares: the block shape, error checks, element access for float32 and
// float16 (raw bits) inputs, and warp reductions.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <stdexcept>
#include <string>

#include "gsmt_core.h"

namespace gsmt {
namespace cuda {

constexpr int kThreads = 512;  // 16 warps: one window spreads over more columns and classes (batch-1 latency)
constexpr int kWarps = kThreads / 32;
constexpr unsigned kFullMask = 0xFFFFFFFFu;

inline void check_cuda(cudaError_t error, const char* what) {
  if (error != cudaSuccess) {
    throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(error));
  }
}

__device__ __forceinline__ float load_value(const float* p, int64_t i) { return __ldg(p + i); }
__device__ __forceinline__ float load_value(const uint16_t* p, int64_t i) { return half_bits_to_float(__ldg(p + i)); }
__device__ __forceinline__ bool raw_in_unit(const float* p, int64_t i) {
  const float v = __ldg(p + i);
  return v >= 0.0f && v <= 1.0f;
}
__device__ __forceinline__ bool raw_in_unit(const uint16_t* p, int64_t i) {
  return half_bits_in_unit_interval(__ldg(p + i));
}
__device__ __forceinline__ bool raw_finite(const float* p, int64_t i) { return isfinite(__ldg(p + i)); }
__device__ __forceinline__ bool raw_finite(const uint16_t* p, int64_t i) { return half_bits_finite(__ldg(p + i)); }

__device__ __forceinline__ float warp_max(float x) {
  for (int off = 16; off > 0; off >>= 1) x = fmaxf(x, __shfl_xor_sync(kFullMask, x, off));
  return x;
}
__device__ __forceinline__ int warp_min_int(int x) {
  for (int off = 16; off > 0; off >>= 1) x = min(x, __shfl_xor_sync(kFullMask, x, off));
  return x;
}
__device__ __forceinline__ int warp_max_int(int x) {
  for (int off = 16; off > 0; off >>= 1) x = max(x, __shfl_xor_sync(kFullMask, x, off));
  return x;
}

}  // namespace cuda
}  // namespace gsmt
