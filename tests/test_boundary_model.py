"""The boundary-refined variant end to end: the model option (the paper model unchanged without it), training with
the boundary loss, and every backend giving the reference backend's detections for a model with the boundary head.

The ``triton`` test runs its kernels under Triton's interpreter here (tests/conftest.py sets ``TRITON_INTERPRET=1``
without a GPU) with the C++ post-processing; the CUDA post-processing is covered by the GPU-marked test in
tests/test_boundary_candidates.py.
"""

import json

import numpy as np
import pytest
import torch
from detection_checks import assert_same_detections
from training_setup import THUMOS_CONFIG, TINY

import gsmt_fast
from gsmt_fast.postprocess import native

needs_native = pytest.mark.skipif(not native.available(), reason="gsmt_fast._C is not built")


def tiny_model(boundary_head=True, t=24, d=8, k=3, seed=0):
    torch.manual_seed(seed)
    cfg = gsmt_fast.GSMTConfig.preset("tiny", num_classes=k, temporal_scale=t, input_dim=d, boundary_head=boundary_head)
    model = gsmt_fast.GSMT(cfg)
    with torch.no_grad():
        model.cls_head.weight.mul_(8)  # confident classes, so that candidates pass θ_c
    return model.eval()


def checkpoint(tmp_path, model, convention="stride", **inference):
    p = tmp_path / "m.safetensors"
    k = model.cfg.num_classes
    gsmt_fast.save_checkpoint(model, p, class_names=[f"c{i}" for i in range(k)], grid={"convention": convention},
                              inference=inference)
    return p


def videos(d=8):
    rng = np.random.default_rng(0)
    # one padded window, a whole window, and multi-window videos (candidates merged per video)
    return [rng.standard_normal((n, d)).astype(np.float32) for n in (5, 24, 40, 77)]



# ---------------------------------------------------------------------------------------------------------------
# model


def test_paper_model_is_unchanged_by_the_option():
    paper = tiny_model(boundary_head=False)
    variant = tiny_model(boundary_head=True)
    assert not hasattr(paper, "boundary_head") or paper.boundary_head is None
    paper_state, variant_state = paper.state_dict(), variant.state_dict()
    assert set(variant_state) - set(paper_state) == {"boundary_head.weight", "boundary_head.bias"}
    for name, value in paper_state.items():  # the head is built last: the same seed draws the same paper weights
        assert torch.equal(value, variant_state[name]), name
    x = torch.randn(2, 24, 8)
    with torch.no_grad():
        assert len(paper(x)) == 2 and len(paper.predict(x)) == 2
        logits, masks, boundaries = variant(x, torch.tensor([24, 10]))
        paper_logits, paper_masks = paper(x, torch.tensor([24, 10]))
    assert torch.equal(logits, paper_logits) and torch.equal(masks, paper_masks)
    assert boundaries.shape == (2, 2, 24) and (boundaries > 0).all()
    # the head's initial output is about BOUNDARY_INIT snippets (bias), not softplus(0)
    assert abs(float(boundaries.mean()) - gsmt_fast.model.BOUNDARY_INIT) < 1.5


def test_bf16_prediction_keeps_the_boundary_head_in_fp32():
    from gsmt_fast.model import predict_bf16

    model = tiny_model()
    x = torch.randn(2, 24, 8)
    n = torch.tensor([24, 9])
    with torch.no_grad():
        probs, masks, boundaries = predict_bf16(model, x, n)
        _, _, reference = model.predict(x, n)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            h = model.mask_head[:-1](model.embed(x, n))
        expected = torch.nn.functional.softplus(model.boundary_head(h.float()))
    assert boundaries.dtype == torch.float32
    torch.testing.assert_close(boundaries, expected, rtol=1e-6, atol=1e-6)
    assert (boundaries - reference).abs().max() < 0.1  # bf16 trunk rounding only


def test_checkpoint_round_trip(tmp_path):
    model = tiny_model()
    loaded, cfg = gsmt_fast.load_checkpoint(checkpoint(tmp_path, model))
    assert cfg.boundary_head and loaded.boundary_head is not None
    assert torch.equal(loaded.boundary_head.weight, model.boundary_head.weight)


# ---------------------------------------------------------------------------------------------------------------
# backends


@needs_native
@pytest.mark.parametrize("convention", ["stride", "resize"])
def test_torch_backend_equals_reference(tmp_path, convention):
    p = checkpoint(tmp_path, tiny_model(), convention=convention)
    kw = {"fps": 30.0} if convention == "stride" else {"duration": [2.0, 9.0, 30.0, 50.0]}
    ref = gsmt_fast.Detector(p, backend="reference").detect(videos(), **kw)
    fast = gsmt_fast.Detector(p, backend="torch", precision="fp32").detect(videos(), **kw)
    assert sum(len(r) for r in ref) > 0
    # boundary segments are not on the snippet grid (mask runs would be)
    units = ref[1].segments / (4 / 30.0)
    assert not np.allclose(units, np.round(units))
    assert_same_detections(ref, fast, score_rtol=1e-6)
    bf16 = gsmt_fast.Detector(p, backend="torch", precision="bf16").detect(videos(), **kw)
    assert [len(r) > 0 for r in bf16] == [len(r) > 0 for r in ref]


@needs_native
def test_masks_setting_gives_the_mask_model_detections(tmp_path):
    variant = tiny_model(boundary_head=True)
    paper = tiny_model(boundary_head=False)  # the same trunk and heads (same seed), no boundary head
    masks_only = gsmt_fast.Detector(checkpoint(tmp_path, variant, candidates="masks"), backend="torch",
                                    precision="fp32").detect(videos(), fps=30.0)
    (tmp_path / "paper").mkdir()
    plain = gsmt_fast.Detector(checkpoint(tmp_path / "paper", paper), backend="torch",
                               precision="fp32").detect(videos(), fps=30.0)
    assert sum(len(r) for r in plain) > 0
    assert_same_detections(plain, masks_only, score_rtol=0)
    with pytest.raises(ValueError, match="needs a model with the boundary head"):
        gsmt_fast.Detector(checkpoint(tmp_path / "paper", paper), inference={"candidates": "boundaries"},
                           backend="torch").detect(videos()[0], fps=30.0)


@needs_native
def test_triton_backend_equals_reference(tmp_path):
    from gsmt_fast.kernels import triton_available

    if not triton_available():
        pytest.skip("needs triton")
    if torch.cuda.is_available():
        pytest.skip("interpreter test (CPU tensors)")
    p = checkpoint(tmp_path, tiny_model())
    ref = gsmt_fast.Detector(p, backend="reference").detect(videos(), fps=30.0)
    fast = gsmt_fast.Detector(p, backend="triton", precision="fp32").detect(videos(), fps=30.0)
    assert sum(len(r) for r in ref) > 0
    # Boundary segments carry the distances' float32 values, which the kernels' GEMMs sum in another order than
    # PyTorch's (~1e-7 relative): 1e-6 s is ~1e-5 of a snippet here (4 frames at 30 fps), far below a wrong
    # distance or snippet.
    assert_same_detections(ref, fast, score_rtol=1e-5, segment_atol=1e-6)


# ---------------------------------------------------------------------------------------------------------------
# training


def test_training_with_the_boundary_head(small_thumos, tmp_path):
    from gsmt_fast.train import load_config, train

    cfg = load_config(THUMOS_CONFIG, TINY + ["train.epochs=2", "model.boundary_head=true",
                                            "loss.lambda_boundary=2.0"])
    train(cfg, tmp_path, data_root=small_thumos, progress=False, log=lambda *a: None)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    first, last = metrics["epochs"]
    assert "loss_boundary" in first and "val_average_mAP" in first
    assert last["loss_boundary"] < first["loss_boundary"]
    assert first["loss_total"] == pytest.approx(first["loss_cls"] + first["loss_mask"] + 2.0 * first["loss_boundary"])
    det = gsmt_fast.Detector(tmp_path / "best.safetensors", backend="reference")
    assert det.model_config.boundary_head


# ---------------------------------------------------------------------------------------------------------------
# ONNX export, onnxruntime, streaming


def test_onnx_export_has_the_boundaries_output(tmp_path):
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    from gsmt_fast import export

    model = tiny_model()
    ckpt = checkpoint(tmp_path, model)
    x = np.random.default_rng(0).standard_normal((3, 24, 8)).astype(np.float32)
    n = np.array([24, 24, 9], np.int64)
    with torch.no_grad():
        expected = [t.numpy() for t in model.predict(torch.from_numpy(x), torch.from_numpy(n))]
    for precision, atol in (("fp32", 1e-5), ("fp16", 2e-2)):
        path = export.export_onnx(ckpt, tmp_path / f"m_{precision}.onnx", precision=precision)
        proto = onnx.load(str(path))
        assert [o.name for o in proto.graph.output] == ["probs", "masks", "boundaries"]
        meta = export.read_metadata(proto)
        assert meta["outputs"] == ["probs", "masks", "boundaries"] and meta["model"]["boundary_head"] is True
        if precision == "fp16":  # the boundary head is an output layer: float32 like the other two
            weights = {i.name: i.data_type for i in proto.graph.initializer}
            assert weights["model.boundary_head.weight"] == onnx.TensorProto.FLOAT
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = session.run(["probs", "masks", "boundaries"], {"features": x, "valid_len": n})
        assert got[2].dtype == np.float32 and got[2].shape == (3, 2, 24)
        for a, b in zip(got, expected):
            np.testing.assert_allclose(a, b, rtol=0, atol=atol)
    # the paper model's graph keeps exactly its two outputs
    (tmp_path / "paper").mkdir()
    paper = export.export_onnx(checkpoint(tmp_path / "paper", tiny_model(boundary_head=False)), tmp_path / "p.onnx")
    assert export.read_metadata(paper)["outputs"] == ["probs", "masks"]


@needs_native
def test_onnxruntime_backend_equals_reference(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    p = checkpoint(tmp_path, tiny_model())
    ref = gsmt_fast.Detector(p, backend="reference").detect(videos(), fps=30.0)
    det = gsmt_fast.Detector(p, backend="onnxruntime")
    assert det.backend.name == "onnxruntime" and det.backend.output_names == ["probs", "masks", "boundaries"]
    fast = det.detect(videos(), fps=30.0)
    assert sum(len(r) for r in ref) > 0
    # ONNX Runtime sums in another order than PyTorch (~1e-7 relative): the distances and scores to that rounding
    assert_same_detections(ref, fast, score_rtol=1e-5, segment_atol=1e-6)


@needs_native
def test_onnxruntime_refuses_a_graph_without_the_boundaries_output(tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    from gsmt_fast import export

    paper = tiny_model(boundary_head=False)
    onnx_path = export.export_onnx(checkpoint(tmp_path, paper), tmp_path / "paper.onnx")
    from gsmt_fast.backends.onnxruntime_backend import OnnxRuntimeBackend

    with pytest.raises(ValueError, match="outputs are"):  # the paper graph for the variant: never run
        OnnxRuntimeBackend(tiny_model(), onnx_path=onnx_path)


@needs_native
def test_stream_with_disjoint_hops_gives_the_offline_window_detections(tmp_path):
    """The streaming oracle of tests/test_streaming.py for the boundary head: with hop = T, no margin, everything
    confident and no suppression of distinct segments, a stream of k·T snippets emits exactly the offline
    window-mode detections without overlap (boundary segments are clamped to their window)."""
    model = tiny_model()
    p = checkpoint(tmp_path, model)
    det = gsmt_fast.Detector(p, backend="torch", precision="fp32",
                             inference={"max_detections": 100_000, "window_overlap": 0.0})
    x = np.random.default_rng(7).standard_normal((3 * 24, 8)).astype(np.float32)
    offline = det.detect(x, fps=30.0)
    policy = {"hop": 24, "margin": 0, "confident_score": 0.0, "horizon": 24, "suppress_iou": 1.0 - 1e-9}
    session = det.stream(fps=30.0, policy=policy)
    from gsmt_fast.streaming import StreamDetections

    streamed = StreamDetections.concatenate([session.push(x[i:i + 10]) for i in range(0, len(x), 10)] +
                                            [session.close()])
    assert len(offline) > 10
    units = offline.segments / (4 / 30.0)
    assert not np.allclose(units, np.round(units))  # boundary candidates, not mask runs

    def rows(r):
        order = np.lexsort((r.segments[:, 1], r.segments[:, 0], r.labels))
        return r.labels[order], r.segments[order], r.scores[order]

    (la, sa, ca), (lb, sb, cb) = rows(offline), rows(streamed)
    np.testing.assert_array_equal(la, lb)
    # The stream runs its windows one at a time, offline detection in one batch: float32 sums in another order move
    # the distances (so the segments, unlike mask runs) by ~1e-7 of a snippet; a wrong window or snippet is >= 0.1 s.
    np.testing.assert_allclose(sa, sb, rtol=0, atol=1e-6)
    np.testing.assert_allclose(ca, cb, rtol=1e-5)
