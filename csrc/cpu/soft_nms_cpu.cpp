// Standalone CPU SoftNMS (gsmt_fast.soft_nms backend "cpp") and the vectorised decay loops of every CPU SoftNMS.
#include "cpu/soft_nms_cpu.h"

#include <cmath>

#include "postprocess.h"

namespace gsmt {

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
                    const NmsParams& p, bool* dropped) {
  if (p.method == kGaussian) {
    gaussian_decay(n, start, end, score, s, e, p.sigma);
  } else {
    threshold_decay(n, start, end, score, s, e, p.iou_threshold, p.method == kLinear);
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
                     const NmsParams& params, int64_t* out_index, double* out_score) {
  NmsScratch scratch;
  return soft_nms_core<int64_t>(n, segments, scores, labels, params, scratch, out_index, out_score);
}

}  // namespace gsmt
