"""The ``triton`` backend gives the ``reference`` backend's detections.

On this CPU-only machine its kernels run under Triton's interpreter (``TRITON_INTERPRET=1``, set by conftest.py) with
the C++ CPU post-processing; the GPU-marked tests (CUDA graphs, buckets, pinned host staging, the CUDA
post-processing) run on an H100 through ``bench/gpu_check.sh``.
"""

import os

import numpy as np
import pytest
import torch
from detection_checks import assert_same_detections
from gsmt_fast.kernels import triton_available

import gsmt_fast
from gsmt_fast.postprocess import native

pytestmark = pytest.mark.skipif(not (triton_available() and native.available()),
                                reason="needs triton and gsmt_fast._C")  # both are in the test install

ON_GPU = torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1"



def _tiny_checkpoint(tmp_path, t=24, d=8, k=3, mode="short", convention="stride"):
    torch.manual_seed(0)
    model = gsmt_fast.GSMT(gsmt_fast.GSMTConfig.preset("tiny", num_classes=k, temporal_scale=t, input_dim=d))
    with torch.no_grad():
        model.cls_head.weight.mul_(8)  # confident classes, so that candidates pass θ_c
    p = tmp_path / "m.safetensors"
    gsmt_fast.save_checkpoint(model, p, class_names=[f"c{i}" for i in range(k)], grid={"convention": convention},
                              inference={"mode": mode})
    return p


@pytest.mark.skipif(ON_GPU, reason="interpreter test (the GPU runs the fp32 path in test_triton_gpu_*)")
def test_triton_backend_equals_reference_on_trained_checkpoint(trained_run, small_thumos):
    """fp32 kernels (IEEE dots) + the C++ post-processing: the reference's detections, on a trained model, over
    whole-video windows and multi-window videos."""
    from gsmt_fast.data.annotations import detect_kwargs, load_annotations
    from gsmt_fast.data.features import FeatureStore

    run, _ = trained_run
    aset = load_annotations(small_thumos / "annotations.json")
    store = FeatureStore(small_thumos / "features")
    videos = aset.subset("validation")[:4]
    feats = [store.load(v.video_id) for v in videos]
    ref = gsmt_fast.Detector(run / "best.safetensors", backend="reference").detect(feats, **detect_kwargs(videos))
    fast_det = gsmt_fast.Detector(run / "best.safetensors", backend="triton", precision="fp32")
    assert fast_det.backend.name == "triton" and fast_det.backend.precision == "fp32"
    fast = fast_det.detect(feats, **detect_kwargs(videos))
    assert sum(len(r) for r in ref) > 0
    assert_same_detections(ref, fast, score_rtol=1e-5)


@pytest.mark.parametrize("mode", ["short", "long"])
def test_triton_backend_equals_reference_resize_mode_with_padding(tmp_path, mode):
    """Resize mode (one window per video) and window mode with a padded last window: valid_len < T reaches the
    attention's key mask, the final norm's zeroing and the post-processing."""
    p = _tiny_checkpoint(tmp_path, mode=mode, convention="resize")
    rng = np.random.default_rng(0)
    videos = [rng.standard_normal((n, 8)).astype(np.float32) for n in (3, 24, 50)]
    ref = gsmt_fast.Detector(p, backend="reference").detect(videos, duration=[2.0, 9.0, 30.0])
    fast = gsmt_fast.Detector(p, backend="triton", precision="fp32").detect(videos, duration=[2.0, 9.0, 30.0])
    assert sum(len(r) for r in ref) > 0
    assert_same_detections(ref, fast, score_rtol=1e-5)
    # window mode: 5 snippets (one padded window) and 40 (two windows, the last padded)
    ref = gsmt_fast.Detector(p, backend="reference").detect([videos[0][:5], videos[2][:40]], fps=30.0)
    fast = gsmt_fast.Detector(p, backend="triton", precision="fp32").detect([videos[0][:5], videos[2][:40]],
                                                                            fps=30.0)
    assert_same_detections(ref, fast, score_rtol=1e-5)


def test_triton_forward_matches_the_model_and_fp16_is_close(tmp_path):
    from gsmt_fast.backends.triton_backend import TritonBackend

    torch.manual_seed(1)
    model = gsmt_fast.GSMT(gsmt_fast.GSMTConfig.preset("tiny", num_classes=4, temporal_scale=20, input_dim=16)).eval()
    x = torch.randn(3, 20, 16)
    n = np.array([20, 11, 1])
    with torch.no_grad():
        logits, ref_masks = model(x, torch.as_tensor(n))
    ref_probs = torch.softmax(logits, dim=1)
    for precision, tol in (("fp32", 1e-5), ("fp16", 5e-3)):
        probs, masks = TritonBackend(model, precision=precision).forward(x.numpy(), n)
        assert probs.dtype == torch.float32
        assert masks.dtype == torch.float32  # also in fp16: float16 masks cost accuracy (triton_backend docstring)
        for b, v in enumerate(n):  # only the valid part means anything (padded snippets' columns are not read)
            assert (probs[b, :, :v] - ref_probs[b, :, :v]).abs().max() <= tol
            assert (masks[b, :, :v].float() - ref_masks[b, :, :v]).abs().max() <= tol


def test_triton_backend_errors(tmp_path, monkeypatch):
    p = _tiny_checkpoint(tmp_path)
    with pytest.raises(ValueError, match="precision"):
        gsmt_fast.Detector(p, backend="triton", precision="fp8")
    if not ON_GPU:
        with pytest.raises(ValueError, match="bf16.*interpret|interpret.*bf16|TRITON_INTERPRET"):
            gsmt_fast.Detector(p, backend="triton", precision="bf16")
        monkeypatch.delenv("TRITON_INTERPRET")
        with pytest.raises(RuntimeError, match="CUDA GPU"):
            gsmt_fast.Detector(p, backend="triton", device="cpu")


def test_auto_backend_is_triton_only_on_a_gpu(tmp_path):
    from gsmt_fast.detector import default_backend

    assert default_backend("cpu") in ("torch", "onnxruntime", "reference")
    expected = "triton" if native.cuda_available() and triton_available() else default_backend("cpu")
    assert default_backend("cuda") == expected


# ----------------------------------------------------------------------------------------------------------- GPU
gpu = pytest.mark.gpu


def _gpu_backend(tmp_path, precision="fp32", **kw):
    if not ON_GPU:
        pytest.skip("needs a CUDA GPU (run by bench/gpu_check.sh)")
    from gsmt_fast.backends.triton_backend import TritonBackend

    torch.manual_seed(0)
    model = gsmt_fast.GSMT(gsmt_fast.GSMTConfig.preset("small", num_classes=5, temporal_scale=64, input_dim=96))
    with torch.no_grad():
        model.cls_head.weight.mul_(6)
    return model, TritonBackend(model, device="cuda", precision=precision, **kw)


@gpu
def test_triton_gpu_graph_buckets_equal_eager_and_reference(tmp_path):
    """A batch of 3 replayed in the graph of bucket 4 (one padding window), from host and from device features,
    equals the eager kernels + CUDA post-processing and the reference backend's detections."""
    from gsmt_fast.backends.reference import ReferenceBackend
    from gsmt_fast.config import InferenceConfig

    model, backend = _gpu_backend(tmp_path)
    cfg = InferenceConfig()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 64, 96)).astype(np.float32)
    n, scale, offset = np.array([64, 30, 1]), np.array([0.5, 1.0, 2.0]), np.array([0.0, 3.0, -1.0])
    graph = backend.detect_windows(x, n, scale, offset, cfg).as_list()
    device = backend.detect_windows(torch.from_numpy(x).cuda(), n, scale, offset, cfg).as_list()
    probs, masks = backend.forward(x, n)
    eager = backend.window_detections(probs, masks, n, scale, offset, cfg)
    ref_backend = ReferenceBackend(model.cpu().float())
    torch.backends.cudnn.allow_tf32 = False
    rp, rm = ref_backend.forward(x, n)
    ref = ref_backend.window_detections(rp, rm, n, scale, offset, cfg)
    assert sum(len(r[0]) for r in ref) > 0
    for g, d, e, r in zip(graph, device, eager, ref):
        for a in (d, e, r):
            np.testing.assert_array_equal(g[2], a[2])
            np.testing.assert_allclose(g[0], a[0], atol=1e-9)
            np.testing.assert_allclose(g[1], a[1], rtol=1e-5)


@gpu
def test_triton_gpu_chunks_and_double_buffered_copies(tmp_path):
    """More windows than max_batch: chunks with the side-stream copy of the next chunk give the same detections
    as one window at a time."""
    from gsmt_fast.config import InferenceConfig

    _, backend = _gpu_backend(tmp_path, precision="fp16", max_batch=4)
    cfg = InferenceConfig()
    rng = np.random.default_rng(1)
    x = rng.standard_normal((11, 64, 96)).astype(np.float32)
    n = rng.integers(1, 65, size=11)
    all_at_once = backend.detect_windows(x, n, 1.0, 0.0, cfg).as_list()
    one_by_one = [backend.detect_windows(x[i:i + 1], n[i:i + 1], 1.0, 0.0, cfg).as_list()[0] for i in range(11)]
    assert len(all_at_once) == 11
    for a, b in zip(all_at_once, one_by_one):
        np.testing.assert_array_equal(a[2], b[2])
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


@gpu
def test_triton_gpu_back_to_back_forwards_from_host_do_not_race(tmp_path):
    """forward() copies host features asynchronously out of one pinned buffer; a second call must not overwrite it
    while the first copy runs: two calls in a row give each input's own outputs."""
    _, backend = _gpu_backend(tmp_path, precision="fp32")
    rng = np.random.default_rng(2)
    xs = [rng.standard_normal((64, 64, 96)).astype(np.float32) for _ in range(2)]
    n = np.full(64, 64)
    together = [backend.forward(x, n) for x in xs]  # no synchronisation in between
    torch.cuda.synchronize()
    for x, (probs, masks) in zip(xs, together):
        alone_probs, alone_masks = backend.forward(x, n)
        torch.cuda.synchronize()
        torch.testing.assert_close(probs, alone_probs, rtol=0, atol=0)
        torch.testing.assert_close(masks, alone_masks, rtol=0, atol=0)


@gpu
def test_triton_gpu_window_values_from_host_or_device_and_results_on_device(tmp_path):
    """valid_len/scale/offset as host arrays (one pinned copy per call) or as device tensors, detections copied to
    the host or kept on the device: the same detections. Two calls in a row without a synchronisation get their
    own values (scale and offset doubled: every second doubles exactly, IoUs are unchanged). A bad device
    valid_len is caught by the status check after the replay."""
    from gsmt_fast.config import InferenceConfig

    _, backend = _gpu_backend(tmp_path, precision="fp32")
    cfg = InferenceConfig()
    rng = np.random.default_rng(3)
    x = torch.from_numpy(rng.standard_normal((3, 64, 96)).astype(np.float32)).cuda()
    n, scale, offset = np.array([64, 30, 5]), np.array([0.5, 1.0, 2.0]), np.array([0.0, 3.0, -1.0])
    host = backend.detect_windows(x, n, scale, offset, cfg).as_list()
    assert sum(len(h[0]) for h in host) > 0
    on_device = [torch.from_numpy(a).cuda() for a in (n, scale, offset)]
    device = backend.detect_windows(x, *on_device, cfg, to_host=False).to_host().as_list()
    first = backend.detect_windows(x, n, scale, offset, cfg, to_host=False)
    second = backend.detect_windows(x, n, scale * 2, offset * 2, cfg, to_host=False)
    first, second = first.to_host().as_list(), second.to_host().as_list()
    for h, d, f, s in zip(host, device, first, second):
        for other in (d, f):
            for a, b in zip(h, other):
                np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(s[0], h[0] * 2)
        np.testing.assert_array_equal(s[1], h[1])
        np.testing.assert_array_equal(s[2], h[2])
    with pytest.raises(ValueError, match=r"valid_len must be in \[1, T=64\], got 0 \(window 1\)"):
        backend.detect_windows(x, torch.tensor([64, 0, 5]).cuda(), scale, offset, cfg)
