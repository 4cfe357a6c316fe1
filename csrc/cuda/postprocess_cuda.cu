// CUDA batched post-processing: one thread block per window, everything on chip, fixed-size outputs, no host
// synchronisation (capturable in a CUDA graph). The rules (comparisons, ties, IoU, decay, exp) come from
// gsmt_core.h, shared with the CPU path, so CUDA and CPU agree bit for bit.
//
// The kernel runs these phases, one __device__ function each, on window b (kThreads threads):
//   check_window       status: time map, valid_len, optional finiteness / [0, 1] scan of the valid part;
//   foreground_phase   foreground + label per snippet (threads over t); the hash table emptied;
//   select_phase       top-M1 snippets by rank counting (exact tie order, no sort);
//   boundary_phase     boundary candidates instead of runs_phase (a model with the boundary head): one candidate
//                      per selected snippet t keyed (t, t, label) into the same table, so the sort below gives the
//                      oracle's (score desc, source snippet) order;
//   runs_phase         one warp per selected column: the column goes to shared memory, then per threshold 32 rows
//                      at a time: __ballot_sync packs the active rows, run starts are A & ~(A << 1 | carry) and ends
//                      A & ~(A >> 1 | next), a segmented max-scan (__shfl_up_sync) gives each run's max; every
//                      candidate goes into an on-chip hash table keyed by (start, end, label) with atomicMax on the
//                      score bits (scores are >= 0, so their IEEE bits order like the values): the oracle's merge;
//   sort_phase         compaction + bitonic sort by (score desc, key asc) = (score desc, start, end, label);
//   soft_nms_phase     detections only: the top M2 in seconds, SoftNMS by the whole block (block_soft_nms.cuh);
//   write_*            the padded outputs, one writer per output kind.
#include <cuda_runtime.h>

#include <cstdint>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>

#include "cuda/block_soft_nms.cuh"
#include "cuda/device_common.cuh"
#include "gsmt_core.h"
#include "postprocess.h"

namespace gsmt {
namespace {

using namespace cuda;  // NOLINT: this file is the CUDA implementation

constexpr int kTableBits = kCudaCandidateBits;
constexpr int kTableSize = kCudaCandidateCapacity;  // distinct candidates per window kept on chip; more -> overflow
constexpr uint64_t kEmptyKey = ~uint64_t{0};  // never a real key: start < 2^20 - 1 keeps the top bits clear

static_assert(kTableSize == (1 << kTableBits), "table size must be a power of two");
static_assert(kTableSize % kThreads == 0, "compaction walks the table in block-sized chunks");
static_assert(kWarps >= 8, "Layout uses 8 column buffers for long windows");
static_assert(kTableSize * sizeof(uint64_t) >= (kTableSize + 1) * sizeof(int32_t),
              "SoftNMS group starts reuse the table's key array");

// ---- shared memory layout (bytes), identical on host (launch size) and device ----
struct Layout {
  int column_warps;                                                   // warps that hold a column each (runs_phase)
  size_t foreground, label, selected, columns;                        // candidate generation
  size_t nms_start, nms_end, nms_score, nms_pick_score, nms_label, nms_alive, nms_pick;  // SoftNMS, overlays the above
  size_t keys, scores, total;                                         // hash table, then the sorted candidates
};

__host__ __device__ inline size_t align16(size_t bytes) { return (bytes + 15) & ~size_t{15}; }

__host__ __device__ inline Layout make_layout(const CandidateParams& p) {
  Layout L{};
  const size_t T = static_cast<size_t>(p.T);
  const size_t m1 = static_cast<size_t>(p.top_snippets) < T ? static_cast<size_t>(p.top_snippets) : T;
  size_t off = 0;
  auto place = [&off](size_t bytes) {  // the next 16-byte aligned array of `bytes` bytes: its offset
    const size_t at = off;
    off += align16(bytes);
    return at;
  };
  // Every warp holds a column for windows up to 1024 snippets; longer windows use 8 column buffers, so that the
  // longest window that fits in shared memory stays ~4,100 snippets, not ~2,300.
  L.column_warps = T <= 1024 ? kWarps : 8;
  L.foreground = place(T * sizeof(float));
  L.label = place(T * sizeof(int32_t));
  L.selected = place((m1 > 0 ? m1 : 1) * sizeof(int32_t));
  L.columns = place(static_cast<size_t>(L.column_warps) * T * sizeof(float));
  const size_t candidate_bytes = off;
  const size_t n = static_cast<size_t>(p.pre_nms_topk < kTableSize ? p.pre_nms_topk : kTableSize);
  off = 0;
  L.nms_start = place(n * sizeof(double));
  L.nms_end = place(n * sizeof(double));
  L.nms_score = place(n * sizeof(double));
  L.nms_pick_score = place(n * sizeof(double));
  L.nms_label = place(n * sizeof(int32_t));
  L.nms_alive = place(n * sizeof(int32_t));
  L.nms_pick = place(n * sizeof(int32_t));
  const size_t region = candidate_bytes > off ? candidate_bytes : off;
  L.keys = region;
  L.scores = region + kTableSize * sizeof(uint64_t);
  L.total = L.scores + kTableSize * sizeof(uint64_t);
  return L;
}

// The shared-memory arrays of one window (the Layout's offsets applied).
struct WindowShared {
  float* fg;
  int32_t* label;
  int32_t* selected;
  float* columns;
  unsigned long long* keys;
  unsigned long long* scores;
  int column_warps;
};

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

__device__ __forceinline__ void emit_candidate(const WindowShared& w, int* status, int32_t start, int32_t end,
                                               int32_t label, float prob, float mask_max, double score_threshold) {
  const double score = candidate_score(prob, mask_max);
  if (!(score > score_threshold)) return;
  if (!table_insert(w.keys, w.scores, pack_key(start, end, label), score)) atomicOr(status, kCandidateOverflow);
}

// (score desc, key asc) on the packed representation == candidate_before on the unpacked one.
__device__ __forceinline__ bool packed_before(unsigned long long score_a, unsigned long long key_a,
                                              unsigned long long score_b, unsigned long long key_b) {
  return score_a > score_b || (score_a == score_b && key_a < key_b);
}

// Short mode, one column held in shared memory by one warp: every maximal run of `column >= cutoff`.
__device__ void warp_short_runs(const WindowShared& w, const float* column, int V, float cutoff, int32_t label,
                                float prob, double score_threshold, int* status) {
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
    if (is_end) emit_candidate(w, status, start, row, label, prob, x, score_threshold);
    carry_active = (bits >> 31) & 1u;
    carry_max = __shfl_sync(kFullMask, x, 31);
    carry_start = __shfl_sync(kFullMask, start, 31);
  }
}

// Long mode: per threshold, first..last active row; its max is the column max (the argmax is always inside).
__device__ void warp_long_runs(const WindowShared& w, const float* column, int V, const CandidateParams& p,
                               int32_t label, float prob, int* status) {
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
    if (lane == 0) emit_candidate(w, status, first, last, label, prob, column_max, p.score_threshold);
  }
}

// ---- the phases ----

// The window's status, with the CPU path's precedence: time map, valid_len, probs (non-finite, range), masks, then
// the boundary distances when given (B(2, T) of this window, or nullptr). Block-uniform result (every thread returns
// the same value).
template <class PT, class MT>
__device__ int check_window(const PT* P, const MT* M, const float* B, int V, bool time_map_ok,
                            const CandidateParams& p) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t T = p.T;
  if (!time_map_ok) return kBadTimeMap;
  if (V < 1 || V > T) return kBadValidLen;
  if (!p.validate) return 0;
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
  bool distances_bad = false;
  if (B != nullptr) {
    for (int i = tid; i < 2 * V; i += kThreads) distances_bad |= !distance_ok(B[(i / V) * T + i % V]);
  }
  const bool boundaries_bad = __syncthreads_or(distances_bad);
  return probs_nonfinite   ? kProbsNonFinite
         : probs_range     ? kProbsOutOfRange
         : masks_nonfinite ? kMasksNonFinite
         : masks_range     ? kMasksOutOfRange
         : boundaries_bad  ? kBoundariesInvalid
                           : 0;
}

// Foreground and label of every valid snippet (strict > keeps the lowest class on ties); the hash table emptied.
template <class PT>
__device__ void foreground_phase(const WindowShared& w, const PT* P, int V, const CandidateParams& p) {
  const int tid = threadIdx.x;
  const int64_t T = p.T, K = p.num_rows - 1;
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
    w.fg[t] = best == best ? best : -INFINITY;  // NaN only with validate=False; ranks need a total order
    w.label[t] = label;
  }
  for (int i = tid; i < kTableSize; i += kThreads) {
    w.keys[i] = kEmptyKey;
    w.scores[i] = 0ull;
  }
  __syncthreads();
}

// Top M1 snippets: rank = number of snippets before t in (fg desc, t asc); selected[rank] = t iff rank < M1.
// Returns M1.
__device__ int select_phase(const WindowShared& w, int V, const CandidateParams& p) {
  const int M1 = p.top_snippets < V ? p.top_snippets : V;
  for (int t = threadIdx.x; t < V; t += kThreads) {
    const float f = w.fg[t];
    int rank = 0;
    for (int u = 0; u < V && rank < M1; ++u) {
      const float g = w.fg[u];
      rank += (g > f || (g == f && u < t)) ? 1 : 0;
    }
    if (rank < M1) w.selected[rank] = t;
  }
  __syncthreads();
  return M1;
}

// One warp per selected column: its runs at every threshold go into the hash table. Returns the table's status
// (0 or kCandidateOverflow), block-uniform.
template <class PT, class MT>
__device__ int runs_phase(const WindowShared& w, const PT* P, const MT* M, int V, int M1, const CandidateParams& p) {
  __shared__ int s_status;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int64_t T = p.T;
  if (tid == 0) s_status = 0;
  __syncthreads();
  float* column = w.columns + static_cast<int64_t>(warp) * T;
  for (int j = warp; warp < w.column_warps && j < M1; j += w.column_warps) {
    const int t = w.selected[j];
    const int32_t label = w.label[t];
    const float prob = load_value(P, label * T + t);
    for (int i = lane; i < V; i += 32) column[i] = load_value(M, static_cast<int64_t>(i) * T + t);
    __syncwarp();
    if (p.long_mode) {
      warp_long_runs(w, column, V, p, label, prob, &s_status);
    } else {
      for (int c = 0; c < p.num_cutoffs; ++c) {
        warp_short_runs(w, column, V, p.cutoffs[c], label, prob, p.score_threshold, &s_status);
      }
    }
    __syncwarp();
  }
  __syncthreads();
  return s_status;
}

// Boundary candidates (steps 3'-5' of the oracle): one per selected snippet t, keyed (t, t, label) with score
// P[label, t]; t is unique, so nothing merges, and the table's (score desc, key asc) sort is the oracle's order.
template <class PT>
__device__ int boundary_phase(const WindowShared& w, const PT* P, int M1, const CandidateParams& p) {
  __shared__ int s_status;
  if (threadIdx.x == 0) s_status = 0;
  __syncthreads();
  for (int j = threadIdx.x; j < M1; j += kThreads) {
    const int t = w.selected[j];
    const int32_t label = w.label[t];
    emit_candidate(w, &s_status, t, t, label, load_value(P, label * p.T + t), 1.0f, p.score_threshold);
  }
  __syncthreads();
  return s_status;
}

// Compacts the table's occupied slots to its front, in block-sized chunks (a block-wide exclusive scan each, in
// place: a chunk is read into registers before any of its entries moves, and entries only move to lower slots),
// then sorts them by (score desc, key asc) with a bitonic sort. Returns the number of distinct candidates.
__device__ int sort_phase(const WindowShared& w) {
  __shared__ int s_count;
  __shared__ int s_warp_total[kWarps];
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  if (tid == 0) s_count = 0;
  __syncthreads();
  for (int chunk = 0; chunk < kTableSize; chunk += kThreads) {
    const unsigned long long key = w.keys[chunk + tid], score_bits = w.scores[chunk + tid];
    const bool occupied = key != kEmptyKey;
    const unsigned ballot = __ballot_sync(kFullMask, occupied);
    if (lane == 0) s_warp_total[warp] = __popc(ballot);
    const int base = s_count;
    __syncthreads();  // warp totals visible; every thread has read its slot and the running count
    int position = base + __popc(ballot & ((1u << lane) - 1u));
    for (int v = 0; v < warp; ++v) position += s_warp_total[v];
    if (occupied) {
      w.keys[position] = key;
      w.scores[position] = score_bits;
    }
    __syncthreads();  // all moves done and s_warp_total read before it is rewritten / s_count advanced
    if (tid == 0) {
      int total = 0;
      for (int v = 0; v < kWarps; ++v) total += s_warp_total[v];
      s_count = base + total;
    }
    __syncthreads();
  }
  const int distinct = s_count;
  int padded = 1;
  while (padded < distinct) padded <<= 1;
  for (int i = distinct + tid; i < padded; i += kThreads) {
    w.keys[i] = kEmptyKey;  // sorts after every real entry
    w.scores[i] = 0ull;
  }
  __syncthreads();
  for (int k = 2; k <= padded; k <<= 1) {
    for (int j = k >> 1; j > 0; j >>= 1) {
      for (int i = tid; i < padded; i += kThreads) {
        const int partner = i ^ j;
        if (partner > i) {
          const unsigned long long ka = w.keys[i], sa = w.scores[i], kb = w.keys[partner], sb = w.scores[partner];
          const bool ascending = (i & k) == 0;
          if (ascending ? packed_before(sb, kb, sa, ka) : packed_before(sa, ka, sb, kb)) {
            w.keys[i] = kb;
            w.scores[i] = sb;
            w.keys[partner] = ka;
            w.scores[partner] = sa;
          }
        }
      }
      __syncthreads();
    }
  }
  return distinct;
}

// Window b's candidate rows: the first n sorted table entries, then padding up to M2; count and status.
// n = 0 writes an all-padding row (a window with a bad status).
__device__ void write_candidates(const CandidateOutputs& out, int64_t b, int64_t M2, int n, const WindowShared& w,
                                 const float* B, int64_t T, int V, int status) {
  for (int64_t r = threadIdx.x; r < M2; r += kThreads) {
    const bool real = r < n;
    const unsigned long long key = real ? w.keys[r] : 0ull;
    double unit_start = 0.0, unit_end = 0.0;
    if (real) candidate_units(key_start(key), key_end(key), B, T, V, &unit_start, &unit_end);
    out.start[b * M2 + r] = real ? key_start(key) : -1;
    out.end[b * M2 + r] = real ? key_end(key) : -1;
    out.label[b * M2 + r] = real ? key_label(key) : -1;
    out.score[b * M2 + r] = real ? __longlong_as_double(static_cast<long long>(w.scores[r])) : 0.0;
    out.units[(b * M2 + r) * 2] = unit_start;
    out.units[(b * M2 + r) * 2 + 1] = unit_end;
  }
  if (threadIdx.x == 0) {
    out.count[b] = n;
    out.status[b] = status;
  }
}

// Window b's detection rows [kept, D) as padding; count and status. The rows below `kept` are written by
// soft_nms_phase.
__device__ void write_detection_padding(const DetectionOutputs& out, int64_t b, int64_t D, int kept, int status) {
  for (int64_t r = kept + threadIdx.x; r < D; r += kThreads) {
    out.segments[(b * D + r) * 2] = 0.0;
    out.segments[(b * D + r) * 2 + 1] = 0.0;
    out.score[b * D + r] = 0.0;
    out.label[b * D + r] = -1;
  }
  if (threadIdx.x == 0) {
    out.count[b] = kept;
    out.status[b] = status;
  }
}

// SoftNMS of the top n sorted candidates in seconds, written to window b's detection rows in output order; returns
// how many were kept. The NMS arrays overlay the candidate-generation region (dead now); the table is read by the
// first loop, then its key array holds the class groups' starts.
__device__ int soft_nms_phase(const WindowShared& w, unsigned char* smem, const Layout& L, int n, double scale,
                              double offset, const float* B, int64_t T, int V, const NmsParams& nms,
                              const DetectionOutputs& out, int64_t b) {
  NmsArrays a;
  double* start = reinterpret_cast<double*>(smem + L.nms_start);
  double* end = reinterpret_cast<double*>(smem + L.nms_end);
  int32_t* label = reinterpret_cast<int32_t*>(smem + L.nms_label);
  a.start = start;
  a.end = end;
  a.score = reinterpret_cast<double*>(smem + L.nms_score);
  a.pick_score = reinterpret_cast<double*>(smem + L.nms_pick_score);
  a.alive = reinterpret_cast<int32_t*>(smem + L.nms_alive);
  a.pick = reinterpret_cast<int32_t*>(smem + L.nms_pick);
  a.group_begin = reinterpret_cast<int32_t*>(w.keys);  // the table is dead once the loop below has read it
  const unsigned long long* keys = w.keys;
  for (int i = threadIdx.x; i < n; i += kThreads) {
    const unsigned long long key = keys[i];
    const int s = partition_position<int32_t>(i, n, nms.multiclass, [&](int j) { return key_label(keys[j]); });
    double unit_start, unit_end;
    candidate_units(key_start(key), key_end(key), B, T, V, &unit_start, &unit_end);
    start[s] = to_seconds(offset, scale, unit_start);
    end[s] = to_seconds(offset, scale, unit_end);
    label[s] = key_label(key);
    a.score[s] = __longlong_as_double(static_cast<long long>(w.scores[i]));
    a.alive[s] = a.score[s] >= nms.min_score ? 1 : 0;
  }
  __syncthreads();
  const int64_t D = nms.max_detections;
  return block_soft_nms<int32_t>(a, label, n, nms, [&](int rank, int i, double score) {
    out.segments[(b * D + rank) * 2] = start[i];
    out.segments[(b * D + rank) * 2 + 1] = end[i];
    out.score[b * D + rank] = score;
    out.label[b * D + rank] = label[i];
  });
}

// ---- the batched kernel: one block per window ----
template <class PT, class MT, bool kDetections>
__global__ void __launch_bounds__(kThreads)
    postprocess_kernel(const PT* __restrict__ probs, const MT* __restrict__ masks,
                       const float* __restrict__ boundaries, const int32_t* __restrict__ valid_len,
                       const TimeMaps time, const CandidateParams p, const NmsParams nms,
                       const CandidateOutputs cand_out, const DetectionOutputs det_out) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int64_t b = blockIdx.x;
  const PT* P = probs + b * p.num_rows * p.T;
  const MT* M = masks + b * p.T * p.T;
  const float* B = boundaries == nullptr ? nullptr : boundaries + b * 2 * p.T;
  const Layout L = make_layout(p);
  const WindowShared w{reinterpret_cast<float*>(smem + L.foreground),
                       reinterpret_cast<int32_t*>(smem + L.label),
                       reinterpret_cast<int32_t*>(smem + L.selected),
                       reinterpret_cast<float*>(smem + L.columns),
                       reinterpret_cast<unsigned long long*>(smem + L.keys),
                       reinterpret_cast<unsigned long long*>(smem + L.scores),
                       L.column_warps};
  const int V = valid_len[b];
  const bool usable_time_map = !kDetections || time_map_ok(time.scale[b], time.offset[b], p.T);
  const int bad = check_window(P, M, B, V, usable_time_map, p);
  if (bad != 0) {  // block-uniform
    if (kDetections) {
      write_detection_padding(det_out, b, nms.max_detections, 0, bad);
    } else {
      write_candidates(cand_out, b, p.pre_nms_topk, 0, w, B, p.T, V, bad);
    }
    return;
  }
  foreground_phase(w, P, V, p);
  const int M1 = select_phase(w, V, p);
  const int status = B == nullptr ? runs_phase(w, P, M, V, M1, p) : boundary_phase(w, P, M1, p);
  const int distinct = sort_phase(w);
  const int n = distinct < p.pre_nms_topk ? distinct : p.pre_nms_topk;
  if (!kDetections) {
    write_candidates(cand_out, b, p.pre_nms_topk, n, w, B, p.T, V, status);
    return;
  }
  const int kept = soft_nms_phase(w, smem, L, n, time.scale[b], time.offset[b], B, p.T, V, nms, det_out, b);
  write_detection_padding(det_out, b, nms.max_detections, kept, status);
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
void launch(const WindowBatch& in, const TimeMaps& time, const CandidateParams& params, const NmsParams& nms,
            const CandidateOutputs& cand_out, const DetectionOutputs& det_out, void* stream) {
  if (in.batch <= 0) return;
  if (in.batch > INT32_MAX) throw std::invalid_argument("batch too large for one CUDA launch");
  const size_t shared = make_layout(params).total;
  int device = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  auto run = [&](auto kernel, auto typed_probs, auto typed_masks) {
    allow_shared_memory(reinterpret_cast<const void*>(kernel), device, shared, params.T);
    kernel<<<static_cast<unsigned>(in.batch), kThreads, shared, static_cast<cudaStream_t>(stream)>>>(
        typed_probs, typed_masks, in.boundaries, in.valid_len, time, params, nms, cand_out, det_out);
    check_cuda(cudaGetLastError(), "postprocess kernel launch");
  };
  const bool p16 = in.probs_dtype == DType::kFloat16, m16 = in.masks_dtype == DType::kFloat16;
  const float* pf = static_cast<const float*>(in.probs);
  const uint16_t* ph = static_cast<const uint16_t*>(in.probs);
  const float* mf = static_cast<const float*>(in.masks);
  const uint16_t* mh = static_cast<const uint16_t*>(in.masks);
  if (!p16 && !m16) run(postprocess_kernel<float, float, kDetections>, pf, mf);
  if (!p16 && m16) run(postprocess_kernel<float, uint16_t, kDetections>, pf, mh);
  if (p16 && !m16) run(postprocess_kernel<uint16_t, float, kDetections>, ph, mf);
  if (p16 && m16) run(postprocess_kernel<uint16_t, uint16_t, kDetections>, ph, mh);
}

}  // namespace

int64_t cuda_shared_bytes(const CandidateParams& params) { return static_cast<int64_t>(make_layout(params).total); }

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver / no device" error
    return 0;
  }
  return count;
}

void window_candidates_cuda(const WindowBatch& in, const CandidateParams& params, const CandidateOutputs& out,
                            void* stream) {
  // The NMS settings are unused by the candidate kernel; a valid value keeps its argument well-defined.
  const NmsParams unused{kGaussian, 1.0, 0.0, 0.0, 1, 0};
  launch<false>(in, TimeMaps{nullptr, nullptr}, params, unused, out, DetectionOutputs{}, stream);
}

void window_detections_cuda(const WindowBatch& in, const TimeMaps& time, const CandidateParams& params,
                            const NmsParams& nms, const DetectionOutputs& out, void* stream) {
  launch<true>(in, time, params, nms, CandidateOutputs{}, out, stream);
}

}  // namespace gsmt
