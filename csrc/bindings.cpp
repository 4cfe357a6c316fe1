// Python bindings of gsmt_fast._C: the only file that knows about Python. The ops themselves are plain C++
// (csrc/postprocess.h) implemented in csrc/cpu and csrc/cuda, so both device paths share one interface.
//
// Each op takes its inputs plus one settings object per stage (CandidateSettings, NmsSettings), built and validated
// once by their constructors. This file's validation is what keeps the ops in bounds (shapes, layouts, limits of
// the packed representations); the friendlier checks of the values users pass live in gsmt_fast.postprocess.native,
// and what only the data can tell (NaN, values outside [0, 1]) is reported by the ops as a per-window status.
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
#include <string>
#include <vector>

#include "gsmt_core.h"
#include "postprocess.h"

namespace py = pybind11;
using gsmt::CandidateParams;
using gsmt::DType;
using gsmt::NmsParams;

#ifndef GSMT_VERSION
#define GSMT_VERSION "unknown"
#endif

namespace {

// ---- settings: validated once, when constructed ----

// The candidate stage's settings; the window shape is added per call (with_shape).
struct CandidateSettings {
  CandidateParams params{};
  std::vector<double> thresholds;

  CandidateSettings(std::vector<double> mask_thresholds, int64_t top_snippets, bool long_mode, double score_threshold,
                    int64_t pre_nms_topk, bool validate)
      : thresholds(std::move(mask_thresholds)) {
    if (top_snippets < 1 || top_snippets > INT32_MAX) throw py::value_error("top_snippets must be in [1, 2^31)");
    if (pre_nms_topk < 1 || pre_nms_topk > INT32_MAX) throw py::value_error("pre_nms_topk must be in [1, 2^31)");
    if (thresholds.empty()) throw py::value_error("at least one mask threshold is required");
    if (std::isnan(score_threshold)) throw py::value_error("score_threshold must not be NaN");
    if (const char* error = gsmt::set_thresholds(params, thresholds.data(), static_cast<int64_t>(thresholds.size()))) {
      throw py::value_error(error);
    }
    params.top_snippets = static_cast<int32_t>(top_snippets);
    params.long_mode = long_mode ? 1 : 0;
    params.validate = validate ? 1 : 0;
    params.score_threshold = score_threshold;
    params.pre_nms_topk = static_cast<int32_t>(pre_nms_topk);
  }

  CandidateParams with_shape(int64_t num_rows, int64_t T) const {
    if (num_rows < 2 || num_rows - 1 > gsmt::kMaxClasses) {
      throw py::value_error("probs must have K+1 rows with 1 <= K <= 2^24 - 1, got " + std::to_string(num_rows));
    }
    if (T < 0 || T > gsmt::kMaxSnippets) throw py::value_error("T must be < 2^20, got " + std::to_string(T));
    CandidateParams p = params;
    p.num_rows = num_rows;
    p.T = T;
    return p;
  }
};

struct NmsSettings {
  NmsParams params{};
  std::string method;

  NmsSettings(std::string nms_method, double sigma, double iou_threshold, double min_score, int64_t max_detections,
              bool multiclass)
      : method(std::move(nms_method)) {
    if (method == "gaussian") {
      params.method = gsmt::kGaussian;
    } else if (method == "linear") {
      params.method = gsmt::kLinear;
    } else if (method == "hard") {
      params.method = gsmt::kHard;
    } else {
      throw py::value_error("unknown SoftNMS method '" + method + "'; valid methods: gaussian, linear, hard");
    }
    if (!(sigma > 0.0) || !std::isfinite(sigma)) throw py::value_error("sigma must be finite and > 0");
    if (!std::isfinite(iou_threshold) || !std::isfinite(min_score)) {
      throw py::value_error("iou_threshold and min_score must be finite");
    }
    if (max_detections < 1 || max_detections > INT32_MAX) throw py::value_error("max_detections must be in [1, 2^31)");
    params.sigma = sigma;
    params.iou_threshold = iou_threshold;
    params.min_score = min_score;
    params.max_detections = static_cast<int32_t>(max_detections);
    params.multiclass = multiclass ? 1 : 0;
  }
};

// ---- host inputs ----

std::string shape_of(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  return s + (a.ndim() == 1 ? ",)" : ")");
}

DType host_dtype(const py::array& a, const char* what) {
  const py::dtype dt = a.dtype();
  if (dt.kind() == 'f' && dt.itemsize() == 4) return DType::kFloat32;
  if (dt.kind() == 'f' && dt.itemsize() == 2) return DType::kFloat16;
  throw py::type_error(std::string(what) + " must be float16 or float32, got " + std::string(py::str(dt)));
}

using DoubleArray = py::array_t<double, py::array::c_style | py::array::forcecast>;
using LabelArray = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

// The host arrays of a window batch, checked so that the op stays in bounds: dtypes, matching shapes, C order.
struct HostBatch {
  gsmt::WindowBatch in{};
  int64_t num_rows = 0, T = 0;
};

HostBatch host_batch(const py::array& probs, const py::array& masks, const py::array_t<int32_t>& valid_len) {
  HostBatch h;
  h.in.probs_dtype = host_dtype(probs, "probs");
  h.in.masks_dtype = host_dtype(masks, "masks");
  if (probs.ndim() != 3) throw py::value_error("probs must have shape (B, K+1, T), got " + shape_of(probs));
  h.in.batch = probs.shape(0);
  h.num_rows = probs.shape(1);
  h.T = probs.shape(2);
  if (masks.ndim() != 3 || masks.shape(0) != h.in.batch || masks.shape(1) != h.T || masks.shape(2) != h.T) {
    throw py::value_error("masks must have shape (B, T, T) matching probs " + shape_of(probs) + ", got " +
                          shape_of(masks));
  }
  if (valid_len.ndim() != 1 || valid_len.shape(0) != h.in.batch) {
    throw py::value_error("valid_len must have shape (B,) with B = " + std::to_string(h.in.batch));
  }
  const auto c_contiguous = py::array::c_style;
  if (!(probs.flags() & c_contiguous) || !(masks.flags() & c_contiguous) || !(valid_len.flags() & c_contiguous)) {
    throw py::value_error("probs, masks and valid_len must be C-contiguous");
  }
  h.in.probs = probs.data();
  h.in.masks = masks.data();
  h.in.valid_len = valid_len.data();
  return h;
}

using FloatArray = py::array_t<float, py::array::c_style>;

// The optional boundary distances (B, 2, T) float32 of a model with the boundary head: nullptr for None. The array
// must stay alive for the call (the caller's reference does that).
const float* host_boundaries(const py::object& boundaries, int64_t batch, int64_t T) {
  if (boundaries.is_none()) return nullptr;
  if (!py::isinstance<FloatArray>(boundaries)) {
    throw py::type_error("boundaries must be a C-contiguous float32 array (B, 2, T) or None");
  }
  const FloatArray a = boundaries.cast<FloatArray>();
  if (a.ndim() != 3 || a.shape(0) != batch || a.shape(1) != 2 || a.shape(2) != T) {
    throw py::value_error("boundaries must have shape (B, 2, T) = (" + std::to_string(batch) + ", 2, " +
                          std::to_string(T) + "), got " + shape_of(a));
  }
  if (!(a.flags() & py::array::c_style)) throw py::value_error("boundaries must be C-contiguous");
  return a.data();
}

gsmt::TimeMaps host_time_maps(const DoubleArray& scale, const DoubleArray& offset, int64_t batch) {
  for (const DoubleArray* a : {&scale, &offset}) {
    if (a->ndim() != 1 || a->shape(0) != batch) {
      throw py::value_error("scale and offset must have shape (B,) with B = " + std::to_string(batch));
    }
  }
  return gsmt::TimeMaps{scale.data(), offset.data()};
}

py::tuple window_candidates_cpu(const py::array& probs, const py::array& masks,
                                const py::array_t<int32_t>& valid_len, const CandidateSettings& settings,
                                int num_threads, const py::object& boundaries) {
  HostBatch h = host_batch(probs, masks, valid_len);
  h.in.boundaries = host_boundaries(boundaries, h.in.batch, h.T);
  const CandidateParams p = settings.with_shape(h.num_rows, h.T);
  const py::ssize_t B = h.in.batch, M2 = p.pre_nms_topk;
  py::array_t<int32_t> start({B, M2}), end({B, M2}), label({B, M2}), count(B), status(B);
  py::array_t<double> score({B, M2}), units({B, M2, py::ssize_t{2}});
  const gsmt::CandidateOutputs out{start.mutable_data(), end.mutable_data(), label.mutable_data(),
                                   score.mutable_data(), units.mutable_data(), count.mutable_data(),
                                   status.mutable_data()};
  {
    py::gil_scoped_release release;
    gsmt::window_candidates_cpu(h.in, p, out, num_threads);
  }
  return py::make_tuple(start, end, label, score, units, count, status);
}

py::tuple window_detections_cpu(const py::array& probs, const py::array& masks,
                                const py::array_t<int32_t>& valid_len, const DoubleArray& scale,
                                const DoubleArray& offset, const CandidateSettings& candidates,
                                const NmsSettings& nms, int num_threads, const py::object& boundaries) {
  HostBatch h = host_batch(probs, masks, valid_len);
  h.in.boundaries = host_boundaries(boundaries, h.in.batch, h.T);
  const gsmt::TimeMaps time = host_time_maps(scale, offset, h.in.batch);
  const CandidateParams p = candidates.with_shape(h.num_rows, h.T);
  const py::ssize_t B = h.in.batch, D = nms.params.max_detections;
  py::array_t<double> segments({B, D, py::ssize_t{2}}), score({B, D});
  py::array_t<int32_t> label({B, D}), count(B), status(B);
  const gsmt::DetectionOutputs out{segments.mutable_data(), score.mutable_data(), label.mutable_data(),
                                   count.mutable_data(), status.mutable_data()};
  {
    py::gil_scoped_release release;
    gsmt::window_detections_cpu(h.in, time, p, nms.params, out, num_threads);
  }
  return py::make_tuple(segments, score, label, count, status);
}

// SoftNMS on the host arrays segments (N, 2), scores (N,), labels (N,) -> (segments (M, 2), scores (M,), labels (M,)),
// by `function` (the CPU op, or the CUDA op that copies the arrays to the GPU and back).
using NmsFunction = int64_t (*)(const double*, const double*, const int64_t*, int64_t, const NmsParams&, int64_t*,
                                double*);

template <NmsFunction function>
py::tuple soft_nms(const DoubleArray& segments, const DoubleArray& scores, const LabelArray& labels,
                   const NmsSettings& nms) {
  const py::ssize_t n = scores.ndim() == 1 ? scores.shape(0) : -1;
  if (n < 0 || segments.ndim() != 2 || segments.shape(0) != n || segments.shape(1) != 2 || labels.ndim() != 1 ||
      labels.shape(0) != n) {
    throw py::value_error("soft_nms expects segments (N, 2), scores (N,) and labels (N,)");
  }
  std::vector<int64_t> index(static_cast<size_t>(n));
  std::vector<double> picked_scores(static_cast<size_t>(n));
  int64_t m = 0;
  {
    py::gil_scoped_release release;
    m = function(segments.data(), scores.data(), labels.data(), n, nms.params, index.data(), picked_scores.data());
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
// ---- device inputs: raw pointers from torch tensors (data_ptr()) ----

template <class T>
T* device_pointer(uint64_t address) {
  return reinterpret_cast<T*>(static_cast<uintptr_t>(address));
}

DType device_dtype(const std::string& name, const char* what) {
  if (name == "float32") return DType::kFloat32;
  if (name == "float16") return DType::kFloat16;
  throw py::type_error(std::string(what) + " must be float16 or float32, got " + name);
}

// A batch of windows on the GPU: the pointers, dtypes and shape the caller read off its tensors.
struct DeviceBatch {
  gsmt::WindowBatch in{};
  int64_t num_rows, T;

  // boundaries: a (B, 2, T) float32 device pointer, or 0 for a model without the boundary head.
  DeviceBatch(uint64_t probs, const std::string& probs_dtype, uint64_t masks, const std::string& masks_dtype,
              uint64_t valid_len, int64_t batch, int64_t num_rows_, int64_t T_, uint64_t boundaries)
      : num_rows(num_rows_), T(T_) {
    if (batch < 0 || batch > INT32_MAX) throw py::value_error("batch must be in [0, 2^31)");
    in = gsmt::WindowBatch{device_pointer<const void>(probs), device_dtype(probs_dtype, "probs"),
                           device_pointer<const void>(masks), device_dtype(masks_dtype, "masks"),
                           device_pointer<const int32_t>(valid_len), batch,
                           boundaries == 0 ? nullptr : device_pointer<const float>(boundaries)};
  }
};

gsmt::CandidateOutputs candidate_outputs(uint64_t start, uint64_t end, uint64_t label, uint64_t score, uint64_t units,
                                         uint64_t count, uint64_t status) {
  return {device_pointer<int32_t>(start), device_pointer<int32_t>(end), device_pointer<int32_t>(label),
          device_pointer<double>(score), device_pointer<double>(units), device_pointer<int32_t>(count),
          device_pointer<int32_t>(status)};
}

gsmt::DetectionOutputs detection_outputs(uint64_t segments, uint64_t score, uint64_t label, uint64_t count,
                                         uint64_t status) {
  return {device_pointer<double>(segments), device_pointer<double>(score), device_pointer<int32_t>(label),
          device_pointer<int32_t>(count), device_pointer<int32_t>(status)};
}

void window_candidates_cuda(const DeviceBatch& batch, const CandidateSettings& settings,
                            const gsmt::CandidateOutputs& out, uint64_t stream) {
  const CandidateParams p = settings.with_shape(batch.num_rows, batch.T);
  py::gil_scoped_release release;
  gsmt::window_candidates_cuda(batch.in, p, out, device_pointer<void>(stream));
}

void window_detections_cuda(const DeviceBatch& batch, uint64_t scale, uint64_t offset,
                            const CandidateSettings& candidates, const NmsSettings& nms,
                            const gsmt::DetectionOutputs& out, uint64_t stream) {
  const CandidateParams p = candidates.with_shape(batch.num_rows, batch.T);
  const gsmt::TimeMaps time{device_pointer<const double>(scale), device_pointer<const double>(offset)};
  py::gil_scoped_release release;
  gsmt::window_detections_cuda(batch.in, time, p, nms.params, out, device_pointer<void>(stream));
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

  py::class_<CandidateSettings>(m, "CandidateSettings",
                                "Settings of the candidate stage (validated here, once): mask thresholds, M1, short/"
                                "long mode, the score threshold, M2, and whether the ops check the inputs' values.")
      .def(py::init<std::vector<double>, int64_t, bool, double, int64_t, bool>(), py::arg("thresholds"),
           py::arg("top_snippets"), py::arg("long_mode"), py::arg("score_threshold"), py::arg("pre_nms_topk"),
           py::arg("validate") = true)
      .def_readonly("thresholds", &CandidateSettings::thresholds)
      .def_property_readonly("pre_nms_topk", [](const CandidateSettings& s) { return s.params.pre_nms_topk; })
      .def_property_readonly("validate", [](const CandidateSettings& s) { return s.params.validate != 0; });
  py::class_<NmsSettings>(m, "NmsSettings", "SoftNMS settings (validated here, once).")
      .def(py::init<std::string, double, double, double, int64_t, bool>(), py::arg("method"), py::arg("sigma"),
           py::arg("iou_threshold"), py::arg("min_score"), py::arg("max_detections"), py::arg("multiclass"))
      .def_readonly("method", &NmsSettings::method)
      .def_property_readonly("max_detections", [](const NmsSettings& s) { return s.params.max_detections; });

  m.def("window_candidates_cpu", &window_candidates_cpu, py::arg("probs"), py::arg("masks"), py::arg("valid_len"),
        py::arg("settings"), py::arg("num_threads") = 0, py::arg("boundaries") = py::none(),
        "Candidates of B windows -> (start, end, label, score, units, count, status); boundaries (B, 2, T) float32 "
        "switches to boundary candidates. See csrc/postprocess.h.");
  m.def("window_detections_cpu", &window_detections_cpu, py::arg("probs"), py::arg("masks"), py::arg("valid_len"),
        py::arg("scale"), py::arg("offset"), py::arg("candidates"), py::arg("nms"), py::arg("num_threads") = 0,
        py::arg("boundaries") = py::none(),
        "Candidates + SoftNMS in seconds for B windows -> (segments, score, label, count, status).");
  m.def("soft_nms_cpu", &soft_nms<&gsmt::soft_nms_cpu>, py::arg("segments"), py::arg("scores"), py::arg("labels"),
        py::arg("nms"), "SoftNMS on the CPU -> (segments (M, 2), scores (M,), labels (M,) int64).");
  m.def(
      "_deterministic_exp", [](double x) { return gsmt::det_exp(x); }, py::arg("x"),
      "The exp() used by gaussian SoftNMS on both CPU and GPU (exposed for tests).");
  m.def(
      "_threshold_cutoff", [](double theta) { return gsmt::threshold_cutoff(theta); }, py::arg("theta"),
      "Smallest float32 c with float64(c) > theta (exposed for tests).");

#ifdef GSMT_WITH_CUDA
  m.def("cuda_device_count", &gsmt::cuda_device_count, "Number of visible CUDA devices (0 without driver/GPU).");
  py::class_<DeviceBatch>(m, "DeviceBatch", "Device pointers, dtypes and shape of B windows on the GPU.")
      .def(py::init<uint64_t, const std::string&, uint64_t, const std::string&, uint64_t, int64_t, int64_t,
                    int64_t, uint64_t>(),
           py::arg("probs"), py::arg("probs_dtype"), py::arg("masks"), py::arg("masks_dtype"), py::arg("valid_len"),
           py::arg("batch"), py::arg("num_rows"), py::arg("T"), py::arg("boundaries") = 0);
  py::class_<gsmt::CandidateOutputs>(m, "CandidateOutputs", "Device pointers of the candidate outputs.")
      .def(py::init(&candidate_outputs), py::arg("start"), py::arg("end"), py::arg("label"), py::arg("score"),
           py::arg("units"), py::arg("count"), py::arg("status"));
  py::class_<gsmt::DetectionOutputs>(m, "DetectionOutputs", "Device pointers of the detection outputs.")
      .def(py::init(&detection_outputs), py::arg("segments"), py::arg("score"), py::arg("label"), py::arg("count"),
           py::arg("status"));
  m.def("window_candidates_cuda", &window_candidates_cuda, py::arg("batch"), py::arg("settings"), py::arg("out"),
        py::arg("stream"), "Enqueues the candidate op on `stream` (caller-allocated (B, M2) / (B,) outputs); no sync.");
  m.def("window_detections_cuda", &window_detections_cuda, py::arg("batch"), py::arg("scale"), py::arg("offset"),
        py::arg("candidates"), py::arg("nms"), py::arg("out"), py::arg("stream"),
        "Enqueues the detection op on `stream` (caller-allocated (B, D, 2) / (B, D) / (B,) outputs); no sync.");
  m.def("soft_nms_cuda", &soft_nms<&gsmt::soft_nms_cuda>, py::arg("segments"), py::arg("scores"), py::arg("labels"),
        py::arg("nms"),
        "SoftNMS on the GPU with HOST arrays in and out (copies in, one thread block, copies back; synchronous).");
  m.def(
      "_cuda_shared_bytes",
      [](int64_t num_rows, int64_t T, int64_t top_snippets, int64_t pre_nms_topk) {
        const CandidateSettings settings({0.5}, top_snippets, false, 0.0, pre_nms_topk, true);
        return gsmt::cuda_shared_bytes(settings.with_shape(num_rows, T));
      },
      py::arg("num_rows"), py::arg("T"), py::arg("top_snippets"), py::arg("pre_nms_topk"));
#endif
}
