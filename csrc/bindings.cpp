// Python bindings of gsmt_fast._C. Post-processing ops are declared in csrc/cpu and csrc/cuda;
// this file only binds them, so both device paths share one interface.
#include <pybind11/pybind11.h>

namespace py = pybind11;

#ifndef GSMT_VERSION
#define GSMT_VERSION "unknown"
#endif

PYBIND11_MODULE(_C, m) {
  m.doc() = "gsmt_fast C++/CUDA extension";
  py::dict info;
  info["version"] = GSMT_VERSION;
#ifdef GSMT_WITH_CUDA
  info["cuda"] = true;
#else
  info["cuda"] = false;
#endif
  m.attr("build_info") = info;
}
