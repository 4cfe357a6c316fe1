"""ONNX export (gsmt_fast.export): exact against the reference model at batch sizes other than the traced one and
with padded windows, metadata, the TensorRT op-set walk, low-precision graphs, int8 quantization, and the export
cache (a changed checkpoint, a foreign or a damaged entry is rebuilt)."""

import contextlib
import shutil
import warnings

import numpy as np
import pytest
import torch

import gsmt_fast
from gsmt_fast import export
from gsmt_fast.cli import main as cli

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

T, D, K = 24, 8, 3


def _tiny_model(seed: int) -> gsmt_fast.GSMT:
    torch.manual_seed(seed)
    model = gsmt_fast.GSMT(gsmt_fast.GSMTConfig.preset("tiny", num_classes=K, temporal_scale=T, input_dim=D))
    with torch.no_grad():
        model.cls_head.weight.mul_(8)  # confident classes, so that candidates pass the score threshold
    return model.eval()


def _save(model, path):
    gsmt_fast.save_checkpoint(model, path, class_names=["run", "jump", "swim"], grid={"convention": "stride"},
                              inference={"nms_sigma": 0.4, "mode": "short"})
    return path


def _run(path, x, valid):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(["probs", "masks"], {"features": np.asarray(x, np.float32),
                                            "valid_len": np.asarray(valid, np.int64)})


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny checkpoint and its fp32 export, made through the export cache (as the backend makes it)."""
    root = tmp_path_factory.mktemp("tiny_export")
    ckpt = _save(_tiny_model(0), root / "tiny.safetensors")
    path = export.export_onnx(ckpt, None, cache_dir=root / "cache")
    return ckpt, path, root


@pytest.mark.parametrize("batch", [1, 5])
def test_fp32_export_equals_reference_at_other_batch_sizes_and_padded(tiny, batch):
    ckpt, path, _ = tiny
    model, _ = gsmt_fast.load_checkpoint(ckpt)
    rng = np.random.default_rng(batch)
    x = rng.standard_normal((batch, T, D)).astype(np.float32)
    valid = np.full(batch, T)
    valid[-1] = 7  # the last window padded: its tail is zeros, masked out of attention
    x[-1, 7:] = 0
    probs, masks = _run(path, x, valid)
    with torch.no_grad():
        ref_probs, ref_masks = model.predict(torch.from_numpy(x), torch.from_numpy(valid))
    assert probs.shape == (batch, K + 1, T) and masks.shape == (batch, T, T)
    assert probs.dtype == np.float32 and masks.dtype == np.float32
    assert np.abs(probs - ref_probs.numpy()).max() <= 1e-4
    assert np.abs(masks - ref_masks.numpy()).max() <= 1e-4
    # Padding changes the result (else the padded case would test nothing): the full-length window differs.
    probs_full, _ = _run(path, x[-1:], [T])
    assert np.abs(probs_full[0] - probs[-1]).max() > 1e-3


def test_export_metadata_names_and_full_check(tiny):
    ckpt, path, _ = tiny
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["features", "valid_len"]
    assert [o.name for o in proto.graph.output] == ["probs", "masks"]
    batch_dims = [i.type.tensor_type.shape.dim[0] for i in proto.graph.input]
    assert all(d.dim_param and not d.dim_value for d in batch_dims), "the batch dimension must be symbolic"
    meta = export.read_metadata(proto)
    model, cfg, ckpt_meta = gsmt_fast.load_checkpoint(ckpt, with_meta=True)
    assert meta["checkpoint_sha256"] == export.checkpoint_digest(model, ckpt_meta)
    assert meta["class_names"] == ["run", "jump", "swim"]
    assert meta["grid"]["convention"] == "stride" and meta["input_mode"] == "window"
    assert meta["inference"]["nms_sigma"] == 0.4 and meta["inference"]["mode"] == "short"
    assert meta["model"]["temporal_scale"] == T and meta["precision"] == "fp32"
    assert meta["opset"] == export.DEFAULT_OPSET == max(o.version for o in proto.opset_import if o.domain == "")
    assert meta["batch"] == list(export.DEFAULT_BATCH)
    assert meta["versions"]["torch"] == torch.__version__.split("+")[0]


def test_checkpoint_digest_follows_weights_and_settings_not_the_file(tmp_path):
    a = _save(_tiny_model(0), tmp_path / "a.safetensors")
    b = _save(_tiny_model(0), tmp_path / "b.safetensors")
    c = _save(_tiny_model(1), tmp_path / "c.safetensors")
    digests = [export.checkpoint_digest(*gsmt_fast.load_checkpoint(p, with_meta=True)[::2]) for p in (a, b, c)]
    assert digests[0] == digests[1] != digests[2]
    model, _, meta = gsmt_fast.load_checkpoint(a, with_meta=True)
    other = meta.inference.replace(nms_sigma=0.7)
    assert export.checkpoint_digest(model, meta) != export.checkpoint_digest(
        model, type(meta)(meta.model, meta.class_names, meta.grid, meta.input_mode, other))


def test_every_operator_is_one_tensorrt_parses(tiny):
    _, path, _ = tiny
    ops = export.check_tensorrt_ops(onnx.load(str(path)))
    assert {"MatMul", "Conv", "Softmax", "Sigmoid"} <= set(ops)
    assert set(ops) <= export.TENSORRT_ONNX_OPS


def test_op_walk_fails_on_an_unsupported_or_foreign_operator():
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    z = helper.make_tensor_value_info("z", TensorProto.FLOAT, None)
    graph = helper.make_graph([helper.make_node("Unique", ["x"], ["y"], name="dedup"),
                               helper.make_node("Relu", ["y"], ["z"], name="ok")], "g", [x], [z])
    with pytest.raises(ValueError, match=r"Unique \(dedup\)"):
        export.check_tensorrt_ops(helper.make_model(graph))
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["z"], name="custom", domain="com.microsoft")],
                              "g", [x], [z])
    with pytest.raises(ValueError, match="com.microsoft::Relu"):
        export.check_tensorrt_ops(helper.make_model(graph))
    # A node inside a subgraph (If branch) is walked too.
    inner = helper.make_graph([helper.make_node("Unique", ["x"], ["y"], name="inner")], "branch", [], [y])
    cond = helper.make_tensor_value_info("c", TensorProto.BOOL, [])
    graph = helper.make_graph([helper.make_node("If", ["c"], ["z"], then_branch=inner, else_branch=inner)],
                              "g", [cond, x], [z])
    with pytest.raises(ValueError, match=r"Unique \(inner\)"):
        export.check_tensorrt_ops(helper.make_model(graph))


def test_cli_export_fp16_keeps_outputs_float32_and_close(tiny, tmp_path, capsys):
    ckpt, _, _ = tiny
    out = tmp_path / "m16.onnx"
    assert cli(["export", "--ckpt", str(ckpt), "--format", "onnx", "--precision", "fp16", "--batch", "1:8:32",
                "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    proto = onnx.load(str(out))
    export.check_tensorrt_ops(proto)
    meta = export.read_metadata(proto)
    assert meta["precision"] == "fp16" and meta["batch"] == [1, 8, 32]
    weights = {i.name: i.data_type for i in proto.graph.initializer}
    # The trunk's weights are fp16; the two output layers stay float32.
    assert weights["model.input_proj.bias"] == onnx.TensorProto.FLOAT16
    assert weights["model.cls_head.weight"] == weights["model.mask_head.4.weight"] == onnx.TensorProto.FLOAT
    x = np.random.default_rng(0).standard_normal((3, T, D)).astype(np.float32)
    probs, masks = _run(out, x, [T, T, 11])
    model, _ = gsmt_fast.load_checkpoint(ckpt)
    with torch.no_grad():
        ref_probs, ref_masks = model.predict(torch.from_numpy(x), torch.tensor([T, T, 11]))
    assert probs.dtype == masks.dtype == np.float32
    assert 0 < np.abs(masks - ref_masks.numpy()).max() < 1e-2  # rounded (it is fp16), but close
    assert np.abs(probs - ref_probs.numpy()).max() < 1e-2


def test_bf16_export_needs_opset_22_and_stays_parseable(tiny, tmp_path):
    ckpt, _, _ = tiny
    with pytest.raises(ValueError, match="opset >= 22"):
        export.export_onnx(ckpt, tmp_path / "bad.onnx", precision="bf16", opset=20)
    assert not (tmp_path / "bad.onnx").exists()
    path = export.export_onnx(ckpt, tmp_path / "m_bf16.onnx", precision="bf16")
    proto = onnx.load(str(path))
    export.check_tensorrt_ops(proto)
    assert export.read_metadata(proto)["opset"] == 22
    assert {o.name: o.type.tensor_type.elem_type for o in proto.graph.output} == {
        "probs": onnx.TensorProto.FLOAT, "masks": onnx.TensorProto.FLOAT}


def test_int8_quantizes_the_trunk_only_and_stays_close(tiny, tmp_path):
    ckpt, path, _ = tiny
    model, _, meta = gsmt_fast.load_checkpoint(ckpt, with_meta=True)
    rng = np.random.default_rng(0)
    videos = [rng.standard_normal((n, D)).astype(np.float32) for n in (30, 60, 90)]
    windows = export.calibration_windows(model, meta, videos)
    assert windows[0].shape[1:] == (T, D) and windows[1].max() == T and windows[1].min() < T  # padded last windows
    # Full 8-bit weights overflow AVX2's saturating u8 x s8 pairs on this random model (confident class head,
    # unit-variance inputs): the quantizer measures it on the calibration windows and warns, where VNNI is absent.
    with pytest.warns(UserWarning, match="reduce_range=True") if not _has_vnni() else _no_warning():
        export.quantize_int8(path, tmp_path / "m8_full.onnx", windows)
    full_error = export.read_metadata(tmp_path / "m8_full.onnx")["calibration"]["mean_abs_error"]["probs"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # 7-bit weights do not saturate: no warning
        out = export.quantize_int8(path, tmp_path / "m8.onnx", windows, reduce_range=True)
    proto = onnx.load(str(out))
    quantized_weights = {n.input[0] for n in proto.graph.node if n.op_type == "DequantizeLinear"}
    assert any("input_proj" in w or "mask_head.0" in w for w in quantized_weights)
    conv_weights = {n.name: n.input[1] for n in proto.graph.node if n.op_type == "Conv"}
    # The two output layers read their float32 weights directly; the other convolutions read dequantized ones.
    assert sum(w.endswith(("cls_head.weight", "mask_head.4.weight")) for w in conv_weights.values()) == 2
    meta8 = export.read_metadata(proto)
    assert meta8["precision"] == "int8" and meta8["calibration"]["windows"] == len(windows[0])
    assert meta8["calibration"]["reduce_range"] is True
    assert meta8["calibration"]["mean_abs_error"]["probs"] < full_error
    assert meta8["checkpoint_sha256"] == export.read_metadata(path)["checkpoint_sha256"]
    x, valid = windows
    probs, masks = _run(out, x, valid)
    ref_probs, ref_masks = _run(path, x, valid)
    assert 0 < np.abs(masks - ref_masks).max() < 0.01
    assert np.abs(probs - ref_probs).max() < 0.1
    assert meta8["calibration"]["max_abs_error"]["masks"] == pytest.approx(np.abs(masks - ref_masks).max(), rel=1e-6)
    assert meta8["calibration"]["mean_abs_error"]["probs"] == pytest.approx(np.abs(probs - ref_probs).mean(), rel=1e-4)
    with pytest.raises(ValueError, match="calibration"):
        export.export_onnx(ckpt, tmp_path / "no.onnx", precision="int8")


def _has_vnni() -> bool:
    from pathlib import Path

    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_vnni" in flags or "avx_vnni" in flags or "amx_int8" in flags


@contextlib.contextmanager
def _no_warning():
    yield


def test_cache_rebuilds_for_a_changed_checkpoint_and_never_trusts_a_foreign_entry(tiny, tmp_path):
    ckpt, first, root = tiny
    cache = root / "cache"
    model0, _, meta0 = gsmt_fast.load_checkpoint(ckpt, with_meta=True)
    assert export.cached_onnx(model0, meta0, cache_dir=cache) == first  # a valid entry is reused as it is
    # The checkpoint changes (new weights at the same path): a different entry, built from the new weights.
    changed = _save(_tiny_model(5), tmp_path / "tiny.safetensors")
    model1, _, meta1 = gsmt_fast.load_checkpoint(changed, with_meta=True)
    second = export.cached_onnx(model1, meta1, cache_dir=cache)
    assert second != first
    digest1 = export.checkpoint_digest(model1, meta1)
    assert export.read_metadata(second)["checkpoint_sha256"] == digest1
    x = np.random.default_rng(3).standard_normal((2, T, D)).astype(np.float32)
    with torch.no_grad():
        ref_masks = model1.predict(torch.from_numpy(x), torch.tensor([T, T]))[1].numpy()
    assert np.abs(_run(second, x, [T, T])[1] - ref_masks).max() <= 1e-4
    # A foreign entry under the new checkpoint's name (the old checkpoint's graph) is rebuilt, not used.
    shutil.copy(first, second)
    rebuilt = export.cached_onnx(model1, meta1, cache_dir=cache)
    assert rebuilt == second and export.read_metadata(rebuilt)["checkpoint_sha256"] == digest1
    assert np.abs(_run(rebuilt, x, [T, T])[1] - ref_masks).max() <= 1e-4
    # A truncated entry is not valid either (cached_onnx rebuilds whatever is not valid, as above).
    data = second.read_bytes()
    assert export.cache_entry_matches(second, {"checkpoint_sha256": digest1})
    second.write_bytes(data[: len(data) // 3])
    assert not export.cache_entry_matches(second, {"checkpoint_sha256": digest1})


def test_bad_arguments_are_named():
    for bad in ("1:2", "a:b:c", "4:2:8", "0:1:2"):
        with pytest.raises(ValueError, match="batch range"):
            export.parse_batch(bad)
    assert export.parse_batch("1:64:256") == (1, 64, 256)
    with pytest.raises(ValueError, match="precision"):
        export.ExportedNetwork(_tiny_model(0), "fp8")
    with pytest.raises(ValueError, match="too old"):
        export.export_model(_tiny_model(0), None, "x.onnx", opset=13)


def test_tensorrt_bindings_are_the_exported_graphs_inputs_and_outputs(tiny):
    """The tensorrt backend binds tensors by the names and dtypes it expects; they must be the graph's."""
    from gsmt_fast.backends.tensorrt_backend import io_specs

    ckpt, path, _ = tiny
    proto = onnx.load(str(path))
    elem = {torch.float32: onnx.TensorProto.FLOAT, torch.int64: onnx.TensorProto.INT64}
    graph = {v.name: (True, v) for v in proto.graph.input} | {v.name: (False, v) for v in proto.graph.output}
    specs = io_specs(gsmt_fast.load_checkpoint(ckpt)[1])
    assert {s.name for s in specs} == set(graph)
    for s in specs:
        is_input, value = graph[s.name]
        dims = value.type.tensor_type.shape.dim
        assert is_input == s.is_input and value.type.tensor_type.elem_type == elem[s.dtype]
        assert [d.dim_value for d in dims[1:]] == list(s.shape[1:]) and dims[0].dim_param
