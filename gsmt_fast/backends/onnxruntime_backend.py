"""``onnxruntime`` backend: the exported network (:mod:`gsmt_fast.export`) on ONNX Runtime + the C++/CUDA
post-processing of ``gsmt_fast._C`` (docs/DEPLOYING.md).

The ONNX file comes from the export cache (:func:`gsmt_fast.export.cached_onnx`: keyed by checkpoint digest,
precision, opset and package versions; a stale or foreign entry is rebuilt), or from ``onnx_path``. Execution
providers: the CPU one for ``device="cpu"``; on a CUDA device the TensorRT and CUDA providers when the installed
onnxruntime has them (``onnxruntime-gpu``), with inputs and outputs bound to torch CUDA tensors so that the outputs go
to the CUDA post-processing op without a host round trip.

Precisions: ``fp32`` (the default; equals the reference model within float rounding), ``fp16`` (the export's 16-bit
trunk; ONNX Runtime's CPU provider runs it by casting to float32 around the operators that have no fp16 kernel, so on
a CPU it measures accuracy, not speed) and ``int8`` (static QDQ quantization calibrated on real windows: needs a
calibrated model in the cache, made by ``gsmt-fast export --precision int8 --calibration DIR``).
"""

from __future__ import annotations

import numpy as np
import torch

from ..checkpoint import CheckpointMeta
from ..model import GSMT
from ..postprocess import native
from .base import Backend, ExtensionPostprocessing

PRECISIONS = ("fp32", "fp16", "int8")
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


def import_onnxruntime():
    """The ``onnxruntime`` module, or an ImportError that says which extra to install."""
    try:
        import onnxruntime
    except ImportError as e:
        raise ImportError("the onnxruntime backend needs onnx and onnxruntime: pip install 'gsmt_fast[onnx]'") from e
    return onnxruntime


def onnxruntime_available() -> bool:
    """onnxruntime, onnx and onnxscript (the exporter's) are installed; looked up without importing them."""
    import importlib.util

    return all(importlib.util.find_spec(name) is not None for name in ("onnxruntime", "onnx", "onnxscript"))


def execution_providers(device: torch.device, available) -> list[str]:
    """The execution providers for ``device`` among the ``available`` ones, in order of preference; raises when a
    CUDA device is asked for and the installed onnxruntime has no GPU provider."""
    if device.type == "cpu":
        return ["CPUExecutionProvider"]
    if device.type != "cuda":
        raise ValueError(f"the onnxruntime backend runs on cpu or cuda devices, got {device}")
    gpu = [p for p in GPU_PROVIDERS if p in available]
    if not gpu:
        raise RuntimeError(f"device {device} asked for, but the installed onnxruntime has no GPU execution provider "
                           f"(available: {list(available)}); install onnxruntime-gpu, or use device='cpu'")
    return gpu


class OnnxRuntimeBackend(ExtensionPostprocessing, Backend):
    name = "onnxruntime"

    def __init__(self, model: GSMT, device=None, precision: str | None = None, meta: CheckpointMeta | None = None,
                 *, onnx_path=None, cache_dir=None, opset: int | None = None, num_threads: int | None = None):
        ort = import_onnxruntime()
        if not native.available():
            raise RuntimeError("the onnxruntime backend needs the compiled extension gsmt_fast._C (reinstall "
                               "gsmt_fast with a C++ compiler), or use backend='reference'")
        precision = precision or "fp32"
        if precision not in PRECISIONS:
            raise ValueError(f"the onnxruntime backend supports precision {PRECISIONS}, got {precision!r}")
        self.device = torch.device(device or "cpu")
        providers = execution_providers(self.device, ort.get_available_providers())
        self.precision = precision
        self.num_threads = num_threads
        self.model = model.eval()
        if meta is None:
            meta = CheckpointMeta(model.cfg, [f"class_{i}" for i in range(model.cfg.num_classes)])
        if onnx_path is None:
            from ..export import cached_onnx

            onnx_path = cached_onnx(self.model, meta, precision, opset=opset, cache_dir=cache_dir)
        self.onnx_path = onnx_path
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if num_threads:
            options.intra_op_num_threads = int(num_threads)
        options.log_severity_level = 3  # errors only: constant-folding notes are not the user's business
        self.session = ort.InferenceSession(str(onnx_path), options, providers=providers)
        self.providers = self.session.get_providers()
        from ..export import output_names

        # probs, masks (and the boundary distances of a model with the boundary head): a file from elsewhere
        # (onnx_path) must have exactly the outputs this model's post-processing takes.
        self.output_names = list(output_names(model.cfg))
        found = [o.name for o in self.session.get_outputs()]
        if found != self.output_names:
            raise ValueError(f"{onnx_path}: the ONNX graph's outputs are {found}, but this model needs "
                             f"{self.output_names} (was it exported from this checkpoint?)")

    def forward(self, windows, valid_len):
        """Probabilities and masks (and the boundary distances of a model with the boundary head): NumPy on the CPU
        provider; torch CUDA tensors on a GPU provider (bound in place, so the CUDA post-processing reads them on the
        device)."""
        if self.device.type == "cuda":
            return self._forward_cuda(windows, valid_len)
        x = np.ascontiguousarray(windows, dtype=np.float32)
        n = np.ascontiguousarray(valid_len, dtype=np.int64)
        return tuple(self.session.run(self.output_names, {"features": x, "valid_len": n}))

    def _forward_cuda(self, windows, valid_len):
        from ..export import session_outputs_shapes

        x = torch.as_tensor(windows, dtype=torch.float32).to(self.device).contiguous()
        n = torch.as_tensor(valid_len, dtype=torch.int64).to(self.device).contiguous()
        shapes = session_outputs_shapes(self.model_cfg, len(x))
        outputs = {name: torch.empty(shape, dtype=torch.float32, device=self.device) for name, shape in shapes.items()}
        binding = self.session.io_binding()
        index = self.device.index or 0
        binding.bind_input("features", "cuda", index, np.float32, list(x.shape), x.data_ptr())
        binding.bind_input("valid_len", "cuda", index, np.int64, list(n.shape), n.data_ptr())
        for name, tensor in outputs.items():
            binding.bind_output(name, "cuda", index, np.float32, list(tensor.shape), tensor.data_ptr())
        torch.cuda.current_stream(self.device).synchronize()  # the inputs are written before ONNX Runtime reads
        self.session.run_with_iobinding(binding)
        return tuple(outputs[name] for name in self.output_names)
