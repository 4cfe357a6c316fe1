// Standalone SoftNMS on the GPU with host arrays in and out (gsmt_fast.soft_nms backend "cuda"): for tests and
// one-off use. One block runs the same block_soft_nms as the batched detection kernel; the host partitions the
// inputs (stable by label for multiclass NMS, as soft_nms_core does on the CPU) and `origin` maps a partitioned
// position back to its input.
#include <algorithm>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "cuda/block_soft_nms.cuh"
#include "cuda/device_common.cuh"
#include "postprocess.h"

namespace gsmt {
namespace {

using cuda::check_cuda;
using cuda::kThreads;
using cuda::NmsArrays;

template <class Label>
__global__ void __launch_bounds__(kThreads)
    soft_nms_kernel(const double* segments, const double* scores, const Label* labels, const int32_t* origin, int n,
                    const NmsParams p, NmsArrays a, int32_t* out_index, double* out_score, int32_t* out_count) {
  const int tid = threadIdx.x;
  for (int i = tid; i < n; i += kThreads) {
    a.start[i] = segments[2 * i];
    a.end[i] = segments[2 * i + 1];
    a.score[i] = scores[i];
    a.alive[i] = scores[i] >= p.min_score ? 1 : 0;
  }
  __syncthreads();
  const int kept = cuda::block_soft_nms<Label>(a, labels, n, p, [&](int rank, int i, double score) {
    out_index[rank] = origin[i];
    out_score[rank] = score;
  });
  if (tid == 0) *out_count = kept;
}

}  // namespace

int64_t soft_nms_cuda(const double* segments, const double* scores, const int64_t* labels, int64_t n,
                      const NmsParams& nms, int64_t* out_index, double* out_score) {
  if (n <= 0) return 0;
  if (n > INT32_MAX / 8) throw std::invalid_argument("too many segments for soft_nms_cuda");
  const size_t N = static_cast<size_t>(n);
  std::vector<int32_t> origin(N);
  for (size_t i = 0; i < N; ++i) origin[i] = static_cast<int32_t>(i);
  if (nms.multiclass) {
    std::stable_sort(origin.begin(), origin.end(), [labels](int32_t x, int32_t y) { return labels[x] < labels[y]; });
  }
  std::vector<double> host_segments(2 * N), host_scores(N);
  std::vector<int64_t> host_labels(N);
  for (size_t s = 0; s < N; ++s) {
    host_segments[2 * s] = segments[2 * origin[s]];
    host_segments[2 * s + 1] = segments[2 * origin[s] + 1];
    host_scores[s] = scores[origin[s]];
    host_labels[s] = labels[origin[s]];
  }
  // One allocation: inputs, then the work arrays (NmsArrays), then the outputs.
  const size_t doubles = N * 2 + N + 4 * N + N;  // segments, scores, start/end/current/pick_score, out_score
  const size_t int32s = N + 2 * N + (N + 1) + N + 1;  // origin; alive, pick; group_begin; out_index; count
  const size_t bytes = doubles * sizeof(double) + N * sizeof(int64_t) + int32s * sizeof(int32_t);
  char* base = nullptr;
  check_cuda(cudaMalloc(&base, bytes), "cudaMalloc");
  struct Free {
    char* p;
    ~Free() { cudaFree(p); }
  } guard{base};
  double* d_segments = reinterpret_cast<double*>(base);
  double* d_scores = d_segments + 2 * N;
  NmsArrays a;
  a.start = d_scores + N;
  a.end = a.start + N;
  a.score = a.end + N;
  a.pick_score = a.score + N;
  double* d_out_score = a.pick_score + N;
  int64_t* d_labels = reinterpret_cast<int64_t*>(d_out_score + N);
  int32_t* d_origin = reinterpret_cast<int32_t*>(d_labels + N);
  a.alive = d_origin + N;
  a.pick = a.alive + N;
  a.group_begin = a.pick + N;
  int32_t* d_out_index = a.group_begin + N + 1;
  int32_t* d_count = d_out_index + N;
  check_cuda(cudaMemcpy(d_segments, host_segments.data(), 2 * N * sizeof(double), cudaMemcpyHostToDevice),
             "cudaMemcpy");
  check_cuda(cudaMemcpy(d_scores, host_scores.data(), N * sizeof(double), cudaMemcpyHostToDevice), "cudaMemcpy");
  check_cuda(cudaMemcpy(d_labels, host_labels.data(), N * sizeof(int64_t), cudaMemcpyHostToDevice), "cudaMemcpy");
  check_cuda(cudaMemcpy(d_origin, origin.data(), N * sizeof(int32_t), cudaMemcpyHostToDevice), "cudaMemcpy");
  soft_nms_kernel<int64_t><<<1, kThreads>>>(d_segments, d_scores, d_labels, d_origin, static_cast<int>(n), nms, a,
                                            d_out_index, d_out_score, d_count);
  check_cuda(cudaGetLastError(), "soft_nms kernel launch");
  int32_t count = 0;
  check_cuda(cudaMemcpy(&count, d_count, sizeof count, cudaMemcpyDeviceToHost), "cudaMemcpy");
  std::vector<int32_t> index(static_cast<size_t>(count));
  check_cuda(cudaMemcpy(index.data(), d_out_index, index.size() * sizeof(int32_t), cudaMemcpyDeviceToHost),
             "cudaMemcpy");
  check_cuda(cudaMemcpy(out_score, d_out_score, index.size() * sizeof(double), cudaMemcpyDeviceToHost), "cudaMemcpy");
  for (int32_t r = 0; r < count; ++r) out_index[r] = index[r];
  return count;
}

}  // namespace gsmt
