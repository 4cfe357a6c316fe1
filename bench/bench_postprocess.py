"""Post-processing throughput: NumPy reference vs the C++ CPU op (1 thread / all threads) vs the CUDA op.

What is timed: post-processing steps 1–6 from class probabilities ``(K+1, T)`` and masks ``(T, T)`` to detections in
seconds (candidates, SoftNMS with the default config: short mode, gaussian per-class SoftNMS), including input
validation, on realistic inputs generated from a seed: softmax probabilities that are mostly background with a few
confidently classified actions, masks with a few blocky foreground regions (soft edges, noise) over low background
noise, the way a trained GSMT's output looks.

* ``per video``: one call per video (B = 1), as a streaming caller would do;
* ``batched``: one call for B videos (B = 1, 16, 64, 256, 1024).

The reference is always per video (it is a Python loop over windows) and is run on as many videos as finish in a
few seconds. CUDA rows need a GPU and an extension built with nvcc; their inputs already live on the GPU and the
time includes the synchronisation (CUDA events).

    python bench/bench_postprocess.py [--quick] [--out bench/results/postprocess.md]
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Timing, environment, markdown_table, measure  # noqa: E402

from gsmt_fast.config import InferenceConfig  # noqa: E402
from gsmt_fast.files import atomic_write_json, atomic_write_text  # noqa: E402
from gsmt_fast.postprocess import native, reference  # noqa: E402

NUM_CLASSES = 20  # THUMOS14


def realistic_window(rng: np.random.Generator, num_snippets: int, num_classes: int = NUM_CLASSES):
    """probs (K+1, T) float32, masks (T, T) float32 that look like trained output."""
    T, K = num_snippets, num_classes
    logits = rng.normal(0.0, 1.0, size=(K + 1, T))
    logits[K] += 3.0  # background dominates outside actions
    masks = rng.beta(1.0, 30.0, size=(T, T))  # background noise, ~4 % above 0.1
    for _ in range(int(rng.integers(1, 5))):
        length = int(rng.integers(max(1, T // 20), max(2, T // 4)))
        start = int(rng.integers(0, max(1, T - length)))
        end = min(T, start + length)
        label = int(rng.integers(0, K))
        logits[label, start:end] += rng.uniform(3.0, 7.0)  # confident snippets
        logits[K, start:end] -= 2.0
        # every snippet of the action predicts (roughly) the action's extent: a plateau with soft edges
        rows = np.arange(T)
        edge = rng.uniform(1.0, 4.0)
        profile = rng.uniform(0.6, 0.95) / ((1 + np.exp((start - rows) / edge)) * (1 + np.exp((rows - end + 1) / edge)))
        block = profile[:, None] + rng.normal(0.0, 0.05, size=(T, end - start))
        masks[:, start:end] = np.maximum(masks[:, start:end], block)
    probs = np.exp(logits - logits.max(axis=0))
    probs /= probs.sum(axis=0)
    return probs.astype(np.float32), np.clip(masks, 0.0, 1.0).astype(np.float32)


def realistic_batch(seed: int, batch: int, num_snippets: int, pool: int = 64):
    """B windows; ``pool`` distinct ones are generated and tiled (generation would dominate otherwise)."""
    rng = np.random.default_rng(seed)
    windows = [realistic_window(rng, num_snippets) for _ in range(min(pool, batch))]
    probs = np.stack([windows[b % len(windows)][0] for b in range(batch)])
    masks = np.stack([windows[b % len(windows)][1] for b in range(batch)])
    return probs, masks


def reference_window(probs, masks, cfg: InferenceConfig):
    return reference.window_detections(probs, masks, probs.shape[1], cfg)


def reference_per_video(probs, masks, cfg, videos):
    for b in range(videos):
        reference_window(probs[b], masks[b], cfg)


def native_per_video(probs, masks, valid, scale, offset, cfg, videos, **kwargs):
    for b in range(videos):
        window = slice(b, b + 1)
        native.window_detections_batch(
            probs[window], masks[window], valid[window], scale[window], offset[window], cfg, **kwargs
        )


def seconds_per_call(device, timing, fn, *args, **kwargs) -> float:
    return float(np.median(measure(functools.partial(fn, *args, **kwargs), device, timing)))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small batches and short timings (a smoke test)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--snippets", type=int, nargs="+", default=[100, 256], help="T values")
    parser.add_argument("--batches", type=int, nargs="+", default=None, help="B values (default 1 16 64 256 1024)")
    parser.add_argument("--reference-videos", type=int, default=None, help="videos timed with the reference")
    parser.add_argument("--no-cuda", action="store_true")
    parser.add_argument("--out", type=Path, default=None, help="also write the table (markdown) here")
    args = parser.parse_args(argv)

    if not native.available():
        print("gsmt_fast._C is not built: pip install --no-build-isolation -e .", file=sys.stderr)
        return 1
    batches = args.batches or ([1, 16, 64] if args.quick else [1, 16, 64, 256, 1024])
    reference_videos = args.reference_videos or (4 if args.quick else 24)
    # An explicit deadline: common.measure() needs a finite one (it computes int(remaining / estimate)).
    deadline = time.monotonic() + 3600.0
    target = 0.1 if args.quick else 0.5
    timing = Timing(warmup=1, min_reps=2 if args.quick else 3, max_reps=20, target_s=target, deadline=deadline)
    once = Timing(warmup=0, min_reps=1, max_reps=3, target_s=0.0, deadline=deadline)
    use_cuda = not args.no_cuda and native.cuda_available()
    cfg = InferenceConfig()  # the paper's THUMOS defaults: short mode, gaussian per-class SoftNMS (σ 0.4)
    rows = []

    def add(T, B, impl, call, seconds, videos, ref_us=None):
        us = seconds / videos * 1e6
        speedup = ref_us / us if ref_us else None
        rows.append({"T": T, "B": B, "impl": impl, "call": call, "us": us, "vps": 1e6 / us, "speedup": speedup})
        print(f"T={T:4d} B={B:5d} {impl:22s} {call:9s} {us:10.1f} µs/video", flush=True)
        return us

    for T in args.snippets:
        probs, masks = realistic_batch(args.seed, max(batches), T)
        valid = np.full(len(probs), T, dtype=np.int64)
        scale, offset = np.full(len(probs), 0.5), np.zeros(len(probs))

        n_ref = min(reference_videos, len(probs))
        ref_s = seconds_per_call("cpu", once, reference_per_video, probs, masks, cfg, n_ref)
        ref_us = add(T, 1, "reference (NumPy)", "per video", ref_s, n_ref)

        n_per_video = min(256, len(probs))
        seconds = seconds_per_call(
            "cpu", timing, native_per_video, probs, masks, valid, scale, offset, cfg, n_per_video, num_threads=1
        )
        add(T, 1, "C++ CPU, 1 thread", "per video", seconds, n_per_video, ref_us)
        for B in batches:
            for label, threads in (("C++ CPU, 1 thread", 1), ("C++ CPU, all threads", None)):
                seconds = seconds_per_call(
                    "cpu", timing, native.window_detections_batch, probs[:B], masks[:B], valid[:B], scale[:B],
                    offset[:B], cfg, num_threads=threads,
                )  # fmt: skip
                add(T, B, label, "batched", seconds, B, ref_us)

        if use_cuda:
            import torch

            device = [torch.from_numpy(a).cuda() for a in (probs, masks, valid, scale, offset)]
            seconds = seconds_per_call("cuda", timing, native_per_video, *device, cfg, n_per_video, check=False)
            add(T, 1, "CUDA", "per video", seconds, n_per_video, ref_us)
            for B in batches:
                window = [a[:B] for a in device]
                seconds = seconds_per_call("cuda", timing, native.window_detections_batch, *window, cfg, check=False)
                add(T, B, "CUDA", "batched", seconds, B, ref_us)

    env = environment("cuda" if use_cuda else "cpu")
    gpu = f", {env['device_name']}" if use_cuda else ""
    quick = ", --quick" if args.quick else ""
    header = (
        f"Post-processing throughput ({time.strftime('%Y-%m-%d')}, commit {env['commit']}, {env['cpu_model']}, "
        f"{env['cpu_count']} CPUs{gpu}; short mode, default InferenceConfig, K={NUM_CLASSES}, fp32 inputs{quick})"
    )
    columns = [
        ("T", "T"),
        ("B", "B"),
        ("implementation", "impl"),
        ("call", "call"),
        ("µs/video", "us"),
        ("videos/s", "vps"),
        ("speed-up vs reference", "speedup"),
    ]
    table = markdown_table(rows, columns)
    print()
    print(header)
    print()
    print(table)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, header + "\n\n" + table + "\n")
        # The same rows as JSON beside it (bench/gpu_targets.py reads them).
        atomic_write_json(args.out.with_suffix(".json"), {"header": header, "rows": rows}, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
