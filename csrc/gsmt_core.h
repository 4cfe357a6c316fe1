// Plain-C++ core of the GSMT post-processing, shared by the CPU (csrc/cpu) and CUDA (csrc/cuda) paths.
//
// Every comparison and tie rule of the oracle (gsmt_fast/postprocess/reference.py) lives here exactly
// once, as __host__ __device__ inline functions on POD data, so that the two device paths cannot drift apart.
//
// Floating point: all arithmetic below must be evaluated as written, one IEEE operation at a time (no FMA
// contraction): CMakeLists.txt compiles C++ with -ffp-contract=off and CUDA with --fmad=false. That is what makes
// `offset + u * scale`, the IoU and the decayed scores bit-identical between CPU, CUDA and NumPy.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#ifdef __CUDACC__
#define GSMT_HD __host__ __device__ __forceinline__
#else
#define GSMT_HD inline
#endif

namespace gsmt {

// Limits of the packed representations (see pack_key): T < 2^20 snippets, K < 2^24 classes.
constexpr int kMaxThresholds = 64;  // the message in set_thresholds names this number
constexpr int64_t kMaxSnippets = (int64_t{1} << 20) - 1;
constexpr int64_t kMaxClasses = (int64_t{1} << 24) - 1;
// Distinct candidates per window the CUDA path keeps on chip (a 64 KB shared-memory hash table); a window with more
// is flagged kCandidateOverflow and recomputed on the CPU by the Python wrapper.
constexpr int kCudaCandidateBits = 12;
constexpr int kCudaCandidateCapacity = 1 << kCudaCandidateBits;

enum NmsMethod : int32_t { kGaussian = 0, kLinear = 1, kHard = 2 };

// Per-window status bits written next to the outputs (the CUDA path cannot throw, so both paths report this way).
enum StatusBits : int32_t {
  kProbsNonFinite = 1,
  kMasksNonFinite = 2,
  kProbsOutOfRange = 4,
  kMasksOutOfRange = 8,
  kBadValidLen = 16,
  kCandidateOverflow = 32,  // CUDA only: the per-window candidate table overflowed (the wrapper recomputes on CPU)
  kBadTimeMap = 64,         // scale <= 0, or scale/offset/seconds of the window not finite (time_map_ok)
  kBoundariesInvalid = 128,  // boundary distances NaN, inf or negative in the valid part (boundary candidates)
};

// The settings of the candidate stage (steps 1-5 of docs/DESIGN.md "Post-processing") plus the window shape.
// Passed by value to the CUDA kernels, so it must stay POD.
struct CandidateParams {
  int64_t num_rows;  // K + 1 (row K is background)
  int64_t T;
  int32_t top_snippets;  // M1 (capped by valid_len per window)
  int32_t num_cutoffs;   // distinct float32 cutoffs, ascending (see set_thresholds)
  float cutoffs[kMaxThresholds];
  int32_t long_mode;
  int32_t validate;        // check finiteness / [0, 1] range of the valid part
  double score_threshold;  // θ_c: keep score > θ_c
  int32_t pre_nms_topk;    // M2
};

// The settings of SoftNMS (docs/DESIGN.md "SoftNMS"). POD as well.
struct NmsParams {
  int32_t method;  // NmsMethod
  double sigma;
  double iou_threshold;
  double min_score;
  int32_t max_detections;  // max_seg_num: per class and in total
  int32_t multiclass;
};

// One candidate: snippets start..end (inclusive) with a class and a float64 score.
struct Candidate {
  int32_t start;
  int32_t end;
  int32_t label;
  double score;
};

// Output order of the candidates (reference step 5): score descending, then smaller start, end, label.
GSMT_HD bool candidate_before(const Candidate& x, const Candidate& y) {
  if (x.score != y.score) return x.score > y.score;
  if (x.start != y.start) return x.start < y.start;
  if (x.end != y.end) return x.end < y.end;
  return x.label < y.label;
}

// (start, end, label) in one 64-bit word whose unsigned order is the lexicographic order of the triple.
// Used as a hash key and as the secondary sort key on the GPU.
GSMT_HD uint64_t pack_key(int32_t start, int32_t end, int32_t label) {
  return (static_cast<uint64_t>(start) << 44) | (static_cast<uint64_t>(end) << 24) | static_cast<uint64_t>(label);
}
GSMT_HD int32_t key_start(uint64_t key) { return static_cast<int32_t>(key >> 44); }
GSMT_HD int32_t key_end(uint64_t key) { return static_cast<int32_t>((key >> 24) & 0xFFFFFu); }
GSMT_HD int32_t key_label(uint64_t key) { return static_cast<int32_t>(key & 0xFFFFFFu); }

// Candidate score: P[label, t] * max(M[a..b, t]). Both factors are float16/float32 values, so the float64 product
// is exact (24 + 24 significant bits < 53) and equals the reference's. A -0.0 factor (legal: -0.0 is in [0, 1])
// would give -0.0; it is canonicalised to +0.0 because the GPU compares score bit patterns as unsigned integers.
GSMT_HD double candidate_score(float prob, float mask_max) {
  double s = static_cast<double>(prob) * static_cast<double>(mask_max);
  return s == 0.0 ? 0.0 : s;
}

// Boundary candidate of source snippet t (reference steps 3'-4', boundary-refined variant): the segment
// [max(0, (t + 0.5) - d_start), min(V, (t + 0.5) + d_end)] in snippet units, float64, one rounding per end.
GSMT_HD double boundary_start(int32_t t, float d_start) {
  const double s = (static_cast<double>(t) + 0.5) - static_cast<double>(d_start);
  return s > 0.0 ? s : 0.0;
}
GSMT_HD double boundary_end(int32_t t, float d_end, int32_t V) {
  const double e = (static_cast<double>(t) + 0.5) + static_cast<double>(d_end);
  const double v = static_cast<double>(V);
  return e < v ? e : v;
}

// The segment of a candidate in snippet units, from its (start, end) snippet fields: [a, b + 1] for a mask run
// (bounds == nullptr), the boundary segment of its source snippet a = b otherwise (bounds: (2, T) distances).
GSMT_HD void candidate_units(int32_t start, int32_t end, const float* bounds, int64_t T, int32_t V,
                             double* unit_start, double* unit_end) {
  if (bounds == nullptr) {
    *unit_start = static_cast<double>(start);
    *unit_end = static_cast<double>(end + 1);
  } else {
    *unit_start = boundary_start(start, bounds[start]);
    *unit_end = boundary_end(start, bounds[T + start], V);
  }
}

// A boundary distance is usable when finite and >= 0 (-0.0 included), tested as the oracle's `isfinite(d) and
// d >= 0`: NaN fails the compare, +inf the finiteness.
GSMT_HD bool distance_ok(float d) { return d >= 0.0f && d - d == 0.0f; }

// Snippet units -> seconds, exactly the reference's `offset + u * scale` (two roundings, no FMA).
GSMT_HD double to_seconds(double offset, double scale, double u) { return offset + u * scale; }

// A window's time map is usable when scale > 0 and every second it produces, u in [0, T], is finite (the seconds
// are monotonic in u, so the two ends decide).
GSMT_HD bool time_map_ok(double scale, double offset, int64_t T) {
  const double last = to_seconds(offset, scale, static_cast<double>(T));
  return scale > 0.0 && scale - scale == 0.0 && offset - offset == 0.0 && last - last == 0.0;
}

// IoU in float64, with the oracle's order of operations and its 0/0 rule (identical points overlap fully,
// distinct points do not interact).
GSMT_HD double segment_iou(double s1, double e1, double s2, double e2) {
  const double lo = s1 > s2 ? s1 : s2;
  const double hi = e1 < e2 ? e1 : e2;
  const double overlap = hi - lo;
  const double inter = overlap > 0.0 ? overlap : 0.0;
  const double uni = (e1 - s1) + (e2 - s2) - inter;
  const double iou = inter / uni;  // computed unconditionally (selects, no branch); 0/0 is discarded below
  return uni > 0.0 ? iou : (s1 == s2 ? 1.0 : 0.0);
}

// Bit casts that work on the host (memcpy, which compilers turn into a register move) and on the device.
GSMT_HD double bits_to_double(uint64_t bits) {
#ifdef __CUDA_ARCH__
  return __longlong_as_double(static_cast<long long>(bits));
#else
  double d;
  memcpy(&d, &bits, sizeof d);
  return d;
#endif
}
GSMT_HD uint64_t double_to_bits(double d) {
#ifdef __CUDA_ARCH__
  return static_cast<uint64_t>(__double_as_longlong(d));
#else
  uint64_t bits;
  memcpy(&bits, &d, sizeof bits);
  return bits;
#endif
}

// exp() that gives the same bits on the host and on the GPU (glibc's, NumPy's SIMD one and CUDA's all differ in
// the last bit for a few percent of arguments). Error about 0.5 ulp + 2^-56: argument reduction by k*ln2 with a
// two-part ln2 whose high part has trailing zero bits (so k*ln2_hi is exact), Taylor series to r^13 on
// |r| <= ln2/2 (truncation < 2^-57, Estrin evaluation), and 1 + r kept as an exact two-term sum so that the
// only large rounding is the last.
// Branch-free (selects, no library calls) so that the CPU SoftNMS decay loop vectorises: k is rounded with the
// 1.5*2^52 shifter, and 2^k is applied as two exact power-of-two factors built from bits (one final rounding, as
// ldexp does, also for subnormal results). exp(-0.0) == 1 exactly, so disjoint segments decay by exactly 1.
GSMT_HD double det_exp(double x) {
  const double kShifter = 6755399441055744.0;  // 1.5 * 2^52: x + kShifter rounds x to an integer, kept in the low bits
  const double kInvLn2 = 1.4426950408889634;
  const double kLn2Hi = 6.93147180369123816490e-01;  // 0x3FE62E42FEE00000: 32 significant bits
  const double kLn2Lo = 1.90821492927058770002e-10;  // ln2 - kLn2Hi
  const uint64_t kShifterBits = 0x4338000000000000ull;
  double xc = x < -746.0 ? -746.0 : x;  // keeps k in range; results below -745.13 are selected to 0 at the end
  xc = xc > 710.0 ? 710.0 : xc;
  const double kf = (xc * kInvLn2 + kShifter) - kShifter;  // nearest integer to x / ln2
  const double hi = xc - kf * kLn2Hi;  // exact: |kf| < 2^11 and kLn2Hi has 21 trailing zero bits
  const double lo = kf * kLn2Lo;
  const double r = hi - lo;
  const double c = (hi - r) - lo;  // r + c ~ hi - lo to ~2^-105
  // q(r) = sum_{j=2..13} r^(j-2) / j!, by Estrin's scheme (a short dependency chain, so vector loops overlap well)
  const double r2 = r * r;
  const double r4 = r2 * r2;
  const double a0 = 1.0 / 2.0 + r * (1.0 / 6.0);
  const double a1 = 1.0 / 24.0 + r * (1.0 / 120.0);
  const double a2 = 1.0 / 720.0 + r * (1.0 / 5040.0);
  const double a3 = 1.0 / 40320.0 + r * (1.0 / 362880.0);
  const double a4 = 1.0 / 3628800.0 + r * (1.0 / 39916800.0);
  const double a5 = 1.0 / 479001600.0 + r * (1.0 / 6227020800.0);
  const double b0 = a0 + r2 * a1;
  const double b1 = a2 + r2 * a3;
  const double b2 = a4 + r2 * a5;
  const double q = (b0 + r4 * b1) + (r4 * r4) * b2;
  const double s = r2 * q;  // exp(r) - 1 - r
  const double h = 1.0 + r;      // Fast2Sum (|1| >= |r|): h + l == 1 + r exactly
  const double l = (1.0 - h) + r;
  const double y = h + ((s + c * h) + l);  // exp(r + c) ~ (1 + r + s)(1 + c), in [0.7, 1.42]
  // 2^kf = 2^k1 * 2^k2 with both halves normal; y * 2^k1 is exact, the second product rounds once.
  const double k1 = (kf * 0.5 + kShifter) - kShifter;
  const double k2 = kf - k1;
  const double p1 = bits_to_double((double_to_bits(k1 + kShifter) - kShifterBits + 1023u) << 52);
  const double p2 = bits_to_double((double_to_bits(k2 + kShifter) - kShifterBits + 1023u) << 52);
  double result = (y * p1) * p2;
  result = x < -745.1332191019412 ? 0.0 : result;
  result = x > 709.782712893384 ? HUGE_VAL : result;
  return x == x ? result : x;  // NaN in, NaN out
}

// SoftNMS decay weight (oracle `_decay_weights`).
GSMT_HD double decay_weight(double iou, int32_t method, double sigma, double iou_threshold) {
  if (method == kHard) return iou >= iou_threshold ? 0.0 : 1.0;
  if (method == kLinear) return iou >= iou_threshold ? 1.0 - iou : 1.0;
  return det_exp(-(iou * iou) / sigma);
}

// Greedy SoftNMS pick order: higher current score, then smaller start, end, label, input index. `true` when
// candidate i must be picked before candidate j. A strict total order, so every backend picks the same one.
template <class Label>
GSMT_HD bool nms_better(double score_i, double start_i, double end_i, Label label_i, int64_t index_i, double score_j,
                        double start_j, double end_j, Label label_j, int64_t index_j) {
  if (score_i != score_j) return score_i > score_j;
  if (start_i != start_j) return start_i < start_j;
  if (end_i != end_j) return end_i < end_j;
  if (label_i != label_j) return label_i < label_j;
  return index_i < index_j;
}

// Order of the per-class merge: score descending, start, end, label, position in the concatenated per-class output.
// Same shape as nms_better, with the merge position as the last key.
template <class Label>
GSMT_HD bool merge_before(double score_i, double start_i, double end_i, Label label_i, int64_t pos_i, double score_j,
                          double start_j, double end_j, Label label_j, int64_t pos_j) {
  return nms_better(score_i, start_i, end_i, label_i, pos_i, score_j, start_j, end_j, label_j, pos_j);
}

// IEEE binary16 bits -> float (exact: every half is a float).
GSMT_HD float half_bits_to_float(uint16_t h) {
  uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exponent = (h >> 10) & 0x1Fu;
  uint32_t mantissa = h & 0x3FFu;
  uint32_t bits;
  if (exponent == 0x1F) {
    bits = sign | 0x7F800000u | (mantissa << 13);  // inf / NaN
  } else if (exponent != 0) {
    bits = sign | ((exponent + 112u) << 23) | (mantissa << 13);  // normal: rebias 15 -> 127
  } else if (mantissa == 0) {
    bits = sign;  // +-0
  } else {
    // subnormal half = mantissa * 2^-24: normalise into a float
    int e = -1;
    do {
      mantissa <<= 1;
      ++e;
    } while ((mantissa & 0x400u) == 0);
    bits = sign | ((112u - static_cast<uint32_t>(e)) << 23) | ((mantissa & 0x3FFu) << 13);
  }
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

// Half bit pattern inside [0, 1] (including -0.0): NaN, inf and negatives fail. Mirrors `0 <= v <= 1` on floats.
GSMT_HD bool half_bits_in_unit_interval(uint16_t h) { return h <= 0x3C00u || h == 0x8000u; }
GSMT_HD bool half_bits_finite(uint16_t h) { return (h & 0x7C00u) != 0x7C00u; }

// A float32 (or float16, widened exactly to float) mask value m is active at threshold θ when float64(m) > θ.
// threshold_cutoff(θ) is the smallest float c with float64(c) > θ, so that test becomes the float compare m >= c
// (one float compare instead of a widening per element, and exactly the oracle's decision).
inline float threshold_cutoff(double theta) {
  float f = static_cast<float>(theta);  // nearest float
  if (static_cast<double>(f) > theta) return f;  // the float below f is <= θ, or f would not be the nearest
  return nextafterf(f, HUGE_VALF);
}

// Fills params.num_cutoffs / params.cutoffs from the float64 mask thresholds. Results are a union over thresholds
// (duplicates merge), so order and repeats do not matter, and thresholds that map to the same float cutoff activate
// exactly the same snippets: the cutoffs are sorted and deduplicated. Returns nullptr, or the reason the thresholds
// are unusable (params then untouched).
inline const char* set_thresholds(CandidateParams& params, const double* thresholds, int64_t count) {
  float cutoffs[kMaxThresholds];
  int32_t n = 0;
  for (int64_t i = 0; i < count; ++i) {
    if (thresholds[i] != thresholds[i]) return "mask thresholds must not be NaN";
    const float c = threshold_cutoff(thresholds[i]);
    int32_t at = 0;  // insertion point in the sorted, distinct prefix
    while (at < n && cutoffs[at] < c) ++at;
    if (at < n && cutoffs[at] == c) continue;
    if (n == kMaxThresholds) return "at most 64 distinct mask thresholds are supported";
    for (int32_t j = n; j > at; --j) cutoffs[j] = cutoffs[j - 1];
    cutoffs[at] = c;
    ++n;
  }
  params.num_cutoffs = n;
  for (int32_t j = 0; j < kMaxThresholds; ++j) params.cutoffs[j] = j < n ? cutoffs[j] : 0.0f;
  return nullptr;
}

}  // namespace gsmt
