"""Export of the network to ONNX (docs/DEPLOYING.md): ``gsmt_fast.export_onnx`` and ``gsmt-fast export``.

The exported graph is the network only — ``features (B, T, d_in)`` float32 and ``valid_len (B,)`` int64 in, class
probabilities ``probs (B, K+1, T)`` and masks ``masks (B, T, T)`` float32 out, exactly what
:meth:`gsmt_fast.GSMT.predict` returns — with a dynamic batch dimension. A model with the boundary head (the
boundary-refined variant, docs/DESIGN.md "Boundary candidates") has a third output, ``boundaries (B, 2, T)`` float32
(:func:`output_names`; the metadata's ``outputs`` lists the graph's outputs). Post-processing stays in the compiled
extension (``gsmt_fast._C``), never in the graph, so every backend shares one definition of a detection.

Why the dynamo exporter (``torch.onnx.export(..., dynamo=True)``): it records the model's shapes symbolically, so the
graph is exact at every batch size and with padded windows; the TorchScript tracer bakes the traced batch size into
the attention's reshapes. Every export is checked with ``onnx.checker`` (full check) and with
:func:`check_tensorrt_ops` (only operators TensorRT's ONNX parser supports).

Precisions: ``fp32``; ``fp16``/``bf16`` (the trunk in 16 bits, LayerNorms, the output layers — class head, the mask
head's final k=1 convolution and the boundary head — and the outputs in float32, as ``predict_bf16`` does: the logits
the post-processing thresholds are never rounded to 16 bits); ``int8`` (ONNX Runtime only): the fp32 graph with
static QDQ quantization calibrated on real windows (:func:`quantize_int8`), output layers left in float32.

Metadata (``metadata_props``, all prefixed ``gsmt_fast.``): the checkpoint digest (:func:`checkpoint_digest`), the
model config, class names, grid, input mode and inference defaults (JSON), precision, opset, the batch range and the
package versions that produced the file. :func:`read_metadata` reads them back; the export cache
(:func:`cached_onnx`) trusts an entry only when they match what it would write.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .checkpoint import CheckpointMeta, read_checkpoint
from .files import atomic_path
from .model import GSMT

INPUT_NAMES = ("features", "valid_len")
OUTPUT_NAMES = ("probs", "masks")  # the paper model's outputs
BOUNDARY_OUTPUT = "boundaries"  # the third output of a model with the boundary head
EXPORT_PRECISIONS = ("fp32", "fp16", "bf16")  # exported from PyTorch
PRECISIONS = EXPORT_PRECISIONS + ("int8",)  # int8: the fp32 graph quantized with calibration (ONNX Runtime)
# TensorRT 10's ONNX parser accepts opsets 9–20 (onnx-tensorrt docs/operators.md); 20 is the newest it takes.
DEFAULT_OPSET = 20
MIN_OPSET = 18  # LayerNormalization needs 17; the exporter's translations need 18
BF16_MIN_OPSET = 22  # ONNX Conv accepts bfloat16 from opset 22 on
DEFAULT_BATCH = (1, 64, 1024)  # dynamic batch range (min, opt, max); also the TensorRT optimisation profile
METADATA_PREFIX = "gsmt_fast."
FORMAT_VERSION = 1
INSTALL_HINT = "install the onnx extra: pip install 'gsmt_fast[onnx]' (onnx, onnxruntime, onnxscript)"

# Operators TensorRT 10's ONNX parser supports (onnx-tensorrt, docs/operators.md, "Supported: Y"). Every exported
# graph is walked against this set, so a graph that TensorRT cannot parse fails at export time, here, not on a GPU
# machine. docs/DEPLOYING.md lists the subset the GSMT graphs use.
TENSORRT_ONNX_OPS = frozenset("""
Abs Acos Acosh Add And ArgMax ArgMin Asin Asinh Atan Atanh AveragePool BatchNormalization Cast CastLike Ceil Celu
Clip Concat Constant ConstantOfShape Conv ConvTranspose Cos Cosh CumSum DeformConv DepthToSpace DequantizeLinear Div
Dropout Einsum Elu Equal Erf Exp Expand EyeLike Flatten Floor Gather GatherElements GatherND Gelu Gemm
GlobalAveragePool GlobalLpPool GlobalMaxPool Greater GreaterOrEqual GridSample GroupNormalization GRU HardSigmoid
HardSwish Hardmax Identity If ImageScaler InstanceNormalization IsInf IsNaN LayerNormalization LeakyRelu Less
LessOrEqual Log LogSoftmax Loop LRN LSTM LpNormalization LpPool MatMul Max MaxPool Mean MeanVarianceNormalization Min
Mish Mod Mul Neg NonMaxSuppression NonZero Not OneHot Or Pad ParametricSoftplus Pow PRelu QuantizeLinear RandomNormal
RandomNormalLike RandomUniform RandomUniformLike Range Reciprocal ReduceLogSum ReduceLogSumExp ReduceMax ReduceMean
ReduceMin ReduceProd ReduceSum ReduceSumSquare Relu Reshape Resize ReverseSequence RNN RoiAlign Round ScaledTanh Scan
Scatter ScatterElements ScatterND Selu Shape Shrink Sigmoid Sign Sin Sinh Size Slice Softmax Softplus Softsign
SpaceToDepth Split Sqrt Squeeze Sub Sum Tan Tanh ThresholdedRelu Tile TopK Transpose Trilu Unsqueeze Upsample Where
Xor
""".split())
TENSORRT_MAX_OPSET = 20


# ---------------------------------------------------------------------------------------------------- the network
class _Float32LayerNorm(nn.Module):
    """A LayerNorm computed in float32 inside a 16-bit trunk (as autocast does): the variance of C values is not
    something to accumulate in 16 bits."""

    def __init__(self, norm: nn.LayerNorm):
        super().__init__()
        self.norm = norm.float()

    def forward(self, x):
        return self.norm(x.float()).to(x.dtype)


def output_names(cfg) -> tuple[str, ...]:
    """The graph's output names for a model config: :data:`OUTPUT_NAMES`, plus :data:`BOUNDARY_OUTPUT` with the
    boundary head."""
    return OUTPUT_NAMES + ((BOUNDARY_OUTPUT,) if getattr(cfg, "boundary_head", False) else ())


class ExportedNetwork(nn.Module):
    """What the ONNX graph computes: ``(features float32 (B, T, d_in), valid_len int64 (B,))`` → ``(probs, masks)``
    float32 (and ``boundaries`` with the boundary head), as :meth:`GSMT.predict`. ``fp16``/``bf16``: a copy of the
    model whose trunk runs in that dtype, with float32 LayerNorms and float32 output layers (module docstring)."""

    def __init__(self, model: GSMT, precision: str = "fp32"):
        super().__init__()
        if precision not in EXPORT_PRECISIONS:
            raise ValueError(f"export precision must be one of {EXPORT_PRECISIONS}, got {precision!r}")
        self.precision = precision
        if precision == "fp32":
            self.model = model.eval()
            return
        dtype = torch.float16 if precision == "fp16" else torch.bfloat16
        low = copy.deepcopy(model).eval().to(dtype)
        for block in low.blocks:
            block.norm1, block.norm2 = _Float32LayerNorm(block.norm1), _Float32LayerNorm(block.norm2)
        low.norm = _Float32LayerNorm(low.norm)
        low.cls_head.float()
        low.mask_head[-1].float()
        if low.boundary_head is not None:
            low.boundary_head.float()
        self.model, self.dtype = low, dtype

    def forward(self, features: torch.Tensor, valid_len: torch.Tensor):
        if self.precision == "fp32":
            return self.model.predict(features, valid_len)
        m = self.model
        e = m.embed(features.to(self.dtype), valid_len)
        h = m.mask_head[:-1](e)
        logits = m.cls_head(e.float())
        out = (F.softmax(logits, dim=1), torch.sigmoid(m.mask_head[-1](h.float())))
        if m.boundary_head is None:
            return out
        return (*out, F.softplus(m.boundary_head(h.float())))


# ---------------------------------------------------------------------------------------------------- identity
def checkpoint_digest(model: GSMT, meta: CheckpointMeta) -> str:
    """sha256 of what a checkpoint defines: its metadata JSON and every weight (name, dtype, shape, bytes), in name
    order. Equal for two files with the same content, different as soon as one weight or setting differs; the
    export caches are keyed by it."""
    h = hashlib.sha256(meta.to_json().encode())
    state = model.state_dict()
    for name in sorted(state):
        t = state[name].detach().to("cpu").contiguous()
        h.update(f"\0{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def package_versions(precision: str = "fp32") -> dict[str, str]:
    """Versions of the packages whose code shapes the exported file (the cache key includes them)."""
    import onnx

    from . import __version__

    versions = {"gsmt_fast": __version__, "torch": torch.__version__.split("+")[0], "onnx": onnx.__version__}
    with contextlib.suppress(ImportError):
        import onnxscript

        versions["onnxscript"] = onnxscript.__version__
    if precision == "int8":
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    return versions


def parse_batch(batch) -> tuple[int, int, int]:
    """``"MIN:OPT:MAX"``, a 3-sequence or None (:data:`DEFAULT_BATCH`) → a checked (min, opt, max)."""
    if batch is None:
        return DEFAULT_BATCH
    if isinstance(batch, str):
        parts = batch.split(":")
        if len(parts) != 3:
            raise ValueError(f"batch range must be MIN:OPT:MAX, got {batch!r}")
        try:
            batch = [int(p) for p in parts]
        except ValueError:
            raise ValueError(f"batch range must be three integers MIN:OPT:MAX, got {batch!r}") from None
    lo, opt, hi = (int(b) for b in batch)
    if not 1 <= lo <= opt <= hi:
        raise ValueError(f"batch range needs 1 <= MIN <= OPT <= MAX, got {lo}:{opt}:{hi}")
    return lo, opt, hi


def _check_opset(opset: int | None, precision: str = "fp32") -> int:
    """The opset to export at: default :data:`DEFAULT_OPSET`; bf16 needs opset >= 22 (the first where ONNX's Conv
    takes bfloat16)."""
    least = BF16_MIN_OPSET if precision == "bf16" else MIN_OPSET
    opset = max(DEFAULT_OPSET, least) if opset is None else int(opset)
    if opset < least:
        raise ValueError(f"opset {opset} is too old for a {precision} graph: it needs opset >= {least}")
    return opset


def _load_model(ckpt) -> tuple[GSMT, CheckpointMeta]:
    tensors, meta = read_checkpoint(ckpt)
    model = GSMT(meta.model)
    model.load_state_dict(tensors, strict=True)
    return model.eval(), meta


def _require_onnx():
    try:
        import onnx  # noqa: F401
    except ImportError as e:
        raise ImportError(f"ONNX export needs the onnx package: {INSTALL_HINT}") from e


# ---------------------------------------------------------------------------------------------------- checks
def check_tensorrt_ops(model_proto) -> list[str]:
    """The graph's operator types, sorted; raises ValueError naming every node (subgraphs included) whose operator
    TensorRT's ONNX parser does not support, or whose domain is not the default ONNX domain."""
    found, bad = set(), []

    def walk(graph):
        for node in graph.node:
            found.add(node.op_type)
            if node.domain not in ("", "ai.onnx") or node.op_type not in TENSORRT_ONNX_OPS:
                bad.append(f"{node.domain + '::' if node.domain else ''}{node.op_type} ({node.name or 'unnamed'})")
            for attr in node.attribute:
                if attr.g is not None and attr.g.node:
                    walk(attr.g)
                for g in attr.graphs:
                    walk(g)

    walk(model_proto.graph)
    for function in model_proto.functions:  # local functions are inlined by the parser: their nodes count too
        walk(function)
    if bad:
        raise ValueError(f"operators TensorRT's ONNX parser does not support: {', '.join(sorted(set(bad)))}")
    return sorted(found)


def read_metadata(path_or_proto) -> dict:
    """The ``gsmt_fast.*`` metadata of an exported ONNX file (or ModelProto), JSON values decoded."""
    import onnx

    proto = path_or_proto
    if not isinstance(path_or_proto, onnx.ModelProto):
        proto = onnx.load(str(path_or_proto), load_external_data=False)
    out = {}
    for prop in proto.metadata_props:
        if prop.key.startswith(METADATA_PREFIX):
            key = prop.key[len(METADATA_PREFIX):]
            try:
                out[key] = json.loads(prop.value)
            except json.JSONDecodeError:
                out[key] = prop.value
    return out


def _metadata(model: GSMT, meta: CheckpointMeta, precision: str, opset: int, batch, extra=None) -> dict:
    return {
        "format_version": FORMAT_VERSION,
        "checkpoint_sha256": checkpoint_digest(model, meta),
        "precision": precision,
        "opset": opset,
        "batch": list(batch),
        "inputs": list(INPUT_NAMES),
        "outputs": list(output_names(meta.model)),
        "model": meta.model.to_dict(),
        "class_names": list(meta.class_names),
        "grid": meta.grid.to_dict(),
        "input_mode": meta.input_mode,
        "inference": meta.inference.to_dict(),
        "versions": package_versions(precision),
        **(extra or {}),
    }


def _set_metadata(proto, values: dict) -> None:
    keep = [p for p in proto.metadata_props if not p.key.startswith(METADATA_PREFIX)]
    del proto.metadata_props[:]
    proto.metadata_props.extend(keep)
    for key, value in values.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = METADATA_PREFIX + key, json.dumps(value)


def _save(proto, out: Path) -> Path:
    """Full ``onnx.checker`` check, then one self-contained file written atomically."""
    import onnx

    onnx.checker.check_model(proto, full_check=True)
    with atomic_path(out) as tmp:
        onnx.save_model(proto, str(tmp), save_as_external_data=False)
    return out


# ---------------------------------------------------------------------------------------------------- export
def export_model(model: GSMT, meta: CheckpointMeta, out, precision: str = "fp32", opset: int | None = None,
                 batch=None) -> Path:
    """Export an in-memory model (with its checkpoint metadata) to ``out``; see :func:`export_onnx`."""
    _require_onnx()
    if precision not in EXPORT_PRECISIONS:
        raise ValueError(f"precision must be one of {EXPORT_PRECISIONS} here (int8: quantize_int8 / export_onnx "
                         f"with calibration=), got {precision!r}")
    opset, batch = _check_opset(opset, precision), parse_batch(batch)
    cfg = model.cfg
    net = ExportedNetwork(model.eval(), precision).eval()
    # Example inputs: two windows, the second padded, so that the padding path is in the graph; batch 2 keeps the
    # batch dimension symbolic (torch.export specializes sizes 0 and 1).
    t, d = cfg.temporal_scale, cfg.input_dim
    example = (torch.zeros(2, t, d), torch.tensor([t, max(1, t // 2)], dtype=torch.int64))
    dim = torch.export.Dim("batch", min=batch[0], max=max(batch[2], 2))
    with torch.no_grad(), _quiet():
        program = torch.onnx.export(net, example, dynamo=True, opset_version=opset, input_names=list(INPUT_NAMES),
                                    output_names=list(output_names(cfg)), verbose=False,
                                    dynamic_shapes={"features": {0: dim}, "valid_len": {0: dim}})
    proto = program.model_proto
    check_tensorrt_ops(proto)
    _set_metadata(proto, _metadata(model, meta, precision, opset, batch))
    return _save(proto, Path(out))


def export_onnx(ckpt, out=None, precision: str = "fp32", opset: int | None = None, batch=None,
                calibration=None, cache_dir=None) -> Path:
    """Export checkpoint ``ckpt`` (a ``.safetensors`` path) to the ONNX file ``out``; returns its path.

    ``precision``: ``fp32`` | ``fp16`` | ``bf16`` | ``int8``; ``opset``: default :data:`DEFAULT_OPSET`; ``batch``:
    ``"MIN:OPT:MAX"`` range of the dynamic batch dimension (recorded for TensorRT's optimisation profile).
    ``int8`` needs ``calibration``: windows that represent the data (:func:`calibration_windows`: a dataset folder or
    feature arrays). ``out=None`` writes into the export cache (:func:`cached_onnx`), where
    ``Detector(backend="onnxruntime")`` finds it — the way to give the backend a calibrated int8 model.
    """
    model, meta = _load_model(ckpt)
    if out is None:
        return cached_onnx(model, meta, precision, opset=opset, cache_dir=cache_dir, calibration=calibration,
                           batch=batch)
    if precision == "int8":
        if calibration is None:
            raise ValueError("int8 export needs calibration data (a dataset folder or feature arrays): "
                             "calibration=... / gsmt-fast export --calibration DIR")
        fp32 = Path(out).with_name(Path(out).name + ".fp32.tmp")
        try:
            export_model(model, meta, fp32, "fp32", opset, batch)
            return quantize_int8(fp32, out, calibration_windows(model, meta, calibration))
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(fp32)
    return export_model(model, meta, out, precision, opset, batch)


# ---------------------------------------------------------------------------------------------------- int8
def calibration_windows(model: GSMT, meta: CheckpointMeta, source, split: str = "training",
                        max_windows: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """Packed calibration windows ``(x (N, T, d_in) float32, valid_len (N,))`` cut exactly as detection cuts them.

    ``source``: a dataset folder (``annotations.json`` + ``features/``, as ``gsmt-fast synth`` writes; its ``split``
    videos, with their fps/durations), a list of feature arrays ``(n, d_in)``, or an already packed ``(x, valid_len)``
    pair. At most
    ``max_windows`` windows, evenly spaced over all of them (deterministic)."""
    from .detector import Detector

    if isinstance(source, tuple) and len(source) == 2:
        x, valid = np.asarray(source[0], np.float32), np.asarray(source[1], np.int64)
    else:
        det = Detector.from_model(model, meta.class_names, meta.grid, meta.input_mode, meta.inference,
                                  backend="reference")
        if isinstance(source, (str, os.PathLike)):
            from .data.annotations import detect_kwargs, load_annotations
            from .data.features import FeatureStore

            root = Path(source)
            videos = load_annotations(root / "annotations.json").subset(split)
            if not videos:
                raise ValueError(f"calibration: no '{split}' videos in {root / 'annotations.json'}")
            store = FeatureStore(root / "features")
            kw = detect_kwargs(videos)
            plans = det.plan([store.load(v.video_id) for v in videos], **kw)
        else:  # the time metadata only places windows in seconds; their features do not depend on it
            videos = list(source)
            plans = (det.plan(videos, duration=[float(len(v)) for v in videos]) if meta.input_mode == "resize"
                     else det.plan(videos, fps=1.0))
        windows = [w for p in plans for w in p.windows]
        if not windows:
            raise ValueError("calibration: no windows")
        x, valid = det.backend.pack(windows)
    if len(x) > max_windows:
        keep = np.linspace(0, len(x) - 1, max_windows).round().astype(int)
        x, valid = x[keep], valid[keep]
    return x, valid


def quantizable_nodes(model_proto) -> list[str]:
    """Nodes that int8 quantizes: MatMul/Conv with a weight initializer, except the output layers (class head, the
    mask head's last convolution, the boundary head), which stay float32 like in every low-precision path."""
    initializers = {i.name for i in model_proto.graph.initializer}
    out = []
    for node in model_proto.graph.node:
        if node.op_type not in ("MatMul", "Conv") or len(node.input) < 2 or node.input[1] not in initializers:
            continue
        weight = node.input[1]
        if "cls_head." in weight or "boundary_head." in weight or _is_last_mask_layer(weight):
            continue
        out.append(node.name)
    return out


def _is_last_mask_layer(weight_name: str) -> bool:
    # The mask head is Sequential(conv, relu, conv, relu, conv): its last layer is index 4.
    return weight_name.endswith("mask_head.4.weight")


# Probabilities or masks that move by more than this on average over the calibration windows: a systematic error
# (int16 saturation), not rounding. The maximum is no guide: a few outlying values move far on models whose mAP
# int8 leaves unchanged (bench/RESULTS.md, "Compiled deployment").
INT8_WARN_MEAN_ERROR = 0.01


def quantize_int8(fp32_path, out, calibration: tuple[np.ndarray, np.ndarray], batch_size: int = 16,
                  reduce_range: bool = False) -> Path:
    """Static int8 quantization (ONNX Runtime, QDQ format) of an fp32 export, calibrated on ``calibration`` windows.

    Weights int8 per output channel, activations uint8 per tensor (min/max over the calibration windows). Full 8-bit
    weights by default: 7-bit ones (``reduce_range=True``) lost far more accuracy on the synthetic splits
    (bench/RESULTS.md, "Compiled deployment"). But CPUs without VNNI (AVX2) multiply u8 by s8 into saturating int16
    pairs (VPMADDUBSW), which full-range weights can overflow; so the quantized model is run on the calibration
    windows and its deviation from fp32 is recorded in the metadata (``calibration.max_abs_error``,
    ``mean_abs_error``), with a warning when the mean exceeds :data:`INT8_WARN_MEAN_ERROR` (then quantize with
    ``reduce_range=True``). Only :func:`quantizable_nodes` are quantized."""
    import onnx
    from onnxruntime.quantization import (
        CalibrationDataReader,
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )

    x, valid = calibration
    proto = onnx.load(str(fp32_path))
    metadata = read_metadata(proto)
    nodes = quantizable_nodes(proto)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"features": x[s:s + batch_size], "valid_len": valid[s:s + batch_size]}
                                 for s in range(0, len(x), batch_size)])

        def get_next(self):
            return next(self.batches, None)

    out = Path(out)
    with atomic_path(out) as tmp, _quiet():
        quantize_static(str(fp32_path), str(tmp), Reader(), quant_format=QuantFormat.QDQ, nodes_to_quantize=nodes,
                        per_channel=True, reduce_range=reduce_range, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, calibrate_method=CalibrationMethod.MinMax)
        error, mean_error = _abs_errors(fp32_path, tmp, x, valid, batch_size)
        quantized = onnx.load(str(tmp))
        calib = hashlib.sha256(np.ascontiguousarray(x).tobytes() + np.ascontiguousarray(valid).tobytes())
        metadata.update(precision="int8", versions=package_versions("int8"),
                        calibration={"windows": int(len(x)), "sha256": calib.hexdigest(), "method": "minmax",
                                     "quantized_nodes": len(nodes), "reduce_range": reduce_range,
                                     "max_abs_error": error, "mean_abs_error": mean_error})
        _set_metadata(quantized, metadata)
        onnx.checker.check_model(quantized, full_check=True)
        onnx.save_model(quantized, str(tmp), save_as_external_data=False)
    worst = max(mean_error.values())
    if worst > INT8_WARN_MEAN_ERROR:
        warnings.warn(f"int8 outputs differ from fp32 by {worst:.3g} on average on the calibration windows (u8 x s8 "
                      f"saturation on a CPU without VNNI?); check the accuracy (bench/backend_accuracy.py) or "
                      f"quantize with reduce_range=True", stacklevel=2)
    return out


def _abs_errors(reference_path, quantized_path, x, valid, batch_size: int) -> tuple[dict, dict]:
    """Largest and mean |quantized - reference| of each output over the windows ``x``."""
    import onnxruntime

    sessions = [onnxruntime.InferenceSession(str(p), providers=["CPUExecutionProvider"])
                for p in (reference_path, quantized_path)]
    names = [o.name for o in sessions[0].get_outputs()]
    largest, total, count = dict.fromkeys(names, 0.0), dict.fromkeys(names, 0.0), dict.fromkeys(names, 0)
    for s in range(0, len(x), batch_size):
        feeds = {"features": x[s:s + batch_size], "valid_len": valid[s:s + batch_size]}
        ref, quant = (session.run(names, feeds) for session in sessions)
        for name, a, b in zip(names, ref, quant):
            d = np.abs(a.astype(np.float64) - b)
            largest[name] = max(largest[name], float(d.max()))
            total[name] += float(d.sum())
            count[name] += d.size
    return largest, {name: total[name] / max(count[name], 1) for name in names}


@contextlib.contextmanager
def _quiet():
    """The quantizer's advice goes to the root logger and stdout; the exporter warns about internals. None of it is
    the user's business."""
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(logging.NOTSET)


# ---------------------------------------------------------------------------------------------------- cache
def default_cache_dir() -> Path:
    """``$GSMT_FAST_CACHE``, else ``$XDG_CACHE_HOME/gsmt_fast``, else ``~/.cache/gsmt_fast``."""
    if os.environ.get("GSMT_FAST_CACHE"):
        return Path(os.environ["GSMT_FAST_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "gsmt_fast"


def cache_key(digest: str, precision: str, opset: int, versions: dict) -> str:
    """The cache file name of an export: checkpoint digest, precision, opset and a hash of the package versions."""
    v = hashlib.sha256(json.dumps(versions, sort_keys=True).encode()).hexdigest()[:12]
    return f"{digest[:24]}-{precision}-opset{opset}-v{v}.onnx"


def cache_entry_matches(path: Path, expected: dict) -> bool:
    """True when ``path`` is a readable ONNX file whose metadata has every ``expected`` value (a stale, foreign,
    truncated or hand-edited entry is not)."""
    try:
        found = read_metadata(path)
    except Exception:  # noqa: BLE001 - anything unreadable is simply not a valid entry
        return False
    return all(found.get(k) == v for k, v in expected.items())


def cached_onnx(model: GSMT, meta: CheckpointMeta, precision: str = "fp32", opset: int | None = None,
                cache_dir=None, calibration=None, batch=None) -> Path:
    """The ONNX export of ``model`` in the cache folder (:func:`default_cache_dir`), built when missing.

    Key: checkpoint digest, precision, opset and package versions (:func:`cache_key`). An existing entry is used only
    when its metadata says it is exactly that export (:func:`cache_entry_matches`); otherwise it is rebuilt. int8:
    an entry is built only from ``calibration`` windows; without them a missing entry is an error that says how to
    make one (``gsmt-fast export --precision int8 --calibration DIR``)."""
    _require_onnx()
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    opset = _check_opset(opset, precision)
    digest = checkpoint_digest(model, meta)
    versions = package_versions(precision)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = folder / "onnx" / cache_key(digest, precision, opset, versions)
    expected = {"format_version": FORMAT_VERSION, "checkpoint_sha256": digest, "precision": precision,
                "opset": opset, "versions": versions, "outputs": list(output_names(meta.model))}
    if batch is not None:
        expected["batch"] = list(parse_batch(batch))
    if calibration is None and cache_entry_matches(path, expected):
        return path
    if precision != "int8":
        return export_model(model, meta, path, precision, opset, batch)
    if calibration is None:
        raise ValueError("precision='int8' needs a calibrated model and none is cached for this checkpoint: run "
                         "`gsmt-fast export --ckpt M --format onnx --precision int8 --calibration DATA_DIR` (or "
                         "gsmt_fast.export_onnx(ckpt, None, precision='int8', calibration=...)) first")
    fp32 = cached_onnx(model, meta, "fp32", opset, cache_dir, batch=batch)
    return quantize_int8(fp32, path, calibration_windows(model, meta, calibration))


def export_main(ckpt, out, fmt: str = "onnx", precision: str = "fp32", opset: int | None = None, batch=None,
                calibration=None, workspace_gib: float | None = None) -> Path:
    """``gsmt-fast export``: ``onnx`` writes the graph; ``tensorrt`` builds and writes a serialized engine (needs
    the ``tensorrt`` package and a GPU)."""
    if fmt == "onnx":
        return export_onnx(ckpt, out, precision=precision, opset=opset, batch=batch, calibration=calibration)
    if fmt == "tensorrt":
        from .backends.tensorrt_backend import export_engine

        return export_engine(ckpt, out, precision=precision, opset=opset, batch=batch, workspace_gib=workspace_gib)
    raise ValueError(f"unknown export format {fmt!r}; valid: onnx, tensorrt")


def session_outputs_shapes(cfg, batch: int) -> dict[str, tuple[int, ...]]:
    """Shapes of the graph's outputs for ``batch`` windows (the binding shapes of every runtime)."""
    t = cfg.temporal_scale
    shapes = {"probs": (batch, cfg.num_classes + 1, t), "masks": (batch, t, t)}
    if getattr(cfg, "boundary_head", False):
        shapes[BOUNDARY_OUTPUT] = (batch, 2, t)
    return shapes


__all__ = ["export_onnx", "export_model", "cached_onnx", "check_tensorrt_ops", "read_metadata", "checkpoint_digest",
           "quantize_int8", "calibration_windows", "ExportedNetwork", "TENSORRT_ONNX_OPS", "output_names"]
