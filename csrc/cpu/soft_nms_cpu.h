// Sequential SoftNMS core used by the CPU ops (standalone soft_nms_cpu and the batched detections).
// The rules (pick order, IoU, decay, merge order) come from gsmt_core.h; this file only adds the loops.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "gsmt_core.h"

// The few arithmetic-heavy loops are compiled for AVX-512 / AVX2 / baseline x86-64 and dispatched at load time
// (GCC ifunc). Every version performs the same IEEE operations (-ffp-contract=off keeps FMA out), so the results do
// not depend on the CPU.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(GSMT_NO_CLONES)
#define GSMT_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define GSMT_CLONES
#endif

namespace gsmt {

// Buffers reused across windows so that the per-window work does not allocate once warm.
struct NmsScratch {
  std::vector<double> current;       // current (decayed) score per input
  std::vector<int64_t> members;      // inputs sorted by (label, index): one contiguous group per class
  std::vector<int64_t> pick_index;   // concatenated per-class picks
  std::vector<double> pick_score;
  std::vector<int64_t> merge_order;  // positions into pick_* after the per-class merge sort
  // The candidates still in the running, structure-of-arrays and in no particular order (the input index is the
  // last tie-break key), so that the decay loop is a plain loop over arrays that the compiler vectorises.
  std::vector<double> alive_start, alive_end, alive_score;
  std::vector<int64_t> alive_index;
};

namespace detail {

// score[k] *= w(IoU([s, e], candidate k)) for the n alive candidates, then returns the highest score and sets
// `dropped` when a score fell below min_score. Defined in soft_nms_cpu.cpp, compiled for several instruction sets
// (picked at load time): the same IEEE operations in every version, so the same bits.
double decay_scores(size_t n, const double* start, const double* end, double* score, double s, double e,
                    const NmsParams& p, bool* dropped);

// One greedy run over `members[0, count)`; appends (index, emitted score) to the scratch pick lists.
template <class Label>
void greedy_soft_nms(const int64_t* members, int64_t count, const double* segments, const Label* labels,
                     const NmsParams& p, NmsScratch& s) {
  s.alive_start.clear();
  s.alive_end.clear();
  s.alive_score.clear();
  s.alive_index.clear();
  double top = -HUGE_VAL;
  for (int64_t k = 0; k < count; ++k) {
    const int64_t i = members[k];
    if (s.current[i] >= p.min_score) {
      s.alive_start.push_back(segments[2 * i]);
      s.alive_end.push_back(segments[2 * i + 1]);
      s.alive_score.push_back(s.current[i]);
      s.alive_index.push_back(i);
      top = s.current[i] > top ? s.current[i] : top;
    }
  }
  size_t n = s.alive_index.size();
  double* start = s.alive_start.data();
  double* end = s.alive_end.data();
  double* score = s.alive_score.data();
  int64_t* index = s.alive_index.data();
  int64_t picked = 0;
  while (picked < p.max_detections && n > 0) {
    // The pick: the highest score `top`; among exact ties the smallest (start, end, label, index).
    size_t best = n;
    for (size_t k = 0; k < n; ++k) {
      if (score[k] != top) continue;
      if (best == n || nms_better<Label>(top, start[k], end[k], labels[index[k]], index[k], top, start[best],
                                         end[best], labels[index[best]], index[best])) {
        best = k;
      }
    }
    if (best == n) break;  // unreachable with finite scores (NaN only with unvalidated garbage): stay in bounds
    s.pick_index.push_back(index[best]);
    s.pick_score.push_back(score[best]);  // == top; the element itself keeps the oracle's exact bits (e.g. +-0)
    ++picked;
    const double best_start = start[best], best_end = end[best];
    --n;  // the last alive candidate takes the picked one's place (order is irrelevant: the index breaks ties)
    start[best] = start[n];
    end[best] = end[n];
    score[best] = score[n];
    index[best] = index[n];
    if (n == 0) break;
    bool dropped = false;
    top = decay_scores(n, start, end, score, best_start, best_end, p, &dropped);
    if (dropped) {  // rare: compact the survivors
      size_t kept = 0;
      for (size_t k = 0; k < n; ++k) {
        if (!(score[k] >= p.min_score)) continue;
        start[kept] = start[k];
        end[kept] = end[k];
        score[kept] = score[k];
        index[kept] = index[k];
        ++kept;
      }
      n = kept;
    }
  }
}

}  // namespace detail

// SoftNMS of n segments (interleaved (n, 2) float64). Writes the picked input indices and emitted scores in output
// order (selection order, or the per-class merge order); returns how many (<= max_detections).
template <class Label>
int64_t soft_nms_core(int64_t n, const double* segments, const double* scores, const Label* labels, const NmsParams& p,
                      NmsScratch& s, int64_t* out_index, double* out_score) {
  s.pick_index.clear();
  s.pick_score.clear();
  if (n <= 0) return 0;
  s.current.assign(scores, scores + n);
  s.members.resize(n);
  for (int64_t i = 0; i < n; ++i) s.members[i] = i;
  if (!p.multiclass) {
    detail::greedy_soft_nms(s.members.data(), n, segments, labels, p, s);
    const int64_t m = static_cast<int64_t>(s.pick_index.size());
    std::copy(s.pick_index.begin(), s.pick_index.end(), out_index);
    std::copy(s.pick_score.begin(), s.pick_score.end(), out_score);
    return m;
  }
  // Per class, classes ascending, members in input order.
  std::stable_sort(s.members.begin(), s.members.end(),
                   [labels](int64_t a, int64_t b) { return labels[a] < labels[b]; });
  for (int64_t begin = 0; begin < n;) {
    int64_t end = begin + 1;
    while (end < n && labels[s.members[end]] == labels[s.members[begin]]) ++end;
    detail::greedy_soft_nms(s.members.data() + begin, end - begin, segments, labels, p, s);
    begin = end;
  }
  const int64_t total = static_cast<int64_t>(s.pick_index.size());
  s.merge_order.resize(total);
  for (int64_t q = 0; q < total; ++q) s.merge_order[q] = q;
  const int64_t* pick = s.pick_index.data();
  const double* pick_score = s.pick_score.data();
  auto before = [&](int64_t x, int64_t y) {
    const int64_t i = pick[x], j = pick[y];
    return merge_before<Label>(pick_score[x], segments[2 * i], segments[2 * i + 1], labels[i], x, pick_score[y],
                               segments[2 * j], segments[2 * j + 1], labels[j], y);
  };
  const int64_t m = std::min<int64_t>(total, p.max_detections);
  std::partial_sort(s.merge_order.begin(), s.merge_order.begin() + m, s.merge_order.end(), before);
  for (int64_t r = 0; r < m; ++r) {
    out_index[r] = pick[s.merge_order[r]];
    out_score[r] = pick_score[s.merge_order[r]];
  }
  return m;
}

}  // namespace gsmt
