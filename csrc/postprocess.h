// Plain C++ interface of the post-processing ops (no Python, no libtorch): csrc/bindings.cpp converts NumPy arrays
// and raw device pointers to these calls, csrc/cpu and csrc/cuda implement them.
#pragma once

#include <cstdint>

#include "gsmt_core.h"

namespace gsmt {

enum class DType : int32_t { kFloat32 = 0, kFloat16 = 1 };

// The inputs of a batch of B windows: probs (B, K+1, T), masks (B, T, T), C-contiguous float32 or float16 (raw
// bits), and valid_len (B,). Host pointers for the CPU ops, device pointers for the CUDA ops.
// boundaries: the boundary head's distances (B, 2, T) float32, C-contiguous, of a model with that head; non-null
// switches the candidates to boundary candidates (docs/DESIGN.md "Boundary candidates"), nullptr keeps the masks'.
struct WindowBatch {
  const void* probs;
  DType probs_dtype;
  const void* masks;
  DType masks_dtype;
  const int32_t* valid_len;
  int64_t batch;
  const float* boundaries = nullptr;
};

// Fixed-capacity padded outputs of the candidate op: (B, M2) each, units (B, M2, 2), plus count (B,) and status (B,).
// units: each candidate's segment in snippet units ([a, b + 1] for a mask run; start = end = the source snippet for a
// boundary candidate). Padding: start = end = label = -1, score = 0, units = 0.
struct CandidateOutputs {
  int32_t* start;
  int32_t* end;
  int32_t* label;
  double* score;
  double* units;
  int32_t* count;
  int32_t* status;
};

// Padded outputs of the detection op: segments (B, D, 2) seconds, score (B, D), label (B, D), count, status.
// Padding: segments = score = 0, label = -1.
struct DetectionOutputs {
  double* segments;
  double* score;
  int32_t* label;
  int32_t* count;
  int32_t* status;
};

// Window-local snippet units -> seconds per window: seconds = offset[b] + u * scale[b] (B,) float64 each.
struct TimeMaps {
  const double* scale;
  const double* offset;
};

// ---- CPU (csrc/cpu) ----
// num_threads <= 0: std::thread::hardware_concurrency(). Call without the GIL.
void window_candidates_cpu(const WindowBatch& in, const CandidateParams& params, const CandidateOutputs& out,
                           int num_threads);
void window_detections_cpu(const WindowBatch& in, const TimeMaps& time, const CandidateParams& params,
                           const NmsParams& nms, const DetectionOutputs& out, int num_threads);
// SoftNMS of n segments (n, 2) with int64 labels. Writes up to n picked input indices and their emitted scores;
// returns how many.
int64_t soft_nms_cpu(const double* segments, const double* scores, const int64_t* labels, int64_t n,
                     const NmsParams& nms, int64_t* out_index, double* out_score);

#ifdef GSMT_WITH_CUDA
// ---- CUDA (csrc/cuda) ----
// All pointers are device pointers; the work is enqueued on `stream` (a cudaStream_t) with no host synchronisation,
// so the calls can be captured in a CUDA graph. Throws std::runtime_error on launch errors / unsupported sizes.
void window_candidates_cuda(const WindowBatch& in, const CandidateParams& params, const CandidateOutputs& out,
                            void* stream);
void window_detections_cuda(const WindowBatch& in, const TimeMaps& time, const CandidateParams& params,
                            const NmsParams& nms, const DetectionOutputs& out, void* stream);
// SoftNMS with HOST inputs and outputs: copies to the current device, runs one thread block, copies back
// (synchronous; for tests and one-off use). Same contract as soft_nms_cpu.
int64_t soft_nms_cuda(const double* segments, const double* scores, const int64_t* labels, int64_t n,
                      const NmsParams& nms, int64_t* out_index, double* out_score);
// Number of visible CUDA devices (0 when there is no driver or no GPU).
int cuda_device_count();
// Bytes of dynamic shared memory one window needs (for error messages and tests).
int64_t cuda_shared_bytes(const CandidateParams& params);
#endif

}  // namespace gsmt
