"""The ``tensorrt`` backend without TensorRT: the error that names the extra, and every part that does not need the
package — I/O contract, optimisation profile, engine cache keys and entry checks, and the binding/enqueue sequence
(:class:`EngineRunner`) driven by a stand-in execution context that computes the reference model on the CPU, through
the backend's post-processing. The ONNX parse, engine build and GPU execution never run here (no TensorRT, no GPU)."""

import ctypes
import sys
import types

import numpy as np
import pytest
import torch

import gsmt_fast
from gsmt_fast.backends import tensorrt_backend as trt_backend
from gsmt_fast.cli import main as cli
from gsmt_fast.postprocess import native

T, D, K = 16, 4, 2


@pytest.fixture(params=[False, True], ids=["paper", "boundary_head"])
def ckpt(tmp_path, request):
    """A tiny checkpoint: the paper model, and the boundary-refined variant (a third output, ``boundaries``)."""
    torch.manual_seed(0)
    model = gsmt_fast.GSMT(gsmt_fast.GSMTConfig.preset("tiny", num_classes=K, temporal_scale=T, input_dim=D,
                                                       boundary_head=request.param))
    with torch.no_grad():
        model.cls_head.weight.mul_(8)
    path = tmp_path / "m.safetensors"
    gsmt_fast.save_checkpoint(model, path, class_names=["a", "b"])
    return path


@pytest.fixture
def no_tensorrt(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # import tensorrt raises ImportError, installed or not


def test_without_tensorrt_the_error_names_the_extra(ckpt, tmp_path, no_tensorrt, capsys):
    assert not trt_backend.tensorrt_available()
    with pytest.raises(ImportError, match=r"pip install 'gsmt_fast\[tensorrt\]'"):
        gsmt_fast.Detector(ckpt, backend="tensorrt")
    assert cli(["export", "--ckpt", str(ckpt), "--format", "tensorrt", "--out", str(tmp_path / "m.engine")]) == 2
    assert "gsmt_fast[tensorrt]" in capsys.readouterr().err
    assert not (tmp_path / "m.engine").exists()


def test_with_tensorrt_but_no_gpu_the_error_says_so(ckpt, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    with pytest.raises(RuntimeError, match="CUDA GPU"):
        gsmt_fast.Detector(ckpt, backend="tensorrt", device="cpu")


def test_profile_shapes_cover_the_batch_range():
    cfg = gsmt_fast.GSMTConfig.preset("tiny", num_classes=K, temporal_scale=T, input_dim=D)
    assert trt_backend.profile_shapes(cfg, "1:8:32") == {"features": ((1, T, D), (8, T, D), (32, T, D)),
                                                         "valid_len": ((1,), (8,), (32,))}
    with pytest.raises(ValueError, match="batch range"):
        trt_backend.profile_shapes(cfg, "8:1:32")


def test_engine_cache_key_and_entry_checks(tmp_path):
    base = dict(digest="ab" * 32, precision="fp16", batch=(1, 64, 1024), gpu_name="NVIDIA H100 80GB HBM3",
                compute_capability=(9, 0), trt_version="10.3.0")
    key = trt_backend.engine_key(**base)
    name = trt_backend.engine_file_name(key)
    assert name.endswith(".engine") and "sm9.0" in name and "trt10.3.0" in name and "nvidia-h100" in name
    for field, other in (("digest", "cd" * 32), ("precision", "bf16"), ("batch", (1, 64, 512)),
                         ("gpu_name", "NVIDIA H200"), ("compute_capability", (8, 9)), ("trt_version", "11.0.0")):
        assert trt_backend.engine_file_name(trt_backend.engine_key(**{**base, field: other})) != name, field
    path = tmp_path / name
    trt_backend.write_engine(path, b"serialized engine bytes", key)
    assert trt_backend.engine_entry_matches(path, key)
    assert not trt_backend.engine_entry_matches(path, {**key, "tensorrt": "10.4.0"})  # foreign key
    path.write_bytes(b"serialized engine bytez")  # replaced or damaged engine: its sha256 no longer matches
    assert not trt_backend.engine_entry_matches(path, key)
    trt_backend.write_engine(path, b"serialized engine bytes", key)
    (tmp_path / (name + ".json")).unlink()  # an engine without its key file is never trusted
    assert not trt_backend.engine_entry_matches(path, key)


def test_engine_io_check():
    cfg = gsmt_fast.GSMTConfig.preset("tiny", num_classes=K, temporal_scale=T, input_dim=D)
    good = [(s.name, s.is_input, s.dtype) for s in trt_backend.io_specs(cfg)]
    variant = gsmt_fast.GSMTConfig.preset("tiny", num_classes=K, temporal_scale=T, input_dim=D, boundary_head=True)
    with_boundaries = [(s.name, s.is_input, s.dtype) for s in trt_backend.io_specs(variant)]
    assert with_boundaries == good + [("boundaries", False, torch.float32)]
    trt_backend.check_engine_io(variant, with_boundaries)
    with pytest.raises(RuntimeError, match="not this model's"):  # an engine of the paper graph for the variant
        trt_backend.check_engine_io(variant, good)
    trt_backend.check_engine_io(cfg, good)
    with pytest.raises(RuntimeError, match="not this model's"):
        trt_backend.check_engine_io(cfg, [("valid_len", True, torch.int32) if n == "valid_len" else (n, i, d)
                                          for n, i, d in good])
    with pytest.raises(RuntimeError, match="not this model's"):
        trt_backend.check_engine_io(cfg, good[:3])
    fake = types.SimpleNamespace(float32=0, float16=1, int32=2, int8=3, bool=4, int64=5, bf16=6)
    assert [trt_backend.torch_dtype(fake, v) for v in range(7)] == [
        torch.float32, torch.float16, torch.int32, torch.int8, torch.bool, torch.int64, torch.bfloat16]


class ReferenceContext:
    """Stands in for a TensorRT execution context: tensors are given by name and address, shapes by name, and
    ``execute_async_v3`` computes the reference model from the bound input memory into the bound output memory."""

    def __init__(self, model):
        self.model, self.shapes, self.addresses, self.calls = model, {}, {}, []

    def set_input_shape(self, name, shape):
        self.shapes[name] = tuple(shape)
        return True

    def set_tensor_address(self, name, address):
        self.addresses[name] = address
        return True

    def execute_async_v3(self, stream):
        b = self.shapes["features"][0]
        assert self.shapes["valid_len"] == (b,)
        cfg = self.model.cfg
        x = _read(self.addresses["features"], (b, cfg.temporal_scale, cfg.input_dim), np.float32)
        n = _read(self.addresses["valid_len"], (b,), np.int64)
        with torch.no_grad():
            outputs = self.model.predict(torch.from_numpy(x.copy()), torch.from_numpy(n.copy()))
        for name, value in zip(("probs", "masks", "boundaries"), outputs):
            data = np.ascontiguousarray(value.numpy())
            ctypes.memmove(self.addresses[name], data.ctypes.data, data.nbytes)
        self.calls.append((b, stream))
        return True


def _read(address, shape, dtype):
    count = int(np.prod(shape))
    buffer = (ctypes.c_char * (count * np.dtype(dtype).itemsize)).from_address(address)
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)


@pytest.mark.parametrize("boundary_head", [False, True])
def test_engine_runner_binds_by_name_and_chunks_over_the_profile(boundary_head):
    torch.manual_seed(1)
    model = gsmt_fast.GSMT(gsmt_fast.GSMTConfig.preset("tiny", num_classes=K, temporal_scale=T, input_dim=D,
                                                       boundary_head=boundary_head)).eval()
    context = ReferenceContext(model)
    runner = trt_backend.EngineRunner(context, model.cfg, max_batch=2, device=torch.device("cpu"))
    x = torch.randn(5, T, D)
    n = torch.tensor([T, T, 3, T, 9])
    outputs = runner(x, n, stream=1234)
    assert [c for c in context.calls] == [(2, 1234), (2, 1234), (1, 1234)]
    with torch.no_grad():
        expected = model.predict(x, n)
    assert len(outputs) == len(expected) == (3 if boundary_head else 2)
    for got, want in zip(outputs, expected):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)


@pytest.mark.skipif(not native.available(), reason="gsmt_fast._C is not built")
def test_backend_forward_and_post_processing_give_the_reference_detections(ckpt, exact_exp):
    """The backend's run path — pack, forward through named bindings, the extension's post-processing of the
    outputs as tensors — with the stand-in context on the CPU (on a GPU the same call reaches the CUDA op)."""
    ref = gsmt_fast.Detector(ckpt, backend="reference")
    det = gsmt_fast.Detector(ckpt, backend="reference")
    backend = trt_backend.TensorRTBackend.__new__(trt_backend.TensorRTBackend)  # no engine: built by hand
    backend.model, backend.device, backend.precision = ref.backend.model, torch.device("cpu"), "fp32"
    backend.num_threads = None
    backend._run = trt_backend.EngineRunner(ReferenceContext(backend.model), backend.model.cfg, 3, backend.device)
    det.backend = backend
    rng = np.random.default_rng(0)
    videos = [rng.standard_normal((length, D)).astype(np.float32) for length in (5, 16, 40, 90)]
    a, b = ref.detect(videos, fps=30.0), det.detect(videos, fps=30.0)
    assert sum(len(r) for r in a) > 0
    for r, o in zip(a, b):
        np.testing.assert_array_equal(r.labels, o.labels)
        np.testing.assert_allclose(r.segments, o.segments, rtol=0, atol=1e-9)
        np.testing.assert_allclose(r.scores, o.scores, rtol=1e-6)
