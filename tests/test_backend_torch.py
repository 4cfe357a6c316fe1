"""The ``torch`` backend gives the reference backend's detections (same segments and labels, close scores)."""

import numpy as np
import pytest
import torch

import gsmt_fast
from gsmt_fast.postprocess import native

pytestmark = pytest.mark.skipif(not native.available(), reason="gsmt_fast._C is not built")


def _detect_both(ckpt, videos, **kw):
    ref = gsmt_fast.Detector(ckpt, backend="reference").detect(videos, **kw)
    fast = gsmt_fast.Detector(ckpt, backend="torch", precision="fp32").detect(videos, **kw)
    return ref, fast


def _assert_same(ref, fast, score_rtol):
    for r, f in zip(ref, fast):
        assert len(r) == len(f)
        np.testing.assert_array_equal(r.labels, f.labels)
        np.testing.assert_allclose(r.segments, f.segments, rtol=0, atol=1e-9)
        np.testing.assert_allclose(r.scores, f.scores, rtol=score_rtol)


def test_torch_backend_equals_reference_on_trained_checkpoint(trained_run, small_thumos):
    from gsmt_fast.data.annotations import load_annotations
    from gsmt_fast.data.features import FeatureStore

    run, _ = trained_run
    aset = load_annotations(small_thumos / "annotations.json")
    store = FeatureStore(small_thumos / "features")
    videos = aset.subset("validation") + aset.subset("training")[:4]
    feats = [store.load(v.video_id) for v in videos]
    ref, fast = _detect_both(run / "best.safetensors", feats, fps=[v.fps for v in videos],
                             duration=[v.duration for v in videos])
    assert sum(len(r) for r in ref) > 0
    _assert_same(ref, fast, score_rtol=1e-6)


@pytest.mark.parametrize("mode", ["short", "long"])
def test_torch_backend_equals_reference_resize_mode(tmp_path, mode):
    torch.manual_seed(0)
    model = gsmt_fast.GSMT(gsmt_fast.GSMTConfig.preset("tiny", num_classes=4, temporal_scale=40, input_dim=8))
    with torch.no_grad():
        model.cls_head.weight.mul_(8)  # confident classes, so that candidates pass θ_c
    p = tmp_path / "m.safetensors"
    gsmt_fast.save_checkpoint(model, p, class_names=list("abcd"), grid={"convention": "resize"},
                              inference={"mode": mode})
    rng = np.random.default_rng(0)
    videos = [rng.standard_normal((n, 8)).astype(np.float32) for n in (5, 40, 77, 300)]
    ref, fast = _detect_both(p, videos, duration=[3.0, 10.0, 20.0, 90.0])
    assert sum(len(r) for r in ref) > 0
    _assert_same(ref, fast, score_rtol=1e-6)


def test_torch_backend_precision_errors(tmp_path, tiny_checkpoint):
    p = tiny_checkpoint
    with pytest.raises(ValueError, match="precision"):
        gsmt_fast.Detector(p, backend="torch", precision="fp8")
    det = gsmt_fast.Detector(p, backend="torch", precision="bf16")
    r = det.detect(np.random.default_rng(0).standard_normal((30, 4)).astype(np.float32), fps=30.0)
    assert r.segments.shape[1] == 2


def test_default_precision_is_bf16_exactly_where_the_cpu_has_it(tmp_path, tiny_checkpoint):
    from gsmt_fast.backends.torch_backend import cpu_supports_bf16

    p = tiny_checkpoint
    expected = "bf16" if cpu_supports_bf16() else "fp32"
    assert gsmt_fast.Detector(p, backend="torch").backend.precision == expected


def test_bf16_keeps_the_output_layers_in_fp32():
    """bf16 autocast runs the body; the class head and the final mask conv get float32 inputs and weights, so their
    outputs equal the fp32 layers applied to the (bf16-computed) embeddings."""
    from gsmt_fast.backends.torch_backend import TorchBackend

    torch.manual_seed(0)
    model = gsmt_fast.GSMT(gsmt_fast.GSMTConfig.preset("tiny", num_classes=3, temporal_scale=16, input_dim=8))
    backend = TorchBackend(model, precision="bf16")
    x = torch.randn(2, 16, 8)
    n = np.array([16, 9])
    probs, masks = backend.forward(x.numpy(), n)
    assert probs.dtype == torch.float32 and masks.dtype == torch.float32
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        e = model.embed(x, torch.as_tensor(n))
        h = model.mask_head[:-1](e)
    with torch.no_grad():
        expected_masks = torch.sigmoid(model.mask_head[-1](h.float()))
        expected_probs = torch.softmax(model.cls_head(e.float()), dim=1)
    torch.testing.assert_close(masks, expected_masks, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(probs, expected_probs, rtol=1e-6, atol=1e-7)
    # ... and stay close to the fp32 model (the body's bf16 rounding only).
    with torch.no_grad():
        ref_probs, ref_masks = model(x, torch.as_tensor(n))
    assert (masks - ref_masks).abs().max() < 0.05


def test_auto_picks_torch_when_the_extension_is_built(tmp_path, tiny_checkpoint):
    """On a CPU auto takes a compiled path: torch (or, on CPUs without bf16 units, the measured faster of torch and
    onnxruntime: tests/test_backend_onnxruntime.py); an explicit precision always takes torch."""
    from gsmt_fast.detector import default_backend

    p = tiny_checkpoint
    assert gsmt_fast.Detector(p, precision="fp32").backend.name == "torch"
    assert default_backend("cpu") in ("torch", "onnxruntime")
