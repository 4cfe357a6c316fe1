"""``tensorrt`` backend: a TensorRT engine built from the ONNX export + the CUDA post-processing op, with no host
round trip between them (docs/DEPLOYING.md).

Written against the documented TensorRT 10/11 Python API. The engine is built from the ONNX graph of the requested
precision (:mod:`gsmt_fast.export`: fp16/bf16 graphs carry their own casts, the two output layers and the masks in
float32) as a *strongly typed* network — the precision comes from the graph, which TensorRT 11 requires and TensorRT 10
supports — with one optimisation profile over the batch range. Engines are cached keyed by checkpoint digest,
precision, batch range, GPU name, compute capability and TensorRT version (:func:`engine_key`); an entry is used only
when its key file matches and the engine's bytes have the recorded sha256. At run time every I/O tensor gets a named
address (``set_tensor_address``) and the engine is enqueued on the caller's current CUDA stream
(``execute_async_v3``); its float32 outputs stay on the device for the CUDA post-processing op.

``tensorrt`` is imported lazily; without it the backend raises an ImportError naming the ``gsmt_fast[tensorrt]``
extra. Everything that does not need the package — I/O names and dtypes, profile shapes, cache keys and entry
checks, the binding and enqueue sequence (:class:`EngineRunner`, tested with a stand-in execution context) — is plain
code tested on the CPU. What has never run anywhere (no TensorRT on any machine of this project): the ONNX parse,
the engine build, deserialization and execution on a GPU.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint import CheckpointMeta
from ..files import atomic_write_bytes, atomic_write_json
from ..model import GSMT
from ..postprocess import native
from .base import Backend, ExtensionPostprocessing

PRECISIONS = ("fp16", "bf16", "fp32")
DEFAULT_WORKSPACE_GIB = 4.0
INSTALL_HINT = ("the tensorrt backend needs NVIDIA TensorRT (10 or newer) and a CUDA GPU: pip install "
                "'gsmt_fast[tensorrt]'")


def import_tensorrt():
    """The ``tensorrt`` module, or an ImportError that says how to install it."""
    try:
        import tensorrt
    except ImportError as e:
        raise ImportError(INSTALL_HINT) from e
    return tensorrt


def tensorrt_available() -> bool:
    try:
        import_tensorrt()
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------------------------------------- I/O contract
@dataclass(frozen=True)
class TensorSpec:
    """One engine I/O tensor: its name, shape (-1 = the dynamic batch), dtype and direction."""

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype
    is_input: bool


def io_specs(cfg) -> list[TensorSpec]:
    """The engine's bindings, as the ONNX export names them: ``features``/``valid_len`` in, ``probs``/``masks`` out,
    and ``boundaries`` out for a model with the boundary head."""
    t, d, k = cfg.temporal_scale, cfg.input_dim, cfg.num_classes
    specs = [TensorSpec("features", (-1, t, d), torch.float32, True),
             TensorSpec("valid_len", (-1,), torch.int64, True),
             TensorSpec("probs", (-1, k + 1, t), torch.float32, False),
             TensorSpec("masks", (-1, t, t), torch.float32, False)]
    if getattr(cfg, "boundary_head", False):
        specs.append(TensorSpec("boundaries", (-1, 2, t), torch.float32, False))
    return specs


def profile_shapes(cfg, batch) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """``{input name: (min, opt, max) shapes}`` of the optimisation profile for the batch range ``(lo, opt, hi)``."""
    from ..export import parse_batch

    batch = parse_batch(batch)
    return {s.name: tuple((b,) + s.shape[1:] for b in batch) for s in io_specs(cfg) if s.is_input}


def check_engine_io(cfg, engine_io) -> None:
    """Raise unless ``engine_io`` — ``[(name, is_input, torch dtype)]`` read from an engine — is exactly
    :func:`io_specs` (names, directions, dtypes): an engine built from another graph is never run."""
    want = {s.name: (s.is_input, s.dtype) for s in io_specs(cfg)}
    got = {name: (is_input, dtype) for name, is_input, dtype in engine_io}
    if got != want:
        raise RuntimeError(f"the TensorRT engine's I/O tensors {got} are not this model's {want}")


def torch_dtype(trt, dtype) -> torch.dtype:
    """The torch dtype of a ``tensorrt.DataType``."""
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.int8: torch.int8,
             trt.bool: torch.bool}
    for name, value in (("int64", torch.int64), ("bf16", torch.bfloat16)):  # TensorRT >= 10 types
        if hasattr(trt, name):
            table[getattr(trt, name)] = value
    return table[dtype]


# ---------------------------------------------------------------------------------------------------- cache
def engine_key(digest: str, precision: str, batch, gpu_name: str, compute_capability, trt_version: str) -> dict:
    """Everything an engine depends on: the network (checkpoint digest, precision), the profile, and the machine
    and TensorRT that built it (engines are specific to both)."""
    from ..export import parse_batch

    major, minor = (int(v) for v in compute_capability)
    return {"checkpoint_sha256": digest, "precision": precision, "batch": list(parse_batch(batch)),
            "gpu": str(gpu_name), "compute_capability": f"{major}.{minor}", "tensorrt": str(trt_version)}


def engine_file_name(key: dict) -> str:
    gpu = re.sub(r"[^a-z0-9]+", "-", key["gpu"].lower()).strip("-") or "gpu"
    batch = "_".join(str(b) for b in key["batch"])
    return (f"{key['checkpoint_sha256'][:24]}-{key['precision']}-b{batch}-{gpu}-sm{key['compute_capability']}"
            f"-trt{key['tensorrt']}.engine")


def engine_entry_matches(path: Path, key: dict) -> bool:
    """True when ``path`` exists, its key file (``<path>.json``) records exactly ``key``, and the engine's bytes have
    the sha256 recorded there (a truncated, foreign or replaced engine is rebuilt, never deserialized)."""
    meta_path = Path(str(path) + ".json")
    try:
        recorded = json.loads(meta_path.read_text())
        data = Path(path).read_bytes()
    except (OSError, ValueError):
        return False
    if recorded.get("key") != key:
        return False
    return recorded.get("engine_sha256") == hashlib.sha256(data).hexdigest()


def write_engine(path: Path, data: bytes, key: dict) -> Path:
    """The engine and its key file, each written atomically (the key file last: an engine without one is invalid)."""
    atomic_write_bytes(path, data)
    atomic_write_json(Path(str(path) + ".json"), {"key": key, "engine_sha256": hashlib.sha256(data).hexdigest()})
    return path


# ---------------------------------------------------------------------------------------------------- build
def build_serialized_engine(trt, onnx_path, profile: dict, workspace_gib: float = DEFAULT_WORKSPACE_GIB) -> bytes:
    """Parse ``onnx_path`` into a strongly typed network and build a serialized engine with one optimisation
    profile (``{input: (min, opt, max)}``). Never run: no TensorRT here."""
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gib * (1 << 30)))
    opt_profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profile.items():
        opt_profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(opt_profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError("TensorRT could not build the engine (its log above says why)")
    return bytes(serialized)


def _gpu_identity(device: torch.device) -> tuple[str, tuple[int, int]]:
    return torch.cuda.get_device_name(device), torch.cuda.get_device_capability(device)


def cached_engine(model: GSMT, meta: CheckpointMeta, precision: str, device: torch.device, batch=None,
                  cache_dir=None, workspace_gib: float = DEFAULT_WORKSPACE_GIB) -> Path:
    """The engine for ``model`` on ``device`` from the cache folder, built (and cached) when missing or invalid."""
    from ..export import cached_onnx, checkpoint_digest, default_cache_dir

    trt = import_tensorrt()
    name, capability = _gpu_identity(device)
    key = engine_key(checkpoint_digest(model, meta), precision, batch, name, capability, trt.__version__)
    folder = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    path = folder / "tensorrt" / engine_file_name(key)
    if engine_entry_matches(path, key):
        return path
    onnx_path = cached_onnx(model, meta, precision, cache_dir=cache_dir, batch=batch)
    data = build_serialized_engine(trt, onnx_path, profile_shapes(model.cfg, batch), workspace_gib)
    return write_engine(path, data, key)


def export_engine(ckpt, out, precision: str | None = None, opset: int | None = None, batch=None,
                  workspace_gib: float | None = None, device="cuda") -> Path:
    """``gsmt-fast export --format tensorrt``: build the engine of ``ckpt`` on this machine's GPU and write it to
    ``out`` (plus its key file ``out.json``)."""
    from ..export import _load_model, cached_onnx, checkpoint_digest

    trt = import_tensorrt()
    precision = precision or "fp16"
    if precision not in PRECISIONS:
        raise ValueError(f"TensorRT precision must be one of {PRECISIONS}, got {precision!r}")
    if not torch.cuda.is_available():
        raise RuntimeError("building a TensorRT engine needs a CUDA GPU (the engine is specific to it)")
    model, meta = _load_model(ckpt)
    device = torch.device(device)
    onnx_path = cached_onnx(model, meta, precision, opset=opset, batch=batch)
    data = build_serialized_engine(trt, onnx_path, profile_shapes(model.cfg, batch),
                                   workspace_gib or DEFAULT_WORKSPACE_GIB)
    name, capability = _gpu_identity(device)
    key = engine_key(checkpoint_digest(model, meta), precision, batch, name, capability, trt.__version__)
    return write_engine(Path(out), data, key)


# ---------------------------------------------------------------------------------------------------- run
class EngineRunner:
    """Runs an execution context on torch tensors: sets the input shapes, gives every I/O tensor its address by
    name, enqueues on ``stream`` (a CUDA stream handle). Batches above the profile's maximum run in chunks."""

    def __init__(self, context, cfg, max_batch: int, device: torch.device):
        self.context, self.cfg, self.max_batch, self.device = context, cfg, int(max_batch), device

    def __call__(self, x: torch.Tensor, valid_len: torch.Tensor, stream: int):
        b = len(x)
        # probs, masks (and boundaries with the boundary head), in io_specs order
        outputs = {spec.name: torch.empty((b,) + spec.shape[1:], dtype=spec.dtype, device=self.device)
                   for spec in io_specs(self.cfg) if not spec.is_input}
        for s in range(0, b, self.max_batch):
            e = min(b, s + self.max_batch)
            tensors = {"features": x[s:e], "valid_len": valid_len[s:e],
                       **{name: tensor[s:e] for name, tensor in outputs.items()}}
            self.context.set_input_shape("features", tuple(tensors["features"].shape))
            self.context.set_input_shape("valid_len", tuple(tensors["valid_len"].shape))
            for name, tensor in tensors.items():
                self.context.set_tensor_address(name, tensor.data_ptr())
            if not self.context.execute_async_v3(stream):
                raise RuntimeError("TensorRT failed to enqueue the engine")
        return tuple(outputs.values())


class TensorRTBackend(ExtensionPostprocessing, Backend):
    name = "tensorrt"

    def __init__(self, model: GSMT, device=None, precision: str | None = None, meta: CheckpointMeta | None = None,
                 *, batch=None, cache_dir=None, workspace_gib: float = DEFAULT_WORKSPACE_GIB):
        from ..export import parse_batch

        trt = import_tensorrt()
        precision = precision or "fp16"
        if precision not in PRECISIONS:
            raise ValueError(f"the tensorrt backend supports precision {PRECISIONS}, got {precision!r}")
        self.device = torch.device(device or "cuda")
        if self.device.type != "cuda" or not torch.cuda.is_available():
            raise RuntimeError(f"the tensorrt backend runs on a CUDA GPU, got device {self.device}")
        if not native.cuda_available():
            raise RuntimeError("the tensorrt backend needs the CUDA post-processing of gsmt_fast._C (rebuild with "
                               "nvcc present)")
        if self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.precision = precision
        self.model = model.eval()
        meta = meta or CheckpointMeta(model.cfg, [f"class_{i}" for i in range(model.cfg.num_classes)])
        self.batch = parse_batch(batch)
        self.engine_path = cached_engine(self.model, meta, precision, self.device, self.batch, cache_dir,
                                         workspace_gib)
        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(Path(self.engine_path).read_bytes())
        if self.engine is None:
            raise RuntimeError(f"TensorRT could not deserialize {self.engine_path}")
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        check_engine_io(model.cfg, [(n, self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT,
                                     torch_dtype(trt, self.engine.get_tensor_dtype(n))) for n in names])
        self.context = self.engine.create_execution_context()
        self._run = EngineRunner(self.context, model.cfg, self.batch[2], self.device)

    def forward(self, windows, valid_len):
        """Probabilities and masks (and the boundary distances with the boundary head) as CUDA tensors, computed on
        the current stream (the post-processing op runs
        after them on the same stream)."""
        x = torch.as_tensor(windows, dtype=torch.float32).to(self.device, non_blocking=True).contiguous()
        n = torch.as_tensor(valid_len, dtype=torch.int64).to(self.device, non_blocking=True).contiguous()
        stream = torch.cuda.current_stream(self.device).cuda_stream if self.device.type == "cuda" else 0
        return self._run(x, n, stream)
