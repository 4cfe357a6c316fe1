// Standalone CPU SoftNMS (gsmt_fast.postprocess.nms backend "cpp") and the threshold set-up shared by all ops.
#include "cpu/soft_nms_cpu.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>
#include <vector>

#include "postprocess.h"

namespace gsmt {

void set_thresholds(Params& params, const double* thresholds, int64_t count) {
  std::vector<float> cutoffs;
  cutoffs.reserve(static_cast<size_t>(count));
  for (int64_t i = 0; i < count; ++i) {
    if (std::isnan(thresholds[i])) throw std::invalid_argument("mask thresholds must not be NaN");
    cutoffs.push_back(threshold_cutoff(thresholds[i]));
  }
  // Results are a union over thresholds (duplicates merge), so order and repeats do not matter; thresholds that
  // map to the same float cutoff activate exactly the same snippets.
  std::sort(cutoffs.begin(), cutoffs.end());
  cutoffs.erase(std::unique(cutoffs.begin(), cutoffs.end()), cutoffs.end());
  if (cutoffs.size() > static_cast<size_t>(kMaxThresholds)) {
    throw std::invalid_argument("at most " + std::to_string(kMaxThresholds) +
                                " distinct mask thresholds are supported, got " + std::to_string(cutoffs.size()));
  }
  params.num_cutoffs = static_cast<int32_t>(cutoffs.size());
  std::fill(std::begin(params.cutoffs), std::end(params.cutoffs), 0.0f);
  std::copy(cutoffs.begin(), cutoffs.end(), params.cutoffs);
}

namespace detail {
namespace {

// The decay loops are branch-free (selects) so that they vectorise; they must not contain the max reduction (GCC
// does not vectorise a floating-point max without fast-math flags), which runs in a separate scalar pass.
GSMT_CLONES void gaussian_decay(size_t n, const double* start, const double* end, double* score, double s, double e,
                                double sigma) {
  for (size_t k = 0; k < n; ++k) {
    const double iou = segment_iou(s, e, start[k], end[k]);
    score[k] = score[k] * det_exp(-(iou * iou) / sigma);  // exp(-0) == 1 exactly when disjoint
  }
}

GSMT_CLONES void threshold_decay(size_t n, const double* start, const double* end, double* score, double s,
                                 double e, double threshold, bool linear) {
  for (size_t k = 0; k < n; ++k) {
    const double iou = segment_iou(s, e, start[k], end[k]);
    score[k] = score[k] * (iou >= threshold ? (linear ? 1.0 - iou : 0.0) : 1.0);
  }
}

}  // namespace

double decay_scores(size_t n, const double* start, const double* end, double* score, double s, double e,
                    const Params& p, bool* dropped) {
  if (p.nms_method == kGaussian) {
    gaussian_decay(n, start, end, score, s, e, p.sigma);
  } else {
    threshold_decay(n, start, end, score, s, e, p.iou_threshold, p.nms_method == kLinear);
  }
  double top = -HUGE_VAL;
  bool below = false;
  for (size_t k = 0; k < n; ++k) {
    top = score[k] > top ? score[k] : top;
    below |= !(score[k] >= p.min_score);
  }
  *dropped = below;
  return top;
}

}  // namespace detail

int64_t soft_nms_cpu(const double* segments, const double* scores, const int64_t* labels, int64_t n,
                     const Params& params, int64_t* out_index, double* out_score) {
  NmsScratch scratch;
  return soft_nms_core<int64_t>(n, segments, scores, labels, params, scratch, out_index, out_score);
}

}  // namespace gsmt
