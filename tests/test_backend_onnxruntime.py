"""The ``onnxruntime`` backend: detections equal the ``reference`` backend's on the README's trained synthetic
checkpoint, fp16 keeps the validation mAP, precision/calibration errors, and ``backend="auto"``'s policy."""

from pathlib import Path

import numpy as np
import pytest
import torch

import gsmt_fast
from gsmt_fast import detector as detector_module
from gsmt_fast.postprocess import native

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytestmark = pytest.mark.skipif(not native.available(), reason="gsmt_fast._C is not built")

README_CKPT = Path(__file__).resolve().parent.parent / "bench" / "assets" / "thumos.safetensors"
THUMOS_TIOUS = (0.3, 0.4, 0.5, 0.6, 0.7)


def _validation(root):
    from gsmt_fast.data.annotations import detect_kwargs, load_annotations
    from gsmt_fast.data.features import FeatureStore

    aset = load_annotations(root / "annotations.json")
    videos = aset.subset("validation")
    store = FeatureStore(root / "features")
    return [store.load(v.video_id) for v in videos], detect_kwargs(videos), aset.to_activitynet(subset="validation")


def _same(a, b, score_atol=1e-5) -> bool:
    """Same detections as sets (order may differ between scores equal to within rounding)."""
    if len(a) != len(b):
        return False
    ka = np.lexsort((a.segments[:, 1], a.segments[:, 0], a.labels))
    kb = np.lexsort((b.segments[:, 1], b.segments[:, 0], b.labels))
    return (np.array_equal(a.labels[ka], b.labels[kb]) and np.allclose(a.segments[ka], b.segments[kb], atol=1e-6)
            and np.allclose(a.scores[ka], b.scores[kb], rtol=0, atol=score_atol))


def test_detections_equal_reference_on_the_readme_checkpoint(thumos_seed0, exact_exp):
    """Same detections, scores within 1e-5, wherever the two forwards lead to the same post-processing decisions.
    The forwards differ by float rounding (<= 1e-4, also tested in test_export_onnx.py); where a mask value or a
    score lies that close to a threshold or to another score, both sides are right. So: most videos must be equal,
    and every other video must equal what the reference post-processing makes of ONNX Runtime's forward outputs —
    the backend changes how the network is computed, never what a detection is."""
    feats, kw, _ = _validation(thumos_seed0)
    ref = gsmt_fast.Detector(README_CKPT, backend="reference")
    ort = gsmt_fast.Detector(README_CKPT, backend="onnxruntime")
    assert ort.backend.name == "onnxruntime" and ort.backend.precision == "fp32"
    a, b = ref.detect(feats, **kw), ort.detect(feats, **kw)
    assert sum(len(r) for r in a) > 100
    same = [_same(r, o) for r, o in zip(a, b)]
    assert sum(same) >= 0.8 * len(a), f"only {sum(same)} of {len(a)} videos have the reference's detections"
    x, valid = ref.backend.pack([w for p in ref.plan(feats, **kw) for w in p.windows])
    for (rp, rm), (op, om) in [(ref.backend.forward(x, valid), ort.backend.forward(x, valid))]:
        assert np.abs(rp - op).max() <= 1e-4 and np.abs(rm - om).max() <= 1e-4
    oracle = gsmt_fast.Detector(README_CKPT, backend="reference")
    oracle.backend.forward = ort.backend.forward  # the reference post-processing of ONNX Runtime's outputs
    differing = [i for i, s in enumerate(same) if not s]
    explained = oracle.detect([feats[i] for i in differing], **{k: [v[i] for i in differing] for k, v in kw.items()})
    for i, c in zip(differing, explained):
        assert _same(b[i], c, score_atol=1e-9), f"video {i}: the backend's post-processing is not the reference's"


def test_fp16_keeps_validation_map_within_0005_of_fp32(thumos_seed0):
    feats, kw, gt = _validation(thumos_seed0)
    maps = {}  # torch fp32 computes the reference's detections exactly (test_backend_torch.py), faster
    for backend, precision in (("torch", "fp32"), ("onnxruntime", "fp16")):
        det = gsmt_fast.Detector(README_CKPT, backend=backend, precision=precision)
        payload = detector_module.results_to_json(det.detect(feats, **kw))
        maps[backend] = gsmt_fast.evaluate(gt, payload, subset="validation",
                                           tiou_thresholds=THUMOS_TIOUS).average_mAP
    assert maps["torch"] > 0.6  # the trained checkpoint on its own benchmark (README: 0.658)
    assert abs(maps["onnxruntime"] - maps["torch"]) <= 0.005, maps


def test_precision_and_calibration_errors(tmp_path, tiny_checkpoint):
    p = tiny_checkpoint
    with pytest.raises(ValueError, match="precision"):
        gsmt_fast.Detector(p, backend="onnxruntime", precision="bf16")
    with pytest.raises(ValueError, match="gsmt-fast export .*--precision int8 --calibration"):
        gsmt_fast.Detector(p, backend="onnxruntime", precision="int8")
    with pytest.raises(ValueError, match="valid backends"):
        gsmt_fast.Detector(p, backend="onnx")


@pytest.mark.filterwarnings("ignore:int8 outputs differ")  # random weights saturate on AVX2: test_export_onnx.py
def test_int8_backend_uses_the_calibrated_model_from_the_cache(tmp_path):
    torch.manual_seed(0)
    model = gsmt_fast.GSMT(gsmt_fast.GSMTConfig.preset("tiny", num_classes=2, temporal_scale=16, input_dim=4))
    p = tmp_path / "m.safetensors"
    gsmt_fast.save_checkpoint(model, p, class_names=["a", "b"])
    rng = np.random.default_rng(0)
    videos = [rng.standard_normal((n, 4)).astype(np.float32) for n in (20, 40)]
    from gsmt_fast.export import export_onnx, read_metadata

    path = export_onnx(p, None, precision="int8", calibration=videos)
    det = gsmt_fast.Detector(p, backend="onnxruntime", precision="int8")
    assert Path(det.backend.onnx_path) == path and read_metadata(path)["precision"] == "int8"
    x, valid = det.backend.pack(det.plan(videos[1], fps=30.0)[0].windows)
    probs, masks = det.backend.forward(x, valid)
    ref_probs, ref_masks = model.predict(torch.from_numpy(x), torch.from_numpy(valid))
    assert 0 < np.abs(masks - ref_masks.detach().numpy()).max() < 0.1  # quantized, yet the same network


# ------------------------------------------------------------------------------------------------ auto policy
@pytest.fixture
def policy(monkeypatch):
    """Set what default_backend sees: bf16 units, GPU, installed packages."""
    from gsmt_fast.backends import onnxruntime_backend, tensorrt_backend, torch_backend

    def set_(bf16=False, cuda=False, trt=False, triton=False, ort=True):
        monkeypatch.setattr(torch_backend, "cpu_supports_bf16", lambda: bf16)
        monkeypatch.setattr(native, "cuda_available", lambda: cuda)
        monkeypatch.setattr(tensorrt_backend, "tensorrt_available", lambda: trt)
        monkeypatch.setattr("gsmt_fast.kernels.triton_available", lambda: triton)
        monkeypatch.setattr(onnxruntime_backend, "onnxruntime_available", lambda: ort)

    return set_


def test_auto_policy(policy, monkeypatch):
    default = detector_module.default_backend
    policy(bf16=True)
    assert default("cpu") == "torch"  # native bf16: torch's bf16 path
    policy(bf16=False)
    assert default("cpu") == detector_module.AVX2_CPU_BACKEND  # AVX2-only: by the measurements
    assert default("cpu", "fp32") == "torch"  # an explicit precision: the reference's arithmetic, bit for bit
    policy(bf16=False, ort=False)
    assert default("cpu") == "torch"  # the measured choice is not installed: torch
    policy(cuda=True, trt=True, triton=True)
    assert default("cuda") == "tensorrt"
    policy(cuda=True, trt=False, triton=True)
    assert default("cuda") == "triton"
    monkeypatch.setattr(native, "available", lambda: False)
    policy(bf16=False)
    assert default("cpu") == "reference"


def test_auto_falls_back_to_triton_when_the_engine_does_not_build(policy, monkeypatch, tiny_checkpoint):
    """GPU policy: TensorRT when its engine builds, else triton. Here tensorrt is 'installed' but importing it
    fails, as building an engine would: the Detector warns and takes the next choice."""
    import sys

    from gsmt_fast.backends import triton_backend

    policy(cuda=True, trt=True, triton=True)
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    built = {}

    class FakeTriton:
        name = "triton"

        def __init__(self, model, device=None, precision=None):
            built.update(device=device, precision=precision)

    monkeypatch.setattr(triton_backend, "TritonBackend", FakeTriton)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # the device check of Detector: a GPU "exists"
    p = tiny_checkpoint
    with pytest.warns(UserWarning, match="tensorrt engine is not usable.*gsmt_fast\\[tensorrt\\].*using triton"):
        det = gsmt_fast.Detector(p, backend="auto", device="cuda", precision="fp16")
    assert det.backend.name == "triton" and built == {"device": "cuda", "precision": "fp16"}


def test_cli_detect_logs_the_backend(tmp_path, tiny_checkpoint, capsys):
    from gsmt_fast.cli import main

    torch.manual_seed(0)
    p = tiny_checkpoint
    np.save(tmp_path / "v1.npy", np.random.default_rng(0).standard_normal((20, 4)).astype(np.float32))
    assert main(["detect", "--ckpt", str(p), "--features", str(tmp_path / "v1.npy"), "--fps", "30",
                 "--backend", "reference", "--out", str(tmp_path / "r.json")]) == 0
    assert "backend: reference (fp32)" in capsys.readouterr().err


def test_auto_falls_back_to_torch_when_the_export_fails(policy, monkeypatch, tiny_checkpoint):
    from gsmt_fast.backends import onnxruntime_backend

    policy(bf16=False)
    monkeypatch.setattr(detector_module, "AVX2_CPU_BACKEND", "onnxruntime")

    def failing_export(*args, **kwargs):
        raise RuntimeError("the exporter failed")

    monkeypatch.setattr(onnxruntime_backend, "OnnxRuntimeBackend", failing_export)
    p = tiny_checkpoint
    with pytest.warns(UserWarning, match="onnxruntime engine is not usable \\(the exporter failed\\); using torch"):
        det = gsmt_fast.Detector(p)
    assert det.backend.name == "torch"
