// CUDA batched post-processing: one thread block per window, everything on chip, fixed-size outputs, no host
// synchronisation (capturable in a CUDA graph). The rules (comparisons, ties, IoU, decay, exp) come from
// gsmt_core.h, shared with the CPU path, so CUDA and CPU agree bit for bit.
//
// Per block (window b), kThreads = 512 threads (16 warps):
//   0. status checks (valid_len, time map, optional finiteness / [0, 1] scan of the valid part);
//   1. foreground + label per snippet (threads over t);
//   2. top-M1 snippets by rank counting (O(V^2) compares in shared memory; exact tie order, no sort needed);
//   3. one warp per selected column: the column goes to shared memory, then per threshold 32 rows at a time:
//      __ballot_sync packs the active rows, run starts are A & ~(A << 1 | carry) and ends A & ~(A >> 1 | next),
//      a segmented max-scan (__shfl_up_sync) gives each run's max, carried across 32-row words;
//   4. candidates go into an on-chip hash table keyed by (start, end, label) with atomicMax on the score bits
//      (scores are >= 0, so their IEEE bits order like the values): this is the oracle's merge;
//   5. compaction + bitonic sort by (score desc, key asc) = (score desc, start, end, label); keep M2;
//   6. detections only: SoftNMS by the whole block. The candidates are partitioned stably by label (rank counting),
//      so each class is a contiguous group; warp w runs the greedy picks of classes w, w + 16, ... (a window's classes
//      in parallel, each pick scanning only its own class, a warp-wide argmax per pick with no block barriers), then
//      all threads merge the per-class picks by rank counting. One window therefore uses 16 warps, not one.
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

#include "gsmt_core.h"
#include "postprocess.h"

namespace gsmt {
namespace {

constexpr int kThreads = 512;  // 16 warps: one window spreads over more columns and classes (batch-1 latency)
constexpr int kWarps = kThreads / 32;
constexpr int kTableBits = kCudaCandidateBits;
constexpr int kTableSize = kCudaCandidateCapacity;  // distinct candidates per window kept on chip; more -> overflow
constexpr unsigned kFullMask = 0xFFFFFFFFu;
constexpr uint64_t kEmptyKey = ~uint64_t{0};  // never a real key: start < 2^20 - 1 keeps the top bits clear

static_assert(kTableSize == (1 << kTableBits), "table size must be a power of two");
static_assert(kTableSize % kThreads == 0, "compaction walks the table in block-sized chunks");
static_assert(kWarps >= 8, "Layout uses 8 column buffers for long windows");
static_assert(kTableSize * sizeof(uint64_t) >= (kTableSize + 1) * sizeof(int32_t),
              "SoftNMS group starts reuse the table's key array");

void check_cuda(cudaError_t error, const char* what) {
  if (error != cudaSuccess) {
    throw std::runtime_error(std::string("CUDA error in ") + what + ": " + cudaGetErrorString(error));
  }
}

// ---- element access ----
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

// ---- shared memory layout (bytes), identical on host (launch size) and device ----
struct Layout {
  int column_warps;                                                   // warps that hold a column each (phase 3)
  size_t foreground, label, selected, columns;                        // phase 1 (candidate generation)
  size_t nms_start, nms_end, nms_score, nms_pick_score, nms_label, nms_alive, nms_pick;  // phase 3, overlays 1
  size_t keys, scores, total;                                         // hash table, then the sorted candidates
};

__host__ __device__ inline size_t align16(size_t bytes) { return (bytes + 15) & ~size_t{15}; }

__host__ __device__ inline Layout make_layout(const Params& p) {
  Layout L{};
  const size_t T = static_cast<size_t>(p.T);
  const size_t m1 = static_cast<size_t>(p.top_snippets) < T ? static_cast<size_t>(p.top_snippets) : T;
  size_t off = 0;
  auto place = [&off](size_t bytes) {  // the next 16-byte aligned array of `bytes` bytes: its offset
    const size_t at = off;
    off += align16(bytes);
    return at;
  };
  // Every warp holds a column for windows up to 1024 snippets; longer windows use 8 column buffers (the old
  // footprint), so the longest window that fits in shared memory stays ~4,100 snippets, not ~2,300.
  L.column_warps = T <= 1024 ? kWarps : 8;
  L.foreground = place(T * sizeof(float));
  L.label = place(T * sizeof(int32_t));
  L.selected = place((m1 > 0 ? m1 : 1) * sizeof(int32_t));
  L.columns = place(static_cast<size_t>(L.column_warps) * T * sizeof(float));
  const size_t phase1 = off;
  const size_t n = static_cast<size_t>(p.pre_nms_topk < kTableSize ? p.pre_nms_topk : kTableSize);
  off = 0;
  L.nms_start = place(n * sizeof(double));
  L.nms_end = place(n * sizeof(double));
  L.nms_score = place(n * sizeof(double));
  L.nms_pick_score = place(n * sizeof(double));
  L.nms_label = place(n * sizeof(int32_t));
  L.nms_alive = place(n * sizeof(int32_t));
  L.nms_pick = place(n * sizeof(int32_t));
  const size_t region = phase1 > off ? phase1 : off;
  L.keys = region;
  L.scores = region + kTableSize * sizeof(uint64_t);
  L.total = L.scores + kTableSize * sizeof(uint64_t);
  return L;
}

// ---- hash table of candidates: key (start, end, label) -> max score bits ----
__device__ __forceinline__ bool table_insert(unsigned long long* keys, unsigned long long* scores, uint64_t key,
                                             double score) {
  uint32_t slot = static_cast<uint32_t>((key * 0x9E3779B97F4A7C15ull) >> (64 - kTableBits));
  const unsigned long long bits = static_cast<unsigned long long>(__double_as_longlong(score));
  for (int probe = 0; probe < kTableSize; ++probe) {
    const unsigned long long previous = atomicCAS(&keys[slot], kEmptyKey, key);
    if (previous == kEmptyKey || previous == key) {
      atomicMax(&scores[slot], bits);  // non-negative doubles order like their bit patterns
      return true;
    }
    slot = (slot + 1) & (kTableSize - 1);
  }
  return false;
}

__device__ __forceinline__ void emit_candidate(unsigned long long* keys, unsigned long long* scores, int* status,
                                               int32_t start, int32_t end, int32_t label, float prob, float mask_max,
                                               double score_threshold) {
  const double score = candidate_score(prob, mask_max);
  if (!(score > score_threshold)) return;
  if (!table_insert(keys, scores, pack_key(start, end, label), score)) atomicOr(status, kCandidateOverflow);
}

// (score desc, key asc) on the packed representation == candidate_before on the unpacked one.
__device__ __forceinline__ bool packed_before(unsigned long long score_a, unsigned long long key_a,
                                              unsigned long long score_b, unsigned long long key_b) {
  return score_a > score_b || (score_a == score_b && key_a < key_b);
}

// Short mode, one column held in shared memory by one warp: every maximal run of `column >= cutoff`.
__device__ void warp_short_runs(const float* column, int V, float cutoff, int32_t label, float prob,
                                double score_threshold, unsigned long long* keys, unsigned long long* scores,
                                int* status) {
  const int lane = threadIdx.x & 31;
  bool carry_active = false;  // row base-1 active
  float carry_max = -INFINITY;
  int carry_start = -1;
  for (int base = 0; base < V; base += 32) {
    const int row = base + lane;
    const float v = row < V ? column[row] : -INFINITY;
    const bool active = row < V && v >= cutoff;
    const unsigned bits = __ballot_sync(kFullMask, active);
    if (bits == 0u) {
      carry_active = false;
      continue;
    }
    const unsigned starts = bits & ~((bits << 1) | (carry_active ? 1u : 0u));
    const bool next_active = row + 1 < V && column[row + 1] >= cutoff;  // lane 31 looks into the next word
    const bool is_end = active && !next_active;
    // Start of this lane's run: the last start bit at or below the lane, else the run carried in.
    const unsigned at_or_below = lane == 31 ? kFullMask : ((2u << lane) - 1u);
    const unsigned head_bits = starts & at_or_below;
    const int head = head_bits ? 31 - __clz(head_bits) : -1;
    // Segmented inclusive max-scan: combine with lane - off only inside the same run.
    float x = active ? v : -INFINITY;
    for (int off = 1; off < 32; off <<= 1) {
      const float y = __shfl_up_sync(kFullMask, x, off);
      if (lane >= off && lane - off >= head) x = fmaxf(x, y);
    }
    if (active && head < 0) x = fmaxf(x, carry_max);
    const int start = head >= 0 ? base + head : carry_start;
    if (is_end) emit_candidate(keys, scores, status, start, row, label, prob, x, score_threshold);
    carry_active = (bits >> 31) & 1u;
    carry_max = __shfl_sync(kFullMask, x, 31);
    carry_start = __shfl_sync(kFullMask, start, 31);
  }
}

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

// Long mode: per threshold, first..last active row; its max is the column max (the argmax is always inside).
__device__ void warp_long_runs(const float* column, int V, const Params& p, int32_t label, float prob,
                               unsigned long long* keys, unsigned long long* scores, int* status) {
  const int lane = threadIdx.x & 31;
  float column_max = -INFINITY;
  for (int i = lane; i < V; i += 32) column_max = fmaxf(column_max, column[i]);
  column_max = warp_max(column_max);
  int previous_first = -1, previous_last = -1;
  for (int c = 0; c < p.num_cutoffs; ++c) {
    const float cutoff = p.cutoffs[c];
    int first = INT32_MAX, last = -1;
    for (int i = lane; i < V; i += 32) {
      if (column[i] >= cutoff) {
        first = min(first, i);
        last = max(last, i);
      }
    }
    first = warp_min_int(first);
    last = warp_max_int(last);
    if (last < 0) break;  // higher cutoffs activate nothing either
    if (first == previous_first && last == previous_last) continue;  // same candidate as the lower threshold
    previous_first = first;
    previous_last = last;
    if (lane == 0) emit_candidate(keys, scores, status, first, last, label, prob, column_max, p.score_threshold);
  }
}

// ---- SoftNMS by one block (shared by the batched kernel and the standalone op) ----
// The caller writes the candidates in partitioned order (partition_position) and synchronises the block. With
// multiclass NMS that order is stable-sorted by label: one contiguous group per class, classes ascending, members in
// input order; without it, input order (one group). Positions inside a group order like the input indices, so the
// index tie-break of nms_better and the merge's position tie-break give the CPU path's pick and output order.
struct NmsArrays {
  double* start;
  double* end;
  double* score;        // current (decayed) scores
  double* pick_score;   // emitted score of slot s
  int32_t* alive;
  int32_t* pick;        // slot s: partitioned index picked there, or -1. Group g's picks fill its own slots
                        // [group_begin[g], group_begin[g] + picked) in pick order (a group picks at most its size)
  int32_t* group_begin;  // groups + 1 entries
};

// Where candidate i goes in the partitioned order; label_of(j) is candidate j's label. O(n) per candidate.
template <class Label, class LabelOf>
__device__ __forceinline__ int partition_position(int i, int n, bool multiclass, LabelOf label_of) {
  if (!multiclass) return i;
  const Label li = label_of(i);
  int position = 0;
  for (int j = 0; j < n; ++j) {
    const Label lj = label_of(j);
    position += (lj < li || (lj == li && j < i)) ? 1 : 0;
  }
  return position;
}

// `true` when group-local candidate i (score si) is picked before candidate j (score sj): nms_better, with the
// common case (different scores) decided from registers.
template <class Label>
__device__ __forceinline__ bool pick_before(const double* start, const double* end, const Label* label, int i,
                                            double si, int j, double sj) {
  if (si != sj) return si > sj;
  return nms_better<Label>(si, start[i], end[i], label[i], i, sj, start[j], end[j], label[j], j);
}

// One greedy run by one warp over the `count` candidates of the group starting at `begin`; returns its pick count.
template <class Label>
__device__ int warp_greedy(const NmsArrays& a, const Label* label, int begin, int count, const Params& p) {
  const int lane = threadIdx.x & 31;
  const bool gaussian = p.nms_method == kGaussian;
  const double* start = a.start + begin;
  const double* end = a.end + begin;
  double* score = a.score + begin;
  int32_t* alive = a.alive + begin;
  const Label* group_label = label + begin;
  int picked = 0;
  while (picked < p.max_detections) {
    int best = -1;
    double best_score = 0.0;
    for (int i = lane; i < count; i += 32) {
      if (!alive[i]) continue;
      const double s = score[i];
      if (best < 0 || pick_before<Label>(start, end, group_label, i, s, best, best_score)) {
        best = i;
        best_score = s;
      }
    }
    // Warp-wide argmax with the same strict total order: every lane ends with the same winner.
    for (int off = 16; off > 0; off >>= 1) {
      const int other = __shfl_xor_sync(kFullMask, best, off);
      const double other_score = __shfl_xor_sync(kFullMask, best_score, off);
      if (other >= 0 && (best < 0 || pick_before<Label>(start, end, group_label, other, other_score, best,
                                                        best_score))) {
        best = other;
        best_score = other_score;
      }
    }
    if (best < 0) break;
    const double best_start = start[best], best_end = end[best];
    __syncwarp();
    if (lane == 0) {
      a.pick[begin + picked] = begin + best;
      a.pick_score[begin + picked] = best_score;
      alive[best] = 0;
    }
    ++picked;
    __syncwarp();
    for (int i = lane; i < count; i += 32) {
      if (!alive[i]) continue;
      const double iou = segment_iou(best_start, best_end, start[i], end[i]);
      if (!(gaussian && iou == 0.0)) score[i] = score[i] * decay_weight(iou, p.nms_method, p.sigma, p.iou_threshold);
      if (!(score[i] >= p.min_score)) alive[i] = 0;
    }
    __syncwarp();
  }
  return picked;
}

// SoftNMS of the n partitioned candidates (alive[s] = score[s] >= min_score). Every thread of the block calls it
// (it synchronises the block). Calls emit(rank, partitioned index, score) once for each output rank < the returned
// count, from any thread; returns the count to every thread.
template <class Label, class Emit>
__device__ int block_soft_nms(const NmsArrays& a, const Label* label, int n, const Params& p, Emit emit) {
  __shared__ int s_groups, s_total;
  if (n <= 0) return 0;  // block-uniform
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  // Groups: one per class (a new group where the label changes), or everything in one.
  if (tid == 0) s_total = 0;
  if (!p.multiclass) {
    if (tid == 0) {
      a.group_begin[0] = 0;
      a.group_begin[1] = n;
      s_groups = 1;
    }
  } else {
    for (int s = tid; s < n; s += kThreads) {
      if (s > 0 && label[s] == label[s - 1]) continue;
      int g = 0;
      for (int q = 1; q <= s; ++q) g += label[q] != label[q - 1] ? 1 : 0;
      a.group_begin[g] = s;
      if (label[s] == label[n - 1]) {  // the last group (labels ascend)
        a.group_begin[g + 1] = n;
        s_groups = g + 1;
      }
    }
  }
  for (int s = tid; s < n; s += kThreads) a.pick[s] = -1;
  __syncthreads();
  const int groups = s_groups;
  for (int g = warp; g < groups; g += kWarps) {
    const int begin = a.group_begin[g];
    const int picked = warp_greedy<Label>(a, label, begin, a.group_begin[g + 1] - begin, p);
    if (lane == 0) atomicAdd(&s_total, picked);
  }
  __syncthreads();
  const int total = s_total;
  const int kept = total < p.max_detections ? total : p.max_detections;
  if (!p.multiclass) {  // one group: the output is the pick order
    for (int q = tid; q < kept; q += kThreads) emit(q, a.pick[q], a.pick_score[q]);
    return kept;
  }
  // Merge: rank of each pick in (score desc, start, end, label, slot) order; slots order like the CPU path's
  // concatenated per-class positions (groups ascend by label, picks in pick order inside a group).
  for (int s = tid; s < n; s += kThreads) {
    const int i = a.pick[s];
    if (i < 0) continue;
    const double si = a.pick_score[s];
    int rank = 0;
    for (int r = 0; r < n && rank < p.max_detections; ++r) {
      const int j = a.pick[r];
      if (j < 0) continue;
      rank += merge_before<Label>(a.pick_score[r], a.start[j], a.end[j], label[j], r, si, a.start[i], a.end[i],
                                  label[i], s)
                  ? 1
                  : 0;
    }
    if (rank < p.max_detections) emit(rank, i, si);
  }
  return kept;
}

// ---- the batched kernel ----
template <class PT, class MT, bool kDetections>
__global__ void __launch_bounds__(kThreads)
    postprocess_kernel(const PT* __restrict__ probs, const MT* __restrict__ masks,
                       const int32_t* __restrict__ valid_len,
                       const double* __restrict__ scale, const double* __restrict__ offset, const Params p,
                       const CandidateOutputs cand_out, const DetectionOutputs det_out) {
  extern __shared__ __align__(16) unsigned char smem[];
  __shared__ int s_status;
  __shared__ int s_count;
  __shared__ int s_warp_total[kWarps];

  const int64_t b = blockIdx.x;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t T = p.T;
  const PT* P = probs + b * p.num_rows * T;
  const MT* M = masks + b * T * T;
  const Layout L = make_layout(p);
  float* s_fg = reinterpret_cast<float*>(smem + L.foreground);
  int32_t* s_label = reinterpret_cast<int32_t*>(smem + L.label);
  int32_t* s_selected = reinterpret_cast<int32_t*>(smem + L.selected);
  float* s_columns = reinterpret_cast<float*>(smem + L.columns);
  unsigned long long* s_keys = reinterpret_cast<unsigned long long*>(smem + L.keys);
  unsigned long long* s_scores = reinterpret_cast<unsigned long long*>(smem + L.scores);

  // 0. status, with the CPU path's precedence: time map, valid_len, probs (non-finite, range), masks.
  const int V = valid_len[b];
  int status = 0;
  if (kDetections && !(isfinite(scale[b]) && isfinite(offset[b]) && scale[b] > 0.0)) {
    status = kBadTimeMap;
  } else if (V < 1 || V > T) {
    status = kBadValidLen;
  } else if (p.validate) {
    bool range_bad = false, nonfinite = false;
    for (int64_t k = 0; k < p.num_rows; ++k) {
      for (int t = tid; t < V; t += kThreads) {
        if (!raw_in_unit(P, k * T + t)) {
          range_bad = true;
          nonfinite |= !raw_finite(P, k * T + t);
        }
      }
    }
    const bool probs_nonfinite = __syncthreads_or(nonfinite);
    const bool probs_range = __syncthreads_or(range_bad);
    range_bad = nonfinite = false;
    for (int i = warp; i < V; i += kWarps) {
      for (int j = lane; j < V; j += 32) {
        if (!raw_in_unit(M, static_cast<int64_t>(i) * T + j)) {
          range_bad = true;
          nonfinite |= !raw_finite(M, static_cast<int64_t>(i) * T + j);
        }
      }
    }
    const bool masks_nonfinite = __syncthreads_or(nonfinite);
    const bool masks_range = __syncthreads_or(range_bad);
    status = probs_nonfinite ? kProbsNonFinite
             : probs_range   ? kProbsOutOfRange
             : masks_nonfinite ? kMasksNonFinite
             : masks_range   ? kMasksOutOfRange
                             : 0;
  }
  if (status != 0) {  // block-uniform
    if (kDetections) {
      const int64_t D = p.max_detections;
      for (int64_t r = tid; r < D; r += kThreads) {
        det_out.segments[(b * D + r) * 2] = 0.0;
        det_out.segments[(b * D + r) * 2 + 1] = 0.0;
        det_out.score[b * D + r] = 0.0;
        det_out.label[b * D + r] = -1;
      }
      if (tid == 0) {
        det_out.count[b] = 0;
        det_out.status[b] = status;
      }
    } else {
      const int64_t M2 = p.pre_nms_topk;
      for (int64_t r = tid; r < M2; r += kThreads) {
        cand_out.start[b * M2 + r] = -1;
        cand_out.end[b * M2 + r] = -1;
        cand_out.label[b * M2 + r] = -1;
        cand_out.score[b * M2 + r] = 0.0;
      }
      if (tid == 0) {
        cand_out.count[b] = 0;
        cand_out.status[b] = status;
      }
    }
    return;
  }

  // 1. foreground and label (strict > keeps the lowest class on ties); empty hash table.
  const int64_t K = p.num_rows - 1;
  for (int t = tid; t < V; t += kThreads) {
    float best = load_value(P, t);
    int32_t label = 0;
    for (int64_t k = 1; k < K; ++k) {
      const float v = load_value(P, k * T + t);
      if (v > best) {
        best = v;
        label = static_cast<int32_t>(k);
      }
    }
    s_fg[t] = best == best ? best : -INFINITY;  // NaN only with validate=False; ranks need a total order
    s_label[t] = label;
  }
  for (int i = tid; i < kTableSize; i += kThreads) {
    s_keys[i] = kEmptyKey;
    s_scores[i] = 0ull;
  }
  if (tid == 0) s_status = 0;
  __syncthreads();

  // 2. top M1: rank = number of snippets before t in (fg desc, t asc); selected iff rank < M1.
  const int M1 = p.top_snippets < V ? p.top_snippets : V;
  for (int t = tid; t < V; t += kThreads) {
    const float f = s_fg[t];
    int rank = 0;
    for (int u = 0; u < V && rank < M1; ++u) {
      const float g = s_fg[u];
      rank += (g > f || (g == f && u < t)) ? 1 : 0;
    }
    if (rank < M1) s_selected[rank] = t;
  }
  __syncthreads();

  // 3-4. one warp per selected column.
  float* column = s_columns + static_cast<int64_t>(warp) * T;
  for (int j = warp; warp < L.column_warps && j < M1; j += L.column_warps) {
    const int t = s_selected[j];
    const int32_t label = s_label[t];
    const float prob = load_value(P, label * T + t);
    for (int i = lane; i < V; i += 32) column[i] = load_value(M, static_cast<int64_t>(i) * T + t);
    __syncwarp();
    if (p.long_mode) {
      warp_long_runs(column, V, p, label, prob, s_keys, s_scores, &s_status);
    } else {
      for (int c = 0; c < p.num_cutoffs; ++c) {
        warp_short_runs(column, V, p.cutoffs[c], label, prob, p.score_threshold, s_keys, s_scores, &s_status);
      }
    }
    __syncwarp();
  }
  __syncthreads();

  // 5. compaction of the table in block-sized chunks (a block-wide exclusive scan each), in place: a chunk is read
  //    into registers before any of its entries moves, and entries only move to lower slots. Then a bitonic sort.
  if (tid == 0) s_count = 0;
  __syncthreads();
  for (int chunk = 0; chunk < kTableSize; chunk += kThreads) {
    const unsigned long long key = s_keys[chunk + tid], score_bits = s_scores[chunk + tid];
    const bool occupied = key != kEmptyKey;
    const unsigned ballot = __ballot_sync(kFullMask, occupied);
    if (lane == 0) s_warp_total[warp] = __popc(ballot);
    const int base = s_count;
    __syncthreads();  // warp totals visible; every thread has read its slot and the running count
    int position = base + __popc(ballot & ((1u << lane) - 1u));
    for (int w = 0; w < warp; ++w) position += s_warp_total[w];
    if (occupied) {
      s_keys[position] = key;
      s_scores[position] = score_bits;
    }
    __syncthreads();  // all moves done and s_warp_total read before it is rewritten / s_count advanced
    if (tid == 0) {
      int total = 0;
      for (int w = 0; w < kWarps; ++w) total += s_warp_total[w];
      s_count = base + total;
    }
    __syncthreads();
  }
  const int distinct = s_count;
  int padded = 1;
  while (padded < distinct) padded <<= 1;
  for (int i = distinct + tid; i < padded; i += kThreads) {
    s_keys[i] = kEmptyKey;  // sorts after every real entry
    s_scores[i] = 0ull;
  }
  __syncthreads();
  for (int k = 2; k <= padded; k <<= 1) {
    for (int j = k >> 1; j > 0; j >>= 1) {
      for (int i = tid; i < padded; i += kThreads) {
        const int partner = i ^ j;
        if (partner > i) {
          const unsigned long long ka = s_keys[i], sa = s_scores[i], kb = s_keys[partner], sb = s_scores[partner];
          const bool ascending = (i & k) == 0;
          if (ascending ? packed_before(sb, kb, sa, ka) : packed_before(sa, ka, sb, kb)) {
            s_keys[i] = kb;
            s_scores[i] = sb;
            s_keys[partner] = ka;
            s_scores[partner] = sa;
          }
        }
      }
      __syncthreads();
    }
  }
  const int n = distinct < p.pre_nms_topk ? distinct : p.pre_nms_topk;
  const int final_status = s_status;

  if (!kDetections) {
    const int64_t M2 = p.pre_nms_topk;
    for (int64_t r = tid; r < M2; r += kThreads) {
      const bool real = r < n;
      const unsigned long long key = real ? s_keys[r] : 0ull;
      cand_out.start[b * M2 + r] = real ? key_start(key) : -1;
      cand_out.end[b * M2 + r] = real ? key_end(key) : -1;
      cand_out.label[b * M2 + r] = real ? key_label(key) : -1;
      cand_out.score[b * M2 + r] = real ? __longlong_as_double(static_cast<long long>(s_scores[r])) : 0.0;
    }
    if (tid == 0) {
      cand_out.count[b] = n;
      cand_out.status[b] = final_status;
    }
    return;
  }

  // 6. SoftNMS in seconds, in partitioned order. The NMS arrays overlay the phase-1 region (dead now); the table is
  //    read by the loop below, then its key array holds the class groups' starts.
  NmsArrays a;
  double* start = reinterpret_cast<double*>(smem + L.nms_start);
  double* end = reinterpret_cast<double*>(smem + L.nms_end);
  int32_t* nms_label = reinterpret_cast<int32_t*>(smem + L.nms_label);
  a.start = start;
  a.end = end;
  a.score = reinterpret_cast<double*>(smem + L.nms_score);
  a.pick_score = reinterpret_cast<double*>(smem + L.nms_pick_score);
  a.alive = reinterpret_cast<int32_t*>(smem + L.nms_alive);
  a.pick = reinterpret_cast<int32_t*>(smem + L.nms_pick);
  a.group_begin = reinterpret_cast<int32_t*>(s_keys);  // the table is dead once the loop below has read it
  const double window_scale = scale[b], window_offset = offset[b];
  for (int i = tid; i < n; i += kThreads) {
    const unsigned long long key = s_keys[i];
    const int s = partition_position<int32_t>(i, n, p.multiclass, [&](int j) { return key_label(s_keys[j]); });
    start[s] = to_seconds(window_offset, window_scale, static_cast<double>(key_start(key)));
    end[s] = to_seconds(window_offset, window_scale, static_cast<double>(key_end(key) + 1));
    nms_label[s] = key_label(key);
    a.score[s] = __longlong_as_double(static_cast<long long>(s_scores[i]));
    a.alive[s] = a.score[s] >= p.min_score ? 1 : 0;
  }
  __syncthreads();
  const int64_t D = p.max_detections;
  const int kept = block_soft_nms<int32_t>(a, nms_label, n, p, [&](int rank, int i, double score) {
    det_out.segments[(b * D + rank) * 2] = start[i];
    det_out.segments[(b * D + rank) * 2 + 1] = end[i];
    det_out.score[b * D + rank] = score;
    det_out.label[b * D + rank] = nms_label[i];
  });
  for (int64_t r = kept + tid; r < D; r += kThreads) {
    det_out.segments[(b * D + r) * 2] = 0.0;
    det_out.segments[(b * D + r) * 2 + 1] = 0.0;
    det_out.score[b * D + r] = 0.0;
    det_out.label[b * D + r] = -1;
  }
  if (tid == 0) {
    det_out.count[b] = kept;
    det_out.status[b] = final_status;
  }
}

// ---- standalone SoftNMS (host arrays): one block, the same block_soft_nms. The host has partitioned the inputs
// (stable by label for multiclass NMS, as soft_nms_core does); origin maps a partitioned position to its input. ----
template <class Label>
__global__ void __launch_bounds__(kThreads)
    soft_nms_kernel(const double* segments, const double* scores, const Label* labels, const int32_t* origin, int n,
                    const Params p, NmsArrays a, int32_t* out_index, double* out_score, int32_t* out_count) {
  const int tid = threadIdx.x;
  for (int i = tid; i < n; i += kThreads) {
    a.start[i] = segments[2 * i];
    a.end[i] = segments[2 * i + 1];
    a.score[i] = scores[i];
    a.alive[i] = scores[i] >= p.min_score ? 1 : 0;
  }
  __syncthreads();
  const int kept = block_soft_nms<Label>(a, labels, n, p, [&](int rank, int i, double score) {
    out_index[rank] = origin[i];
    out_score[rank] = score;
  });
  if (tid == 0) *out_count = kept;
}

// Opt a kernel in to `bytes` of dynamic shared memory on `device`, once per (kernel, device, larger size): after
// the first (warm-up) call no CUDA API call but the launch remains, which keeps the op capturable in a CUDA graph.
// Throws a clear error when the dynamic size plus the kernel's static shared memory exceeds the device's limit.
void allow_shared_memory(const void* kernel, int device, size_t bytes, int64_t T) {
  struct Allowed {
    size_t dynamic = 0, static_bytes = 0, optin = 0;
    bool known = false;
  };
  static std::mutex mutex;
  static std::map<std::pair<const void*, int>, Allowed> allowed;
  std::lock_guard<std::mutex> lock(mutex);
  Allowed& entry = allowed[{kernel, device}];
  if (!entry.known) {
    cudaFuncAttributes attributes{};
    int optin = 0;
    check_cuda(cudaFuncGetAttributes(&attributes, kernel), "cudaFuncGetAttributes");
    check_cuda(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, device),
               "cudaDeviceGetAttribute");
    entry.static_bytes = attributes.sharedSizeBytes;
    entry.optin = static_cast<size_t>(optin);
    entry.known = true;
  }
  if (bytes <= entry.dynamic) return;
  if (bytes + entry.static_bytes > entry.optin) {
    throw std::invalid_argument("window too large for the CUDA post-processing: needs " +
                                std::to_string(bytes + entry.static_bytes) + " bytes of shared memory per block (T=" +
                                std::to_string(T) + "), the device has " + std::to_string(entry.optin));
  }
  check_cuda(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)),
             "cudaFuncSetAttribute");
  entry.dynamic = bytes;
}

template <bool kDetections>
void launch(const void* probs, DType probs_dtype, const void* masks, DType masks_dtype, const int32_t* valid_len,
            const double* scale, const double* offset, int64_t batch, const Params& params,
            const CandidateOutputs& cand_out, const DetectionOutputs& det_out, void* stream) {
  if (batch <= 0) return;
  if (batch > INT32_MAX) throw std::invalid_argument("batch too large for one CUDA launch");
  const size_t shared = make_layout(params).total;
  int device = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  auto run = [&](auto kernel, auto typed_probs, auto typed_masks) {
    allow_shared_memory(reinterpret_cast<const void*>(kernel), device, shared, params.T);
    kernel<<<static_cast<unsigned>(batch), kThreads, shared, static_cast<cudaStream_t>(stream)>>>(
        typed_probs, typed_masks, valid_len, scale, offset, params, cand_out, det_out);
    check_cuda(cudaGetLastError(), "postprocess kernel launch");
  };
  const bool p16 = probs_dtype == DType::kFloat16, m16 = masks_dtype == DType::kFloat16;
  const float* pf = static_cast<const float*>(probs);
  const uint16_t* ph = static_cast<const uint16_t*>(probs);
  const float* mf = static_cast<const float*>(masks);
  const uint16_t* mh = static_cast<const uint16_t*>(masks);
  if (!p16 && !m16) run(postprocess_kernel<float, float, kDetections>, pf, mf);
  if (!p16 && m16) run(postprocess_kernel<float, uint16_t, kDetections>, pf, mh);
  if (p16 && !m16) run(postprocess_kernel<uint16_t, float, kDetections>, ph, mf);
  if (p16 && m16) run(postprocess_kernel<uint16_t, uint16_t, kDetections>, ph, mh);
}

}  // namespace

int64_t cuda_shared_bytes(const Params& params) { return static_cast<int64_t>(make_layout(params).total); }

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver / no device" error
    return 0;
  }
  return count;
}

void window_candidates_batch_cuda(const void* probs, DType probs_dtype, const void* masks, DType masks_dtype,
                                  const int32_t* valid_len, int64_t batch, const Params& params,
                                  const CandidateOutputs& out, void* stream) {
  launch<false>(probs, probs_dtype, masks, masks_dtype, valid_len, nullptr, nullptr, batch, params, out,
                DetectionOutputs{}, stream);
}

void window_detections_batch_cuda(const void* probs, DType probs_dtype, const void* masks, DType masks_dtype,
                                  const int32_t* valid_len, const double* scale, const double* offset,
                                  int64_t batch, const Params& params, const DetectionOutputs& out, void* stream) {
  launch<true>(probs, probs_dtype, masks, masks_dtype, valid_len, scale, offset, batch, params, CandidateOutputs{},
               out, stream);
}

int64_t soft_nms_cuda(const double* segments, const double* scores, const int64_t* labels, int64_t n,
                      const Params& params, int64_t* out_index, double* out_score) {
  if (n <= 0) return 0;
  if (n > INT32_MAX / 8) throw std::invalid_argument("too many segments for soft_nms_cuda");
  const size_t N = static_cast<size_t>(n);
  // Partition on the host: stable by label for multiclass NMS (one contiguous group per class), else input order.
  std::vector<int32_t> origin(N);
  for (size_t i = 0; i < N; ++i) origin[i] = static_cast<int32_t>(i);
  if (params.multiclass) {
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
  soft_nms_kernel<int64_t><<<1, kThreads>>>(d_segments, d_scores, d_labels, d_origin, static_cast<int>(n), params, a,
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
