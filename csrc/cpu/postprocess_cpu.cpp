// CPU batched post-processing: the candidates of B windows (steps 1-5 of docs/DESIGN.md "Post-processing", or the
// boundary candidates of the boundary-refined variant) and their SoftNMS in seconds (step 6), parallel over windows
// with std::thread. Matches gsmt_fast/postprocess/reference.py
// exactly (the shared rules are in gsmt_core.h).
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <exception>
#include <mutex>
#include <thread>
#include <vector>

#include "cpu/soft_nms_cpu.h"
#include "gsmt_core.h"
#include "postprocess.h"

namespace gsmt {
namespace {

// ---- element access for float32 and float16 (raw bits) ----
inline float load_value(const float* p, int64_t i) { return p[i]; }
inline float load_value(const uint16_t* p, int64_t i) { return half_bits_to_float(p[i]); }
// "v is not in [0, 1]" (NaN and inf included) on the bit pattern: integer compares vectorise, float compares that
// must respect NaN do not (GCC keeps them scalar). Non-negative floats order like their bits; -0.0 is allowed.
inline uint32_t out_of_unit(float v) {
  uint32_t u;
  std::memcpy(&u, &v, sizeof u);
  return static_cast<uint32_t>(u > 0x3F800000u) & static_cast<uint32_t>(u != 0x80000000u);
}
inline uint32_t out_of_unit(uint16_t h) { return half_bits_in_unit_interval(h) ? 0u : 1u; }
inline bool is_finite(float v) { return std::isfinite(v); }
inline bool is_finite(uint16_t h) { return half_bits_finite(h); }

// Status of a rows x cols block (row stride `stride`): 0, or the oracle's first complaint (non-finite before range).
template <class T>
int32_t check_block(const T* base, int64_t rows, int64_t cols, int64_t stride, int32_t nonfinite_bit,
                    int32_t range_bit) {
  bool bad = false;
  for (int64_t r = 0; r < rows && !bad; ++r) {
    const T* row = base + r * stride;
    uint32_t row_bad = 0;  // branch-free inner loop so that it vectorises
    for (int64_t c = 0; c < cols; ++c) row_bad |= out_of_unit(row[c]);
    bad = row_bad != 0;
  }
  if (!bad) return 0;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      if (!is_finite(base[r * stride + c])) return nonfinite_bit;
    }
  }
  return range_bit;
}

// level[k] = number of cutoffs values[k] reaches (cutoffs ascending): one flat pass per cutoff, compiled for
// several instruction sets and picked at load time (integer counts, so every clone gives the same result).
GSMT_CLONES void count_levels(size_t n, const float* values, const float* cutoffs, int num_cutoffs, uint8_t* level) {
  std::fill(level, level + n, uint8_t{0});
  for (int c = 0; c < num_cutoffs; ++c) {
    const float cutoff = cutoffs[c];
    for (size_t k = 0; k < n; ++k) level[k] += values[k] >= cutoff ? 1 : 0;
  }
}

// Open-addressing map (start, end, label) -> max score: the oracle's merge of identical candidates, without
// sorting every raw candidate (thousands per window on noisy masks, a few hundred distinct).
class CandidateTable {
 public:
  void insert(uint64_t key, double score) {
    if ((used_.size() + 1) * 2 > keys_.size()) grow();
    for (uint64_t slot = hash(key);; slot = (slot + 1) & mask_) {
      if (keys_[slot] == kEmpty) {
        keys_[slot] = key;
        scores_[slot] = score;
        used_.push_back(static_cast<uint32_t>(slot));
        return;
      }
      if (keys_[slot] == key) {
        if (score > scores_[slot]) scores_[slot] = score;
        return;
      }
    }
  }
  // Appends the distinct candidates to `out` and empties the table (only the used slots are touched).
  void drain(std::vector<Candidate>& out) {
    for (uint32_t slot : used_) {
      const uint64_t key = keys_[slot];
      out.push_back(Candidate{key_start(key), key_end(key), key_label(key), scores_[slot]});
      keys_[slot] = kEmpty;
    }
    used_.clear();
  }

 private:
  static constexpr uint64_t kEmpty = ~uint64_t{0};
  uint64_t hash(uint64_t key) const { return (key * 0x9E3779B97F4A7C15ull) >> shift_; }
  void grow() {
    std::vector<uint64_t> old_keys = std::move(keys_);
    std::vector<double> old_scores = std::move(scores_);
    std::vector<uint32_t> old_used = std::move(used_);
    const size_t size = old_keys.empty() ? 1024 : old_keys.size() * 2;
    keys_.assign(size, kEmpty);
    scores_.assign(size, 0.0);
    used_.clear();
    used_.reserve(size / 2);
    mask_ = size - 1;
    shift_ = 64;
    for (size_t s = size; s > 1; s >>= 1) --shift_;
    for (uint32_t slot : old_used) insert(old_keys[slot], old_scores[slot]);
  }
  std::vector<uint64_t> keys_;
  std::vector<double> scores_;
  std::vector<uint32_t> used_;
  uint64_t mask_ = 0;
  int shift_ = 64;
};

// Per-thread buffers, reused across the windows a thread processes (no allocation once warm).
struct Scratch {
  std::vector<float> foreground;
  std::vector<int32_t> label;
  std::vector<int32_t> order;
  std::vector<float> values;   // selected mask columns (M1, V): values[j * V + i] = M[i, selected[j]]
  std::vector<uint8_t> level;  // (M1, V): number of cutoffs each value reaches
  CandidateTable table;
  std::vector<Candidate> top;
  // detections
  NmsScratch nms;
  std::vector<double> segments;
  std::vector<double> scores;
  std::vector<int32_t> labels;
  std::vector<int64_t> pick_index;
  std::vector<double> pick_score;
};

inline void emit(CandidateTable& table, int32_t a, int32_t b, int32_t label, float prob, float mask_max,
                 double score_threshold) {
  const double score = candidate_score(prob, mask_max);
  if (score > score_threshold) table.insert(pack_key(a, b, label), score);  // step 5's drop, done early
}

// Short mode, all thresholds of one column in one left-to-right pass. A snippet of level l (it reaches cutoffs
// 1..l) lies in one open run per level 1..l, nested. Runs close top-down when the level drops; a closing run hands
// its max to the run one level below (which contains it), so each value is folded once, into the deepest run.
// Runs of consecutive levels with the same start close at the same row: they are the same candidate, emitted once.
void short_runs(const float* column, const uint8_t* level, int32_t V, int32_t label, float prob,
                double score_threshold, CandidateTable& table) {
  int32_t open_start[kMaxThresholds + 1];
  float run_max[kMaxThresholds + 1];
  int depth = 0;
  for (int32_t i = 0; i <= V; ++i) {
    if (depth == 0) {  // outside every run: skip inactive rows (most of a column), 8 at a time
      uint64_t word;
      while (i + 8 <= V && (std::memcpy(&word, level + i, 8), word == 0)) i += 8;
      while (i < V && level[i] == 0) ++i;
      if (i == V) break;
    }
    const int lv = i < V ? level[i] : 0;
    int32_t last_start = -1;
    while (depth > lv) {
      if (open_start[depth] != last_start) {
        emit(table, open_start[depth], i - 1, label, prob, run_max[depth], score_threshold);
        last_start = open_start[depth];
      }
      if (depth > 1) run_max[depth - 1] = std::max(run_max[depth - 1], run_max[depth]);
      --depth;
    }
    while (depth < lv) {
      ++depth;
      open_start[depth] = i;
      run_max[depth] = -INFINITY;  // filled by the fold below (deepest level) or by the runs closing into it
    }
    if (depth > 0) run_max[depth] = std::max(run_max[depth], column[i]);
  }
}

// Long mode: per threshold, first..last active snippet. Its max is the column max (the argmax is active whenever
// anything is, so it lies inside first..last).
void long_runs(const float* column, const uint8_t* level, int32_t V, int32_t label, float prob,
               double score_threshold, CandidateTable& table) {
  int max_level = 0;
  float column_max = column[0];
  for (int32_t i = 0; i < V; ++i) {
    max_level = std::max<int>(max_level, level[i]);
    column_max = std::max(column_max, column[i]);
  }
  if (max_level == 0) return;
  int32_t first[kMaxThresholds + 1];
  int32_t last[kMaxThresholds + 1];
  for (int32_t i = 0, reached = 0; i < V && reached < max_level; ++i) {
    while (reached < level[i]) first[++reached] = i;
  }
  for (int32_t i = V - 1, reached = 0; i >= 0 && reached < max_level; --i) {
    while (reached < level[i]) last[++reached] = i;
  }
  for (int l = 1; l <= max_level; ++l) {
    if (l > 1 && first[l] == first[l - 1] && last[l] == last[l - 1]) continue;
    emit(table, first[l], last[l], label, prob, column_max, score_threshold);
  }
}

// Boundary distances of one window, (2, T): kBoundariesInvalid unless the valid part is finite and >= 0.
int32_t check_boundaries(const float* bounds, int32_t V, int64_t T) {
  uint32_t bad = 0;  // branch-free so that it vectorises
  for (int64_t row = 0; row < 2; ++row) {
    for (int32_t t = 0; t < V; ++t) bad |= distance_ok(bounds[row * T + t]) ? 0u : 1u;
  }
  return bad ? kBoundariesInvalid : 0;
}

// Step 5's ordering: the first M2 candidates in output order (candidate_before: score descending, then start,
// end, label; for boundary candidates start = end = the source snippet). Returns status 0.
int32_t sort_top(std::vector<Candidate>& top, int32_t pre_nms_topk) {
  auto before = [](const Candidate& x, const Candidate& y) { return candidate_before(x, y); };
  const size_t keep = std::min<size_t>(top.size(), static_cast<size_t>(pre_nms_topk));
  if (keep < top.size()) {
    std::nth_element(top.begin(), top.begin() + keep, top.end(), before);
    top.resize(keep);
  }
  std::sort(top.begin(), top.end(), before);
  return 0;
}

// Steps 1-5 for one window; fills s.top (sorted, <= M2) and returns the window status. `bounds` (2, T) non-null:
// boundary candidates (steps 3'-5'), one per selected snippet t, as Candidate{t, t, label, P[label, t]}.
template <class PT, class MT>
int32_t window_candidates_one(const PT* probs, const MT* masks, const float* bounds, int32_t V,
                              const CandidateParams& p, Scratch& s) {
  s.top.clear();
  const int64_t T = p.T;
  const int64_t K = p.num_rows - 1;
  if (V < 1 || V > T) return kBadValidLen;
  if (p.validate) {
    int32_t status = check_block(probs, p.num_rows, V, T, kProbsNonFinite, kProbsOutOfRange);
    if (status != 0) return status;
    // Mask candidates check the masks row by row during the gather below (one pass over the largest input);
    // boundary candidates never gather, so they check here, then the distances (the oracle's order).
    if (bounds != nullptr) {
      status = check_block(masks, V, V, T, kMasksNonFinite, kMasksOutOfRange);
      if (status == 0) status = check_boundaries(bounds, V, T);
      if (status != 0) return status;
    }
  }

  // Step 1: foreground and label; strict > keeps the lowest class on ties (float compares == float64 compares).
  s.foreground.resize(V);
  s.label.assign(V, 0);
  float* fg = s.foreground.data();
  int32_t* label = s.label.data();
  for (int32_t t = 0; t < V; ++t) fg[t] = load_value(probs, t);
  for (int64_t k = 1; k < K; ++k) {
    const PT* row = probs + k * T;
    for (int32_t t = 0; t < V; ++t) {  // selects instead of a branch, so that it vectorises
      const float v = load_value(row, t);
      const bool greater = v > fg[t];
      fg[t] = greater ? v : fg[t];
      label[t] = greater ? static_cast<int32_t>(k) : label[t];
    }
  }
  // Only reachable with validate=False: a NaN foreground would break the strict weak order nth_element needs.
  for (int32_t t = 0; t < V; ++t) fg[t] = fg[t] == fg[t] ? fg[t] : -INFINITY;

  // Step 2: top M1 by foreground, ties to the lower snippet. Only the selected set matters (the merge below is
  // order-independent), so nth_element suffices; then ascending t for a row-order gather.
  const int32_t M1 = std::min<int32_t>(p.top_snippets, V);
  s.order.resize(V);
  for (int32_t t = 0; t < V; ++t) s.order[t] = t;
  if (M1 < V) {
    std::nth_element(s.order.begin(), s.order.begin() + M1, s.order.end(), [fg](int32_t a, int32_t b) {
      return fg[a] > fg[b] || (fg[a] == fg[b] && a < b);
    });
    std::sort(s.order.begin(), s.order.begin() + M1);
  }
  const int32_t* selected = s.order.data();

  if (bounds != nullptr) {  // steps 3'-5': one candidate per selected snippet, no merge needed (t is unique)
    for (int32_t j = 0; j < M1; ++j) {
      const int32_t t = selected[j];
      const double score = candidate_score(load_value(probs + label[t] * T, t), 1.0f);
      if (score > p.score_threshold) s.top.push_back(Candidate{t, t, label[t], score});
    }
    return sort_top(s.top, p.pre_nms_topk);
  }

  // Gather the selected columns row by row (rows are contiguous in memory, columns strided by T) into contiguous
  // columns (M1 write streams, one cache line each at a time), checking each mask row on the way: one pass over
  // the largest input.
  const size_t block = static_cast<size_t>(M1) * V;
  s.values.resize(block);
  s.level.resize(block);
  float* values = s.values.data();
  uint8_t* level = s.level.data();
  uint32_t masks_bad = 0;
  for (int32_t i = 0; i < V; ++i) {
    const MT* row = masks + static_cast<int64_t>(i) * T;
    if (p.validate) {
      for (int32_t c = 0; c < V; ++c) masks_bad |= out_of_unit(row[c]);
    }
    for (int32_t j = 0; j < M1; ++j) values[static_cast<size_t>(j) * V + i] = load_value(row, selected[j]);
  }
  if (masks_bad) return check_block(masks, V, V, T, kMasksNonFinite, kMasksOutOfRange);
  count_levels(block, values, p.cutoffs, p.num_cutoffs, level);

  // Steps 3-4 per selected column; candidates merge in the table as they come.
  for (int32_t j = 0; j < M1; ++j) {
    const int32_t t = selected[j];
    const float prob = load_value(probs + label[t] * T, t);
    const float* column = values + static_cast<size_t>(j) * V;
    const uint8_t* column_level = level + static_cast<size_t>(j) * V;
    if (p.long_mode) {
      long_runs(column, column_level, V, label[t], prob, p.score_threshold, s.table);
    } else {
      short_runs(column, column_level, V, label[t], prob, p.score_threshold, s.table);
    }
  }

  // Step 5: top M2 of the distinct candidates in output order.
  s.table.drain(s.top);
  return sort_top(s.top, p.pre_nms_topk);
}

// Runs fn(window, scratch) for every window on up to num_threads threads (the caller's thread included), pulling
// windows from a shared counter so that uneven windows balance. The first exception is rethrown.
template <class Fn>
void parallel_windows(int64_t batch, int num_threads, Fn fn) {
  if (batch <= 0) return;
  int64_t threads = num_threads > 0 ? num_threads : static_cast<int64_t>(std::thread::hardware_concurrency());
  threads = std::max<int64_t>(1, std::min<int64_t>(threads, batch));
  std::atomic<int64_t> next{0};
  std::exception_ptr error;
  std::mutex error_mutex;
  auto worker = [&]() {
    try {
      // Kept per thread across calls: one-window calls (streaming, per-video use) then allocate nothing.
      static thread_local Scratch scratch;
      for (int64_t b = next.fetch_add(1); b < batch; b = next.fetch_add(1)) fn(b, scratch);
    } catch (...) {
      std::lock_guard<std::mutex> lock(error_mutex);
      if (!error) error = std::current_exception();
      next.store(batch);  // stop the others early
    }
  };
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(threads - 1));
  for (int64_t i = 1; i < threads; ++i) pool.emplace_back(worker);
  worker();
  for (std::thread& thread : pool) thread.join();
  if (error) std::rethrow_exception(error);
}

template <class PT, class MT>
void candidates_batch(const PT* probs, const MT* masks, const float* boundaries, const int32_t* valid_len,
                      int64_t batch, const CandidateParams& p, const CandidateOutputs& out, int num_threads) {
  const int64_t window_probs = p.num_rows * p.T;
  const int64_t window_masks = p.T * p.T;
  const int64_t cap = p.pre_nms_topk;
  parallel_windows(batch, num_threads, [&](int64_t b, Scratch& s) {
    const float* bounds = boundaries == nullptr ? nullptr : boundaries + b * 2 * p.T;
    out.status[b] = window_candidates_one(probs + b * window_probs, masks + b * window_masks, bounds, valid_len[b],
                                          p, s);
    const int64_t n = static_cast<int64_t>(s.top.size());
    out.count[b] = static_cast<int32_t>(n);
    for (int64_t r = 0; r < cap; ++r) {
      const bool real = r < n;
      double unit_start = 0.0, unit_end = 0.0;
      if (real) {
        candidate_units(s.top[r].start, s.top[r].end, bounds, p.T, valid_len[b], &unit_start, &unit_end);
      }
      out.start[b * cap + r] = real ? s.top[r].start : -1;
      out.end[b * cap + r] = real ? s.top[r].end : -1;
      out.label[b * cap + r] = real ? s.top[r].label : -1;
      out.score[b * cap + r] = real ? s.top[r].score : 0.0;
      out.units[(b * cap + r) * 2] = unit_start;
      out.units[(b * cap + r) * 2 + 1] = unit_end;
    }
  });
}

template <class PT, class MT>
void detections_batch(const PT* probs, const MT* masks, const float* boundaries, const int32_t* valid_len,
                      const TimeMaps& time, int64_t batch, const CandidateParams& p, const NmsParams& nms,
                      const DetectionOutputs& out, int num_threads) {
  const double* scale = time.scale;
  const double* offset = time.offset;
  const int64_t window_probs = p.num_rows * p.T;
  const int64_t window_masks = p.T * p.T;
  const int64_t cap = nms.max_detections;
  parallel_windows(batch, num_threads, [&](int64_t b, Scratch& s) {
    const float* bounds = boundaries == nullptr ? nullptr : boundaries + b * 2 * p.T;
    int32_t status = 0;
    if (!time_map_ok(scale[b], offset[b], p.T)) {
      status = kBadTimeMap;
      s.top.clear();
    } else {
      status = window_candidates_one(probs + b * window_probs, masks + b * window_masks, bounds, valid_len[b], p,
                                     s);
    }
    const int64_t n = static_cast<int64_t>(s.top.size());
    // SoftNMS runs on the candidates converted to seconds (their snippet-unit segments, offset + u * scale), as the
    // oracle does.
    s.segments.resize(2 * n);
    s.scores.resize(n);
    s.labels.resize(n);
    for (int64_t i = 0; i < n; ++i) {
      double unit_start, unit_end;
      candidate_units(s.top[i].start, s.top[i].end, bounds, p.T, valid_len[b], &unit_start, &unit_end);
      s.segments[2 * i] = to_seconds(offset[b], scale[b], unit_start);
      s.segments[2 * i + 1] = to_seconds(offset[b], scale[b], unit_end);
      s.scores[i] = s.top[i].score;
      s.labels[i] = s.top[i].label;
    }
    s.pick_index.resize(std::max<int64_t>(n, 1));
    s.pick_score.resize(std::max<int64_t>(n, 1));
    const int64_t m = soft_nms_core<int32_t>(n, s.segments.data(), s.scores.data(), s.labels.data(), nms, s.nms,
                                             s.pick_index.data(), s.pick_score.data());
    out.status[b] = status;
    out.count[b] = static_cast<int32_t>(m);
    for (int64_t r = 0; r < cap; ++r) {
      const bool real = r < m;
      const int64_t i = real ? s.pick_index[r] : 0;
      out.segments[(b * cap + r) * 2] = real ? s.segments[2 * i] : 0.0;
      out.segments[(b * cap + r) * 2 + 1] = real ? s.segments[2 * i + 1] : 0.0;
      out.score[b * cap + r] = real ? s.pick_score[r] : 0.0;
      out.label[b * cap + r] = real ? s.labels[i] : -1;
    }
  });
}

// float32 / float16 dispatch for the two inputs independently.
template <class Fn>
void dispatch_dtypes(const WindowBatch& in, Fn fn) {
  if (in.probs_dtype == DType::kFloat32) {
    if (in.masks_dtype == DType::kFloat32) {
      fn(static_cast<const float*>(in.probs), static_cast<const float*>(in.masks));
    } else {
      fn(static_cast<const float*>(in.probs), static_cast<const uint16_t*>(in.masks));
    }
  } else {
    if (in.masks_dtype == DType::kFloat32) {
      fn(static_cast<const uint16_t*>(in.probs), static_cast<const float*>(in.masks));
    } else {
      fn(static_cast<const uint16_t*>(in.probs), static_cast<const uint16_t*>(in.masks));
    }
  }
}

}  // namespace

void window_candidates_cpu(const WindowBatch& in, const CandidateParams& params, const CandidateOutputs& out,
                           int num_threads) {
  dispatch_dtypes(in, [&](auto typed_probs, auto typed_masks) {
    candidates_batch(typed_probs, typed_masks, in.boundaries, in.valid_len, in.batch, params, out, num_threads);
  });
}

void window_detections_cpu(const WindowBatch& in, const TimeMaps& time, const CandidateParams& params,
                           const NmsParams& nms, const DetectionOutputs& out, int num_threads) {
  dispatch_dtypes(in, [&](auto typed_probs, auto typed_masks) {
    detections_batch(typed_probs, typed_masks, in.boundaries, in.valid_len, time, in.batch, params, nms, out,
                     num_threads);
  });
}

}  // namespace gsmt
