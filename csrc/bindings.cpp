// Python bindings of gsmt_fast._C: the only file that knows about Python. The ops themselves are plain C++
// (csrc/postprocess.h) implemented in csrc/cpu and csrc/cuda, so both device paths share one interface.
//
// CPU ops take C-contiguous NumPy arrays (float16 arrays are passed as raw bits) and return NumPy arrays.
// CUDA ops take raw device pointers (`tensor.data_ptr()`) and the caller's stream as integers, write into
// caller-allocated outputs and never synchronise: no libtorch link, CUDA-graph capturable.
// Every op releases the GIL around the work.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "gsmt_core.h"
#include "postprocess.h"

namespace py = pybind11;
using gsmt::DType;
using gsmt::Params;

#ifndef GSMT_VERSION
#define GSMT_VERSION "unknown"
#endif

namespace {

int32_t parse_method(const std::string& method) {
  if (method == "gaussian") return gsmt::kGaussian;
  if (method == "linear") return gsmt::kLinear;
  if (method == "hard") return gsmt::kHard;
  throw py::value_error("unknown SoftNMS method '" + method + "'; valid methods: gaussian, linear, hard");
}

#ifdef GSMT_WITH_CUDA
DType parse_dtype(const std::string& name, const char* what) {
  if (name == "float32") return DType::kFloat32;
  if (name == "float16") return DType::kFloat16;
  throw py::type_error(std::string(what) + " must be float16 or float32, got " + name);
}
#endif

void set_nms(Params& p, const std::string& method, double sigma, double iou_threshold, double min_score,
             int64_t max_detections, bool multiclass) {
  p.nms_method = parse_method(method);
  if (!(sigma > 0.0) || !std::isfinite(sigma)) throw py::value_error("sigma must be finite and > 0");
  if (!std::isfinite(iou_threshold) || !std::isfinite(min_score)) {
    throw py::value_error("iou_threshold and min_score must be finite");
  }
  if (max_detections < 1 || max_detections > INT32_MAX) throw py::value_error("max_detections must be >= 1");
  p.sigma = sigma;
  p.iou_threshold = iou_threshold;
  p.min_score = min_score;
  p.max_detections = static_cast<int32_t>(max_detections);
  p.multiclass = multiclass ? 1 : 0;
}

Params make_params(int64_t num_rows, int64_t T, const std::vector<double>& thresholds, int64_t top_snippets,
                   bool long_mode, double score_threshold, int64_t pre_nms_topk, bool validate) {
  if (num_rows < 2 || num_rows - 1 > gsmt::kMaxClasses) {
    throw py::value_error("probs must have K+1 rows with 1 <= K <= 2^24 - 1, got " + std::to_string(num_rows));
  }
  if (T < 0 || T > gsmt::kMaxSnippets) throw py::value_error("T must be < 2^20, got " + std::to_string(T));
  if (top_snippets < 1 || top_snippets > INT32_MAX || pre_nms_topk < 1 || pre_nms_topk > INT32_MAX) {
    throw py::value_error("top_snippets and pre_nms_topk must be >= 1");
  }
  if (thresholds.empty()) throw py::value_error("at least one mask threshold is required");
  if (std::isnan(score_threshold)) throw py::value_error("score_threshold must not be NaN");
  Params p{};
  p.num_rows = num_rows;
  p.T = T;
  p.top_snippets = static_cast<int32_t>(top_snippets);
  try {
    gsmt::set_thresholds(p, thresholds.data(), static_cast<int64_t>(thresholds.size()));
  } catch (const std::invalid_argument& error) {
    throw py::value_error(error.what());
  }
  p.long_mode = long_mode ? 1 : 0;
  p.validate = validate ? 1 : 0;
  p.score_threshold = score_threshold;
  p.pre_nms_topk = static_cast<int32_t>(pre_nms_topk);
  // NMS fields unused by the candidate ops; valid defaults keep the struct well-defined.
  p.nms_method = gsmt::kGaussian;
  p.sigma = 1.0;
  p.max_detections = 1;
  return p;
}

std::string shape_of(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

struct HostInputs {
  const void* probs;
  DType probs_dtype;
  const void* masks;
  DType masks_dtype;
  const int32_t* valid_len;
  int64_t batch, num_rows, T;
};

DType host_dtype(const py::array& a, const char* what) {
  const py::dtype dt = a.dtype();
  if (dt.kind() == 'f' && dt.itemsize() == 4) return DType::kFloat32;
  if (dt.kind() == 'f' && dt.itemsize() == 2) return DType::kFloat16;
  throw py::type_error(std::string(what) + " must be float16 or float32, got " + std::string(py::str(dt)));
}

// Shape / dtype / layout checks of the host inputs (the Python wrapper checks first and with friendlier messages;
// these keep direct callers from reading out of bounds).
HostInputs host_inputs(const py::array& probs, const py::array& masks, const py::array_t<int32_t>& valid_len) {
  HostInputs in{};
  in.probs_dtype = host_dtype(probs, "probs");
  in.masks_dtype = host_dtype(masks, "masks");
  if (probs.ndim() != 3) throw py::value_error("probs must have shape (B, K+1, T), got " + shape_of(probs));
  in.batch = probs.shape(0);
  in.num_rows = probs.shape(1);
  in.T = probs.shape(2);
  if (masks.ndim() != 3 || masks.shape(0) != in.batch || masks.shape(1) != in.T || masks.shape(2) != in.T) {
    throw py::value_error("masks must have shape (B, T, T) matching probs " + shape_of(probs) + ", got " +
                          shape_of(masks));
  }
  if (valid_len.ndim() != 1 || valid_len.shape(0) != in.batch) {
    throw py::value_error("valid_len must have shape (B,) with B = " + std::to_string(in.batch));
  }
  const auto c_contiguous = py::array::c_style;
  if (!(probs.flags() & c_contiguous) || !(masks.flags() & c_contiguous) || !(valid_len.flags() & c_contiguous)) {
    throw py::value_error("probs, masks and valid_len must be C-contiguous");
  }
  in.probs = probs.data();
  in.masks = masks.data();
  in.valid_len = valid_len.data();
  return in;
}

py::tuple window_candidates_batch_cpu(const py::array& probs, const py::array& masks,
                                      const py::array_t<int32_t>& valid_len, const std::vector<double>& thresholds,
                                      int64_t top_snippets, bool long_mode, double score_threshold,
                                      int64_t pre_nms_topk, int num_threads, bool validate) {
  const HostInputs in = host_inputs(probs, masks, valid_len);
  const Params p = make_params(in.num_rows, in.T, thresholds, top_snippets, long_mode, score_threshold, pre_nms_topk,
                               validate);
  const py::ssize_t B = in.batch, M2 = p.pre_nms_topk;
  py::array_t<int32_t> start({B, M2}), end({B, M2}), label({B, M2}), count(B), status(B);
  py::array_t<double> score({B, M2});
  const gsmt::CandidateOutputs out{start.mutable_data(), end.mutable_data(), label.mutable_data(),
                                   score.mutable_data(), count.mutable_data(), status.mutable_data()};
  {
    py::gil_scoped_release release;
    gsmt::window_candidates_batch_cpu(in.probs, in.probs_dtype, in.masks, in.masks_dtype, in.valid_len, in.batch, p,
                                      out, num_threads);
  }
  return py::make_tuple(start, end, label, score, count, status);
}

py::tuple window_detections_batch_cpu(const py::array& probs, const py::array& masks,
                                      const py::array_t<int32_t>& valid_len, const py::array_t<double>& scale,
                                      const py::array_t<double>& offset, const std::vector<double>& thresholds,
                                      int64_t top_snippets, bool long_mode, double score_threshold,
                                      int64_t pre_nms_topk, const std::string& nms_method, double sigma,
                                      double iou_threshold, double min_score, int64_t max_detections,
                                      bool multiclass, int num_threads, bool validate) {
  const HostInputs in = host_inputs(probs, masks, valid_len);
  for (const py::array_t<double>* a : {&scale, &offset}) {
    if (a->ndim() != 1 || a->shape(0) != in.batch || !(a->flags() & py::array::c_style)) {
      throw py::value_error("scale and offset must be contiguous float64 arrays of shape (B,) with B = " +
                            std::to_string(in.batch));
    }
  }
  Params p = make_params(in.num_rows, in.T, thresholds, top_snippets, long_mode, score_threshold, pre_nms_topk,
                         validate);
  set_nms(p, nms_method, sigma, iou_threshold, min_score, max_detections, multiclass);
  const py::ssize_t B = in.batch, D = p.max_detections;
  py::array_t<double> segments({B, D, py::ssize_t{2}}), score({B, D});
  py::array_t<int32_t> label({B, D}), count(B), status(B);
  const gsmt::DetectionOutputs out{segments.mutable_data(), score.mutable_data(), label.mutable_data(),
                                   count.mutable_data(), status.mutable_data()};
  {
    py::gil_scoped_release release;
    gsmt::window_detections_batch_cpu(in.probs, in.probs_dtype, in.masks, in.masks_dtype, in.valid_len,
                                      scale.data(), offset.data(), in.batch, p, out, num_threads);
  }
  return py::make_tuple(segments, score, label, count, status);
}

using NmsFunction = int64_t (*)(const double*, const double*, const int64_t*, int64_t, const Params&, int64_t*,
                                double*);

// Contract of gsmt_fast.postprocess.nms.soft_nms(backend="cpp"/"cuda"): validated float64 (N, 2) segments,
// float64 (N,) scores, int64 (N,) labels, then the settings; returns (segments (M, 2), scores (M,), labels (M,)).
using DoubleArray = py::array_t<double, py::array::c_style | py::array::forcecast>;
using LabelArray = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

py::tuple soft_nms_common(NmsFunction function, const DoubleArray& segments, const DoubleArray& scores,
                          const LabelArray& labels,
                          const std::string& method, double sigma, double iou_threshold, double min_score,
                          int64_t max_seg_num, bool multiclass) {
  const py::ssize_t n = scores.ndim() == 1 ? scores.shape(0) : -1;
  if (n < 0 || segments.ndim() != 2 || segments.shape(0) != n || segments.shape(1) != 2 || labels.ndim() != 1 ||
      labels.shape(0) != n) {
    throw py::value_error("soft_nms expects segments (N, 2), scores (N,) and labels (N,)");
  }
  Params p{};
  set_nms(p, method, sigma, iou_threshold, min_score, max_seg_num, multiclass);
  std::vector<int64_t> index(static_cast<size_t>(n));
  std::vector<double> picked_scores(static_cast<size_t>(n));
  int64_t m = 0;
  {
    py::gil_scoped_release release;
    m = function(segments.data(), scores.data(), labels.data(), n, p, index.data(), picked_scores.data());
  }
  py::array_t<double> out_segments({static_cast<py::ssize_t>(m), py::ssize_t{2}}), out_scores(m);
  py::array_t<int64_t> out_labels(m);
  for (int64_t r = 0; r < m; ++r) {
    out_segments.mutable_at(r, 0) = segments.at(index[r], 0);
    out_segments.mutable_at(r, 1) = segments.at(index[r], 1);
    out_scores.mutable_at(r) = picked_scores[r];
    out_labels.mutable_at(r) = labels.at(index[r]);
  }
  return py::make_tuple(out_segments, out_scores, out_labels);
}

#ifdef GSMT_WITH_CUDA
template <class T>
T* device_pointer(uint64_t address) {
  return reinterpret_cast<T*>(static_cast<uintptr_t>(address));
}

Params cuda_params(int64_t num_rows, int64_t T, const std::vector<double>& thresholds, int64_t top_snippets,
                   bool long_mode, double score_threshold, int64_t pre_nms_topk, bool validate) {
  return make_params(num_rows, T, thresholds, top_snippets, long_mode, score_threshold, pre_nms_topk, validate);
}
#endif

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "gsmt_fast C++/CUDA extension: batched GSMT post-processing (candidates + SoftNMS)";
  py::dict info;
  info["version"] = GSMT_VERSION;
#ifdef GSMT_WITH_CUDA
  info["cuda"] = true;
#else
  info["cuda"] = false;
#endif
  info["max_thresholds"] = gsmt::kMaxThresholds;
  info["max_snippets"] = gsmt::kMaxSnippets;
  info["cuda_candidate_capacity"] = gsmt::kCudaCandidateCapacity;
  m.attr("build_info") = info;

  m.def("window_candidates_batch_cpu", &window_candidates_batch_cpu, py::arg("probs"), py::arg("masks"),
        py::arg("valid_len"), py::arg("thresholds"), py::arg("top_snippets"), py::arg("long_mode"),
        py::arg("score_threshold"), py::arg("pre_nms_topk"), py::arg("num_threads") = 0, py::arg("validate") = true,
        "SPEC §5 steps 1-5 for B windows -> (start, end, label, score, count, status); see csrc/postprocess.h.");
  m.def("window_detections_batch_cpu", &window_detections_batch_cpu, py::arg("probs"), py::arg("masks"),
        py::arg("valid_len"), py::arg("scale"), py::arg("offset"), py::arg("thresholds"), py::arg("top_snippets"),
        py::arg("long_mode"), py::arg("score_threshold"), py::arg("pre_nms_topk"), py::arg("nms_method"),
        py::arg("sigma"), py::arg("iou_threshold"), py::arg("min_score"), py::arg("max_detections"),
        py::arg("multiclass"), py::arg("num_threads") = 0, py::arg("validate") = true,
        "Candidates + SoftNMS in seconds for B windows -> (segments, score, label, count, status).");
  m.def(
      "soft_nms_cpu",
      [](const DoubleArray& segments, const DoubleArray& scores, const LabelArray& labels, const std::string& method,
         double sigma, double iou_threshold, double min_score, int64_t max_seg_num, bool multiclass) {
        return soft_nms_common(&gsmt::soft_nms_cpu, segments, scores, labels, method, sigma, iou_threshold, min_score,
                               max_seg_num, multiclass);
      },
      py::arg("segments"), py::arg("scores"), py::arg("labels"), py::arg("method"), py::arg("sigma"),
      py::arg("iou_threshold"), py::arg("min_score"), py::arg("max_seg_num"), py::arg("multiclass"),
      "SoftNMS (SPEC §6) on the CPU -> (segments (M, 2), scores (M,), labels (M,) int64).");
  m.def(
      "_deterministic_exp", [](double x) { return gsmt::det_exp(x); }, py::arg("x"),
      "The exp() used by gaussian SoftNMS on both CPU and GPU (exposed for tests).");
  m.def(
      "_threshold_cutoff", [](double theta) { return gsmt::threshold_cutoff(theta); }, py::arg("theta"),
      "Smallest float32 c with float64(c) > theta (exposed for tests).");

#ifdef GSMT_WITH_CUDA
  m.def("cuda_device_count", &gsmt::cuda_device_count, "Number of visible CUDA devices (0 without driver/GPU).");
  m.def(
      "window_candidates_batch_cuda",
      [](uint64_t probs, const std::string& probs_dtype, uint64_t masks, const std::string& masks_dtype,
         uint64_t valid_len, int64_t batch, int64_t num_rows, int64_t T, const std::vector<double>& thresholds,
         int64_t top_snippets, bool long_mode, double score_threshold, int64_t pre_nms_topk, bool validate,
         uint64_t out_start, uint64_t out_end, uint64_t out_label, uint64_t out_score, uint64_t out_count,
         uint64_t out_status, uint64_t stream) {
        const Params p =
            cuda_params(num_rows, T, thresholds, top_snippets, long_mode, score_threshold, pre_nms_topk, validate);
        const gsmt::CandidateOutputs out{device_pointer<int32_t>(out_start), device_pointer<int32_t>(out_end),
                                         device_pointer<int32_t>(out_label), device_pointer<double>(out_score),
                                         device_pointer<int32_t>(out_count), device_pointer<int32_t>(out_status)};
        const DType pd = parse_dtype(probs_dtype, "probs"), md = parse_dtype(masks_dtype, "masks");
        py::gil_scoped_release release;
        gsmt::window_candidates_batch_cuda(device_pointer<const void>(probs), pd, device_pointer<const void>(masks),
                                           md, device_pointer<const int32_t>(valid_len), batch, p, out,
                                           device_pointer<void>(stream));
      },
      py::arg("probs"), py::arg("probs_dtype"), py::arg("masks"), py::arg("masks_dtype"), py::arg("valid_len"),
      py::arg("batch"), py::arg("num_rows"), py::arg("T"), py::arg("thresholds"), py::arg("top_snippets"),
      py::arg("long_mode"), py::arg("score_threshold"), py::arg("pre_nms_topk"), py::arg("validate"),
      py::arg("out_start"), py::arg("out_end"), py::arg("out_label"), py::arg("out_score"), py::arg("out_count"),
      py::arg("out_status"), py::arg("stream"),
      "Device pointers in, caller-allocated device outputs (B, M2) / (B,), enqueued on `stream`; no sync.");
  m.def(
      "window_detections_batch_cuda",
      [](uint64_t probs, const std::string& probs_dtype, uint64_t masks, const std::string& masks_dtype,
         uint64_t valid_len, uint64_t scale, uint64_t offset, int64_t batch, int64_t num_rows, int64_t T,
         const std::vector<double>& thresholds, int64_t top_snippets, bool long_mode, double score_threshold,
         int64_t pre_nms_topk, const std::string& nms_method, double sigma, double iou_threshold, double min_score,
         int64_t max_detections, bool multiclass, bool validate, uint64_t out_segments, uint64_t out_score,
         uint64_t out_label, uint64_t out_count, uint64_t out_status, uint64_t stream) {
        Params p =
            cuda_params(num_rows, T, thresholds, top_snippets, long_mode, score_threshold, pre_nms_topk, validate);
        set_nms(p, nms_method, sigma, iou_threshold, min_score, max_detections, multiclass);
        const gsmt::DetectionOutputs out{device_pointer<double>(out_segments), device_pointer<double>(out_score),
                                         device_pointer<int32_t>(out_label), device_pointer<int32_t>(out_count),
                                         device_pointer<int32_t>(out_status)};
        const DType pd = parse_dtype(probs_dtype, "probs"), md = parse_dtype(masks_dtype, "masks");
        py::gil_scoped_release release;
        gsmt::window_detections_batch_cuda(device_pointer<const void>(probs), pd, device_pointer<const void>(masks),
                                           md, device_pointer<const int32_t>(valid_len),
                                           device_pointer<const double>(scale), device_pointer<const double>(offset),
                                           batch, p, out, device_pointer<void>(stream));
      },
      py::arg("probs"), py::arg("probs_dtype"), py::arg("masks"), py::arg("masks_dtype"), py::arg("valid_len"),
      py::arg("scale"), py::arg("offset"), py::arg("batch"), py::arg("num_rows"), py::arg("T"), py::arg("thresholds"),
      py::arg("top_snippets"), py::arg("long_mode"), py::arg("score_threshold"), py::arg("pre_nms_topk"),
      py::arg("nms_method"), py::arg("sigma"), py::arg("iou_threshold"), py::arg("min_score"),
      py::arg("max_detections"), py::arg("multiclass"), py::arg("validate"), py::arg("out_segments"),
      py::arg("out_score"), py::arg("out_label"), py::arg("out_count"), py::arg("out_status"), py::arg("stream"),
      "Device pointers in, caller-allocated device outputs (B, D, 2) / (B, D) / (B,), on `stream`; no sync.");
  m.def(
      "soft_nms_cuda",
      [](const DoubleArray& segments, const DoubleArray& scores, const LabelArray& labels, const std::string& method,
         double sigma, double iou_threshold, double min_score, int64_t max_seg_num, bool multiclass) {
        return soft_nms_common(&gsmt::soft_nms_cuda, segments, scores, labels, method, sigma, iou_threshold,
                               min_score, max_seg_num, multiclass);
      },
      py::arg("segments"), py::arg("scores"), py::arg("labels"), py::arg("method"), py::arg("sigma"),
      py::arg("iou_threshold"), py::arg("min_score"), py::arg("max_seg_num"), py::arg("multiclass"),
      "SoftNMS on the GPU with HOST arrays in and out (copies in, one thread block, copies back; synchronous).");
  m.def(
      "_cuda_shared_bytes",
      [](int64_t num_rows, int64_t T, int64_t top_snippets, int64_t pre_nms_topk) {
        Params p = make_params(num_rows, T, {0.5}, top_snippets, false, 0.0, pre_nms_topk, true);
        return gsmt::cuda_shared_bytes(p);
      },
      py::arg("num_rows"), py::arg("T"), py::arg("top_snippets"), py::arg("pre_nms_topk"));
#endif
}
