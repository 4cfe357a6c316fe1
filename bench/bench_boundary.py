"""End-to-end throughput of the boundary-refined variant next to the paper model, in one process.

    python bench/bench_boundary.py --paper bench/assets/thumos.safetensors \
        --variant runs/thumos_boundary/best.safetensors --data data/thumos --batch 64 --threads 2

Both checkpoints are timed by ``bench/run.py``'s ``bench_point`` (``Detector.detect`` end to end, the forward alone
and the post-processing alone) on the same videos, in alternating rounds (paper, variant, paper, variant, ...), so
that a change of the machine's load during the run reaches both; the table gives the median over the rounds and the
variant's end-to-end throughput relative to the paper model's.

Videos: with ``--data`` (a ``gsmt-fast synth`` folder), the first T snippets of each validation video at least T long
(window mode: one window per video; a trained model's real candidate counts); else seeded random features. With
``--preset P`` instead of checkpoints, two seeded random models of that preset (the variant with the boundary head;
the same weights otherwise), like ``bench/run.py``.

Writes the table on stdout and ``<out>/<date>_boundary_<commit>.json`` with every round.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
import run  # noqa: E402
from common import Timing  # noqa: E402

import gsmt_fast  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent


def validation_windows(data: Path, temporal_scale: int, count: int):
    """The first T snippets of the validation videos of at least T snippets, repeated to ``count`` videos."""
    from gsmt_fast.data.annotations import load_annotations
    from gsmt_fast.data.features import FeatureStore

    videos = load_annotations(data / "annotations.json").subset("validation")
    store = FeatureStore(data / "features")
    pieces, fps = [], []
    for v in videos:
        x = store.load(v.video_id)
        if len(x) >= temporal_scale:
            pieces.append(np.ascontiguousarray(x[:temporal_scale], dtype=np.float32))
            fps.append(v.fps)
    if not pieces:
        raise SystemExit(f"--data: no validation video of {data} has {temporal_scale} snippets")
    reps = -(-count // len(pieces))
    return (pieces * reps)[:count], {"fps": (fps * reps)[:count]}


def preset_checkpoints(preset: str, temporal_scale: int, num_classes: int, input_dim: int, folder: Path, seed: int):
    paths = {}
    for name, head in (("paper", False), ("variant", True)):
        # The head is built last: with one seed both models share every other weight.
        model = run.random_model(preset, temporal_scale, num_classes, input_dim, seed, boundary_head=head)
        paths[name] = folder / f"{name}.safetensors"
        gsmt_fast.save_checkpoint(model, paths[name], grid={"convention": "stride"},
                                  inference={"mode": "short", "nms_sigma": 0.4,
                                             **({"top_snippets": temporal_scale} if head else {})})
    return paths


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--paper", type=Path, help="the paper model's checkpoint")
    p.add_argument("--variant", type=Path, help="the boundary-refined variant's checkpoint")
    p.add_argument("--preset", help="instead of checkpoints: random models of this preset (e.g. paper)")
    p.add_argument("--K", type=int, default=20, help="classes of the --preset models")
    p.add_argument("--input-dim", type=int, default=2048, help="d_in of the --preset models")
    p.add_argument("--T", type=int, default=256, help="T of the --preset models")
    p.add_argument("--data", type=Path, help="a synthetic dataset folder: its validation videos are the inputs")
    p.add_argument("--backend", default="torch", help="backend[:precision] (default torch, fp32)")
    p.add_argument("--batch", type=int, default=64, help="videos per detect() call (default 64)")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    p.add_argument("--target-s", type=float, default=2.0, help="seconds per measurement and round")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--out", type=Path, default=BENCH_DIR / "results")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if (args.preset is None) == (args.paper is None or args.variant is None):
        p.error("give --paper and --variant, or --preset")

    env = common.environment("cpu")
    backend, _, precision = args.backend.partition(":")
    with tempfile.TemporaryDirectory(prefix="gsmt_bench_boundary_") as tmp, run.export_cache(Path(tmp) / "cache"):
        if args.preset:
            ckpts = preset_checkpoints(args.preset, args.T, args.K, args.input_dim, Path(tmp), seed=0)
        else:
            ckpts = {"paper": args.paper, "variant": args.variant}
        dets = {name: gsmt_fast.Detector(path, backend=backend, device="cpu", precision=precision or None)
                for name, path in ckpts.items()}
        t = {name: d.model_config.temporal_scale for name, d in dets.items()}
        if len(set(t.values())) != 1:
            raise SystemExit(f"the two models have different T: {t}")
        t = t["paper"]
        if args.data:
            videos, time_kw = validation_windows(args.data, t, args.batch)
        else:
            videos, time_kw = run.make_videos(t, "window", dets["paper"].model_config.input_dim, args.batch, seed=1)
        print(f"# {env['device_name']}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} threads, commit {env['commit']}, load average {os.getloadavg()}",
              flush=True)
        rounds = []
        for r in range(args.rounds):
            for name, det in dets.items():
                point = run.bench_point(det, videos, time_kw, Timing(warmup=1, min_reps=3, max_reps=50,
                                                                     target_s=args.target_s), "cpu")
                point.update(model=name, round=r, loadavg_1m=os.getloadavg()[0])
                rounds.append(point)
                print(f"round {r} {name:8s} {point['videos_per_s']:8.1f} videos/s  forward {point['forward_ms']:7.1f} "
                      f"ms  post {point['post_ms']:6.1f} ms  cands/win {point['candidates_per_window']:.0f}  "
                      f"load {point['loadavg_1m']:.2f}", flush=True)
    summary = {}
    for name, det in dets.items():
        mine = [row for row in rounds if row["model"] == name]
        summary[name] = {key: statistics.median(row[key] for row in mine)
                         for key in ("videos_per_s", "forward_ms", "post_ms", "candidates_per_window")}
        summary[name]["params"] = common.count_parameters(det.backend.model)
        summary[name]["checkpoint"] = str(ckpts[name]) if not args.preset else f"random {args.preset}"
    ratio = summary["variant"]["videos_per_s"] / summary["paper"]["videos_per_s"]
    print(f"\n| model | params | end-to-end videos/s (median of {args.rounds}) | forward ms | post ms | cands/win |")
    print("|---|---|---|---|---|---|")
    for name, row in summary.items():
        print(f"| {name} | {row['params']:,} | {row['videos_per_s']:.1f} | {row['forward_ms']:.1f} | "
              f"{row['post_ms']:.1f} | {row['candidates_per_window']:.0f} |")
    print(f"\nvariant / paper end-to-end throughput: {ratio:.3f} (batch {args.batch}, T {t}, {args.backend}, cpu)")
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    path = args.out / f"{stamp}_boundary_{env['commit']}.json"
    from gsmt_fast.files import atomic_write_text

    atomic_write_text(path, json.dumps({"env": env, "settings": {k: str(v) for k, v in vars(args).items()},
                                        "rounds": rounds, "summary": summary, "ratio": ratio}, indent=1,
                                       default=float))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
