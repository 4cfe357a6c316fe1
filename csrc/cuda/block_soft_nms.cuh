// SoftNMS by one thread block, shared by the batched detection kernel and the standalone soft_nms_cuda.
//
// The caller writes the candidates in partitioned order (partition_position) and synchronises the block. With
// multiclass NMS that order is stable-sorted by label: one contiguous group per class, classes ascending, members in
// input order; without it, input order (one group). Positions inside a group order like the input indices, so the
// index tie-break of nms_better and the merge's position tie-break give the CPU path's pick and output order.
//
// Warp w runs the greedy picks of groups w, w + kWarps, ... (a window's classes in parallel, each pick scanning only
// its own class, a warp-wide argmax per pick with no block barriers); then all threads merge the per-class picks by
// rank counting.
#pragma once

#include "cuda/device_common.cuh"
#include "gsmt_core.h"

namespace gsmt {
namespace cuda {

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
__device__ int warp_greedy(const NmsArrays& a, const Label* label, int begin, int count, const NmsParams& p) {
  const int lane = threadIdx.x & 31;
  const bool gaussian = p.method == kGaussian;
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
      if (!(gaussian && iou == 0.0)) score[i] = score[i] * decay_weight(iou, p.method, p.sigma, p.iou_threshold);
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
__device__ int block_soft_nms(const NmsArrays& a, const Label* label, int n, const NmsParams& p, Emit emit) {
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

}  // namespace cuda
}  // namespace gsmt
