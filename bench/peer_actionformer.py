"""ActionFormer as a peer of GSMT: speed (called by bench/run.py) and accuracy on the synthetic benchmark.

The peer is the PyPI package ``actionformer`` (1.5.0: a fork of happyharrycn/actionformer_release with the original
``LocPointTransformer`` and its C++ SoftNMS ``nms_1d_cpu``). It is optional; install it into the venv with

    pip install pandas joblib                                   # what ``import actionformer`` needs
    pip install --no-deps --no-build-isolation actionformer==1.5.0

(``--no-build-isolation`` builds ``nms_1d_cpu`` against the venv's CPU torch instead of pulling a CUDA torch into an
isolated build; ``--no-deps`` skips torchvision/tensorboard/scipy, which neither the model nor its NMS import). When it
is not importable everything here reports why and is skipped.

    python bench/peer_actionformer.py --check
    python bench/peer_actionformer.py --train --data DIR [--out DIR] [--epochs 30] [--max-iters N] [--device cpu]

``--train`` trains ActionFormer (published THUMOS14 recipe, narrower) on a thumos-like synthetic dataset written by
``gsmt-fast synth --profile thumos-like --out DIR`` (ActionFormer JSON + one ``.npy`` per video, read by
ActionFormer's own THUMOS14 dataset class) and reports validation mAP@[0.3:0.1:0.7] with ``gsmt_fast.evaluate``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from common import DevicePeakMemory, HostPeakMemory, measure, summarize  # noqa: E402

BACKEND_NAME = "actionformer (peer)"
INSTALL_HINT = ("pip install pandas joblib && pip install --no-deps --no-build-isolation actionformer==1.5.0 "
                "(see bench/README.md)")

# Its published THUMOS14 (I3D) and ActivityNet settings that matter at test time.
THUMOS_TEST_CFG = {"pre_nms_thresh": 0.001, "pre_nms_topk": 2000, "iou_threshold": 0.1, "min_score": 0.001,
                   "max_seg_num": 200, "nms_method": "soft", "nms_sigma": 0.5, "duration_thresh": 0.001,
                   "multiclass_nms": True, "ext_score_file": None, "voting_thresh": 0.7}
ANET_TEST_CFG = {"pre_nms_thresh": 0.001, "pre_nms_topk": 2000, "iou_threshold": 0.1, "min_score": 0.001,
                 "max_seg_num": 100, "nms_method": "soft", "nms_sigma": 0.75, "duration_thresh": 0.001,
                 "multiclass_nms": False, "ext_score_file": None, "voting_thresh": 0.9}
THUMOS_TRAIN_CFG = {"center_sample": "radius", "center_sample_radius": 1.5, "loss_weight": 1.0,
                    "cls_prior_prob": 0.01, "init_loss_norm": 100, "clip_grad_l2norm": 1.0, "head_empty_cls": [],
                    "dropout": 0.0, "droppath": 0.1, "label_smoothing": 0.0}
THUMOS_WINDOW = 19  # local attention window of its THUMOS config
ANET_WINDOWS = [7, 7, 7, 7, 7, -1]
ANET_SEQ_LEN = 192  # its ActivityNet recipe resamples every video to 192 positions
PYRAMID_LEVELS = 6  # backbone_arch (2, 2, 5): strides 1 … 32


def unavailable_reason() -> str | None:
    """None when the peer can run here, else why not (and how to install it)."""
    try:
        import actionformer  # noqa: F401
        from actionformer.modeling.meta_archs import PtTransformer  # noqa: F401
    except Exception as e:  # noqa: BLE001 - any import failure means "skip", with the reason
        return f"cannot import actionformer ({type(e).__name__}: {e}); install: {INSTALL_HINT}"
    return None


def cpp_nms_note() -> str:
    from actionformer.utils.nms import HAS_CPP_NMS

    return ("its C++ SoftNMS (nms_1d_cpu)" if HAS_CPP_NMS
            else "its pure-Python SoftNMS fallback (nms_1d_cpu not built: slower than its usual setup)")


# ---------------------------------------------------------------------------------------------------- model
def window_sequence(temporal_scale: int) -> tuple[int, int]:
    """(sequence length, attention window) for THUMOS-like windows of T snippets.

    Its model needs the sequence length to be a multiple of stride·(window//2)·2 on every pyramid level. The
    published window (19) needs multiples of 576, far above T = 256, so keep the length (T rounded up to the top
    stride, 32) and take the largest odd window that divides it (9 for T = 256); global attention if none does.
    """
    top_stride = 2 ** (PYRAMID_LEVELS - 1)
    seq = math.ceil(temporal_scale / top_stride) * top_stride
    for window in range(THUMOS_WINDOW, 2, -2):
        if seq % (top_stride * (window // 2) * 2) == 0:
            return seq, window
    return seq, -1


def model_kwargs(input_dim: int, num_classes: int, seq_len: int, window, test_cfg: dict, width: int = 512,
                 train_cfg: dict | None = None) -> dict:
    from actionformer.core.config import DEFAULTS

    kw = copy.deepcopy(DEFAULTS["model"])
    kw.update(backbone_type="convTransformer", fpn_type="identity", backbone_arch=(2, 2, 5), scale_factor=2,
              n_mha_win_size=window, embd_dim=width, fpn_dim=width, head_dim=width, max_buffer_len_factor=6.0,
              input_dim=input_dim, num_classes=num_classes, max_seq_len=seq_len,
              train_cfg=copy.deepcopy(train_cfg or THUMOS_TRAIN_CFG), test_cfg=dict(test_cfg))
    return kw


def build_model(kwargs: dict, seed: int, device):
    from actionformer.modeling.meta_archs import PtTransformer

    torch.manual_seed(seed)
    return PtTransformer(**kwargs).to(device)


def heads(model, x, mask):
    """Its forward pass without ``preprocessing`` (which asserts batch size 1 at inference): backbone, neck,
    point generator and heads on an already padded batch ``x (B, C, L)``, ``mask (B, 1, L)``."""
    feats, masks = model.backbone(x, mask)
    fpn_feats, fpn_masks = model.neck(feats, masks)
    points = model.point_generator(fpn_feats)
    cls_logits = [c.permute(0, 2, 1) for c in model.cls_head(fpn_feats, fpn_masks)]
    offsets = [o.permute(0, 2, 1) for o in model.reg_head(fpn_feats, fpn_masks)]
    return points, [m.squeeze(1) for m in fpn_masks], cls_logits, offsets


def pack(feats: list[torch.Tensor], seq_len: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-padded ``(B, C, seq_len)`` batch and its validity mask, as its ``preprocessing`` builds them."""
    x = feats[0].new_zeros((len(feats), feats[0].shape[0], seq_len))
    lengths = torch.tensor([f.shape[-1] for f in feats])
    for f, row in zip(feats, x):
        row[:, :f.shape[-1]].copy_(f)
    mask = (torch.arange(seq_len)[None, :] < lengths[:, None]).unsqueeze(1)
    return x.to(device, non_blocking=True), mask.to(device)


# ---------------------------------------------------------------------------------------------------- speed
def bench_config(temporal_scale: int, mode: str, num_classes: int, input_dim: int, pool: list, time_kw: dict,
                 batches: list[int], device, timing, seed: int = 0, log=print, skipped: list | None = None):
    """Rows like bench/run.py's for ActionFormer on the same videos: (rows, model info, skip reason or None);
    batches left out for lack of time are appended to ``skipped``."""
    reason = unavailable_reason()
    if reason:
        return [], None, reason
    if mode == "window":
        seq_len, window = window_sequence(temporal_scale)
        test_cfg = THUMOS_TEST_CFG
    else:
        seq_len, window = max(ANET_SEQ_LEN, math.ceil(temporal_scale / 96) * 96), ANET_WINDOWS
        test_cfg = ANET_TEST_CFG
    try:
        model = build_model(model_kwargs(input_dim, num_classes, seq_len, window, test_cfg), seed, device).eval()
    except Exception as e:  # noqa: BLE001
        return [], None, f"its model does not build for T={temporal_scale} ({type(e).__name__}: {e})"

    with torch.no_grad():
        x1, m1 = pack([torch.zeros(input_dim, seq_len)], seq_len, device)
        flops, per_op = common.count_flops(lambda: heads(model, x1, m1))
    info = {"model": "actionformer", "T": temporal_scale, "mode": mode, "K": num_classes, "input_dim": input_dim,
            "seq_len": seq_len, "window": window, "params": common.count_parameters(model),
            "flops_per_video": flops, "flops_by_op": per_op,
            "nms": cpp_nms_note(), "test_cfg": dict(test_cfg)}
    log(f"  actionformer: sequence {seq_len}, attention window {window}, {info['params'] / 1e6:.1f} M params, "
        f"{flops / 1e9:.2f} GFLOPs/video, {info['nms']}")

    rows = []
    seconds_per_video = None
    for batch in batches:
        if seconds_per_video is not None and seconds_per_video * batch * (timing.warmup + 1) > timing.remaining():
            reason = f"time budget: batch {batch} would need ~{seconds_per_video * batch * 2:.0f} s"
            log(f"  {BACKEND_NAME} batch {batch}: skipped ({reason})")
            if skipped is not None:
                skipped.append({"backend": BACKEND_NAME, "T": temporal_scale, "mode": mode, "K": num_classes,
                                "batch": batch, "reason": reason})
            continue
        videos, kw = common.batch_of(pool, time_kw, batch)
        with torch.no_grad():
            row = bench_point(model, videos, kw, mode, seq_len, device, timing)
        row = {"backend": BACKEND_NAME, "T": temporal_scale, "mode": mode, "K": num_classes, **row}
        seconds_per_video = sum(row["seconds"][m]["median_s"] for m in ("end_to_end", "forward", "post")) / batch
        rows.append(row)
        log(f"  {BACKEND_NAME} batch {batch}: {row['videos_per_s']:.1f} videos/s (forward "
            f"{row['forward_videos_per_s']:.1f}, post {row['post_videos_per_s']:.1f}), "
            f"{row['candidates_per_window']:.0f} candidates/video into NMS")
    return rows, info, None


def video_meta(i: int, n: int, mode: str, seq_len: int, kw: dict) -> dict:
    """The per-video fields its ``inference`` reads to convert grid positions to seconds."""
    if mode == "window":  # native snippets, stride 4 frames, 16 frames each, as the THUMOS features
        fps = kw["fps"]
        return {"video_id": str(i), "fps": fps, "duration": (n * 4 + 16) / fps, "feat_stride": 4,
                "feat_num_frames": 16}
    duration = kw["duration"][i]  # resampled to seq_len positions: position p covers [p, p+1]·duration/seq_len
    return {"video_id": str(i), "fps": 1.0, "duration": duration, "feat_stride": duration / seq_len,
            "feat_num_frames": duration / seq_len}


def to_its_input(x: np.ndarray, mode: str, seq_len: int) -> torch.Tensor:
    """``(n, d)`` features → its ``(C, T)`` layout; resize mode resamples to ``seq_len`` as its ANet loader does."""
    feats = torch.from_numpy(np.ascontiguousarray(x.T))
    if mode == "resize":
        feats = F.interpolate(feats[None], size=seq_len, mode="linear", align_corners=False)[0]
    return feats


def bench_point(model, videos, kw, mode, seq_len, device, timing) -> dict:
    batch = len(videos)
    metas = [video_meta(i, len(v), mode, seq_len, kw) for i, v in enumerate(videos)]
    last = {}

    def end_to_end():
        x, mask = pack([to_its_input(v, mode, seq_len) for v in videos], seq_len, device)
        last["results"] = model.inference(metas, *heads(model, x, mask))

    with HostPeakMemory() as host, DevicePeakMemory(device) as dev:
        e2e = summarize(measure(end_to_end, device, timing))

    x, mask = pack([to_its_input(v, mode, seq_len) for v in videos], seq_len, device)
    fwd = summarize(measure(lambda: heads(model, x, mask), device, timing))
    outputs = heads(model, x, mask)
    post = summarize(measure(lambda: model.inference(metas, *outputs), device, timing))

    points, fpn_masks, cls_logits, offsets = outputs
    sample = range(min(batch, 8))  # candidates entering its NMS (after its score threshold and top-k per level)
    candidates = [len(model.inference_single_video(points, [m[i] for m in fpn_masks], [c[i] for c in cls_logits],
                                                   [o[i] for o in offsets])["scores"]) for i in sample]
    return {
        "batch": batch, "windows": batch,
        "videos_per_s": batch / e2e["median_s"], "latency_p50_ms": 1e3 * e2e["p50_s"],
        "latency_p99_ms": 1e3 * e2e["p99_s"], "reps": e2e["n"],
        "forward_ms": 1e3 * fwd["median_s"], "forward_videos_per_s": batch / fwd["median_s"],
        "post_ms": 1e3 * post["median_s"], "post_videos_per_s": batch / post["median_s"],
        "candidates_per_window": float(np.mean(candidates)),
        "detections_per_video": float(np.mean([len(r["scores"]) for r in last["results"]])),
        "host_peak_delta_mib": host.peak_mib, "host_memory_method": host.method, "device_peak_mib": dev.peak_mib,
        "seconds": {"end_to_end": e2e, "forward": fwd, "post": post},
    }


# ---------------------------------------------------------------------------------------------------- accuracy
def train_and_evaluate(data_root: Path, out: Path, *, epochs: int, warmup_epochs: int, max_iters: int | None,
                       width: int, lr: float, batch_size: int, seq_len: int, seed: int, device: str,
                       time_limit_min: float, log=print) -> dict:
    """Train on the training split (its own dataset class, loss, optimizer, scheduler, EMA) and evaluate the EMA
    model on the validation split with gsmt_fast.evaluate (mAP at tIoU 0.3:0.1:0.7)."""
    from actionformer.datasets import make_dataset
    from actionformer.datasets.data_utils import trivial_batch_collator
    from actionformer.utils.train_utils import ModelEma, make_optimizer, make_scheduler

    import gsmt_fast

    info = json.loads((data_root / "dataset.json").read_text())
    if info.get("input_mode") != "window":
        raise SystemExit(f"{data_root}: the ActionFormer peer trains on window-mode (thumos-like) data, "
                         f"this dataset is {info.get('input_mode')!r}")
    annotations = data_root / info["annotations"]
    classes = list(info["classes"])
    grid = info["grid"]
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    dataset_kw = dict(feat_folder=str(data_root / info["features"]), json_file=str(annotations),
                      feat_stride=grid["feat_stride"], num_frames=grid["num_frames"], default_fps=None,
                      downsample_rate=1, max_seq_len=seq_len, trunc_thresh=0.5, crop_ratio=(0.9, 1.0),
                      input_dim=info["feature_dim"], num_classes=len(classes), file_prefix=None, file_ext=".npy",
                      force_upsampling=False)
    try:
        train_set = make_dataset("thumos", True, (info["train_split"],), **dataset_kw)
        val_set = make_dataset("thumos", False, (info["val_split"],), **dataset_kw)
    except AssertionError as e:  # its loader asserts that every class occurs somewhere in the annotations
        raise SystemExit(f"ActionFormer's THUMOS14 dataset refused {data_root} (every one of the {len(classes)} "
                         f"classes must occur in the annotations; generate more videos): {e!r}") from e
    id_to_name = {i: name for name, i in train_set.label_dict.items()}
    loader = torch.utils.data.DataLoader(train_set, batch_size=batch_size, shuffle=True, drop_last=True,
                                         collate_fn=trivial_batch_collator, num_workers=0,
                                         generator=torch.Generator().manual_seed(seed))
    test_cfg = THUMOS_TEST_CFG
    kwargs = model_kwargs(info["feature_dim"], len(classes), seq_len, THUMOS_WINDOW, test_cfg, width=width)
    model = build_model(kwargs, seed, device)
    opt_cfg = {"type": "AdamW", "momentum": 0.9, "weight_decay": 0.05, "learning_rate": lr, "epochs": epochs,
               "warmup": warmup_epochs > 0, "warmup_epochs": warmup_epochs, "schedule_type": "cosine",
               "schedule_steps": [], "schedule_gamma": 0.1}
    optimizer = make_optimizer(model, opt_cfg)
    scheduler = make_scheduler(optimizer, opt_cfg, max(1, len(loader)))
    ema = ModelEma(model)
    log(f"actionformer: {common.count_parameters(model) / 1e6:.2f} M params, width {width}, sequence {seq_len}, "
        f"{len(train_set)} training / {len(val_set)} validation videos, {len(loader)} iterations/epoch, "
        f"{epochs + warmup_epochs} epochs")

    start = time.monotonic()
    iterations, stopped = 0, None
    for epoch in range(epochs + warmup_epochs):
        model.train()
        losses = []
        for video_list in loader:
            loss = model(video_list)["final_loss"]
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), THUMOS_TRAIN_CFG["clip_grad_l2norm"])
            optimizer.step()
            scheduler.step()
            ema.update(model)
            losses.append(loss.item())
            iterations += 1
            if max_iters is not None and iterations >= max_iters:
                stopped = f"--max-iters {max_iters}"
            elif time.monotonic() - start > 60 * time_limit_min:
                stopped = f"time limit {time_limit_min:g} min"
            if stopped:
                break
        elapsed = time.monotonic() - start
        log(f"epoch {epoch + 1}/{epochs + warmup_epochs}: loss {np.mean(losses) if losses else float('nan'):.4f}, "
            f"{elapsed:.0f} s (projected total {elapsed / (epoch + 1) * (epochs + warmup_epochs) / 60:.1f} min)")
        if stopped:
            log(f"training stopped early: {stopped}")
            break
    train_s = time.monotonic() - start

    predictions = {}
    model_eval = ema.module.eval()
    with torch.no_grad():
        for i in range(len(val_set)):
            item = val_set[i]
            result = model_eval([item])[0]  # its official inference path (batch size 1)
            predictions[item["video_id"]] = [
                {"label": id_to_name[int(k)], "score": float(s), "segment": [float(a), float(b)]}
                for (a, b), s, k in zip(result["segments"].tolist(), result["scores"].tolist(),
                                        result["labels"].tolist())]
    results_json = {"version": "VERSION 1.3", "results": predictions, "external_data": {"used": False, "details": ""}}
    evaluation = gsmt_fast.evaluate(annotations, results_json, tiou_thresholds="0.3:0.1:0.7",
                                    subset=info["val_split"])
    log(evaluation.format_table())
    report = {"peer": "actionformer", "data": str(data_root), "train_iterations": iterations, "train_s": train_s,
              "stopped_early": stopped, "settings": {"epochs": epochs, "warmup_epochs": warmup_epochs,
                                                     "width": width, "lr": lr, "batch_size": batch_size,
                                                     "seq_len": seq_len, "window": THUMOS_WINDOW, "seed": seed,
                                                     "device": device},
              "evaluation": evaluation.to_dict(), "env": common.environment(device)}
    out.mkdir(parents=True, exist_ok=True)
    from gsmt_fast.files import atomic_write_json

    atomic_write_json(out / "actionformer_eval.json", report)
    atomic_write_json(out / "actionformer_results.json", results_json, indent=None)
    log(f"average mAP@[0.3:0.1:0.7] {100 * evaluation.average_mAP:.2f} after {iterations} iterations "
        f"({train_s:.0f} s) -> {out / 'actionformer_eval.json'}")
    return report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench/peer_actionformer.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true", help="say whether the peer can run here, and why not")
    p.add_argument("--train", action="store_true", help="train on --data and report validation mAP")
    p.add_argument("--data", type=Path, help="thumos-like dataset root (gsmt-fast synth --profile thumos-like)")
    p.add_argument("--out", type=Path, default=Path("runs/actionformer_peer"), help="where the report goes")
    p.add_argument("--epochs", type=int, default=15,
                   help="cosine epochs after warm-up (published 30; 15 keeps 200 videos under 30 min on 2 cores)")
    p.add_argument("--warmup-epochs", type=int, default=3, help="linear warm-up epochs (published: 5)")
    p.add_argument("--max-iters", type=int, default=None, help="stop after this many iterations (smoke test)")
    p.add_argument("--time-limit-min", type=float, default=28.0,
                   help="stop training after this many minutes (then evaluate what was trained)")
    p.add_argument("--width", type=int, default=128,
                   help="embedding/FPN/head width (published 512; 128 suits 64-d synthetic features and a CPU)")
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (published 1e-4 at width 512)")
    p.add_argument("--batch-size", type=int, default=2, help="videos per step (published: 2)")
    p.add_argument("--seq-len", type=int, default=576,
                   help="training sequence length (random crops of longer videos, as its recipe does), a multiple "
                        "of 576 for window 19 (published 2304); test videos are padded to the next multiple")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args(argv)
    reason = unavailable_reason()
    if a.check or not a.train:
        print(f"SKIPPED: {reason}" if reason else f"actionformer is available ({cpp_nms_note()})")
        return 0
    if reason:
        print(f"SKIPPED: {reason}")
        return 0
    if a.data is None:
        p.error("--train needs --data DIR")
    train_and_evaluate(a.data, a.out, epochs=a.epochs, warmup_epochs=a.warmup_epochs, max_iters=a.max_iters,
                       width=a.width, lr=a.lr, batch_size=a.batch_size, seq_len=a.seq_len, seed=a.seed,
                       device=a.device, time_limit_min=a.time_limit_min)
    return 0


if __name__ == "__main__":
    sys.exit(main())
