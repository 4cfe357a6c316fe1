"""The engine's GPU targets, checked against what one ``bench/gpu_check.sh`` run wrote.

Usage: ``python bench/gpu_targets.py RESULTS_DIR`` (gpu_check.sh runs it at the end and appends the table to its
summary). Each target is MET, NOT MET or NOT MEASURED (its file or row is missing); nothing here is timed, the
numbers are the ones the benchmarks wrote. The targets are set for an H100 or H200 (the same Hopper chip): on any
other device the table says so and the verdicts are informational.

Files read (all optional): ``bench_triton.json`` (bench/bench_triton.py), ``accuracy_thumos.json`` and
``accuracy_anet.json`` (bench/backend_accuracy.py), ``bench_postprocess.json`` (bench/bench_postprocess.py --out),
``bench_streaming.json`` (bench/bench_streaming.py --fixed-name).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

THROUGHPUT_VPS = 50_000  # triton backend, paper preset, T = 256, batch >= 256, features on the GPU
SPEEDUP = 50.0  # x the reference backend in the same run
LATENCY_MS = 1.0  # batch-1 latency, features to detections
MAP_DELTA = 0.005  # bf16 (and the fp16 default) mAP within this of the reference
CUDA_POSTPROCESS_VPS = 200_000  # CUDA post-processing, batch 1024, T = 256
STREAMS = 10_000  # concurrent THUMOS-rate streams one process keeps up with (triton backend, default hop)


@dataclass
class Target:
    name: str
    goal: str
    measured: str = "-"
    verdict: str = "NOT MEASURED"

    def check(self, ok: bool, text: str) -> None:
        self.measured = text
        self.verdict = "MET" if ok else "NOT MET"


def _load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def evaluate(results_dir: Path) -> tuple[list[Target], str]:
    """The targets with their verdicts, and the device the triton benchmark ran on ('' when unknown)."""
    triton = _load(results_dir / "bench_triton.json") or {}
    rows = triton.get("rows", [])
    device = str(triton.get("device", ""))
    targets = []

    big = [r for r in rows if r.get("backend") == "triton" and r.get("batch", 0) >= 256]
    best = max(big, key=lambda r: r["videos_per_s"], default=None)
    t = Target("triton throughput, batch >= 256", f">= {THROUGHPUT_VPS:,} videos/s")
    if best:
        t.check(best["videos_per_s"] >= THROUGHPUT_VPS,
                f"{best['videos_per_s']:,.0f} videos/s ({best['precision']}, batch {best['batch']})")
    targets.append(t)
    t = Target("triton vs reference, same run", f">= {SPEEDUP:g}x")
    if best and best.get("speedup_vs_reference") is not None:
        s = best["speedup_vs_reference"]
        t.check(s >= SPEEDUP, f"{s:,.0f}x ({best['precision']}, batch {best['batch']})")
    targets.append(t)

    ones = [r for r in rows if r.get("backend") == "triton" and r.get("batch") == 1]
    fastest = min(ones, key=lambda r: r["p50_ms"], default=None)
    t = Target("batch-1 latency (p50)", f"<= {LATENCY_MS:g} ms")
    if fastest:
        host = fastest.get("p50_ms_to_host")
        text = f"{fastest['p50_ms']:.3f} ms ({fastest['precision']}" + (f"; to host {host:.3f} ms)" if host else ")")
        t.check(fastest["p50_ms"] <= LATENCY_MS, text)
        breakdown = fastest.get("latency_breakdown_ms")
        if breakdown:
            t.measured += "; " + ", ".join(f"{k} {v}" for k, v in breakdown.items())
    targets.append(t)

    for split in ("thumos", "anet"):
        accuracy = _load(results_dir / f"accuracy_{split}.json") or {}
        by_run = {r.get("run"): r for r in accuracy.get("rows", [])}
        for run in ("triton:bf16", "triton:fp16"):
            t = Target(f"{run} mAP vs reference, {split}-like", f"|delta| <= {MAP_DELTA}")
            row = by_run.get(run)
            if row and row.get("delta_mAP") is not None:
                d = row["delta_mAP"]
                t.check(abs(d) <= MAP_DELTA, f"{d:+.4f} ({row['average_mAP']:.4f})")
            targets.append(t)

    post = _load(results_dir / "bench_postprocess.json") or {}
    cuda = [r for r in post.get("rows", []) if r.get("impl") == "CUDA" and r.get("call") == "batched"
            and r.get("T") == 256 and r.get("B") == 1024]
    t = Target("CUDA post-processing, T 256, batch 1024", f">= {CUDA_POSTPROCESS_VPS:,} videos/s")
    if cuda:
        t.check(cuda[0]["vps"] >= CUDA_POSTPROCESS_VPS, f"{cuda[0]['vps']:,.0f} videos/s")
    targets.append(t)

    streaming = _load(results_dir / "bench_streaming.json") or {}
    pools = [r for r in streaming.get("streams", []) if r.get("backend") == "triton"]
    t = Target("concurrent THUMOS-rate streams (triton)", f">= {STREAMS:,} in real time")
    if pools:
        best = max((r for r in pools if r["realtime"]), key=lambda r: r["streams"], default=None)
        largest = max(pools, key=lambda r: r["streams"])
        text = (f"{best['streams']:,} sustained" if best else "none sustained") + \
            f"; {largest['streams']:,} streams: {largest['load']:.2f} s wall per stream second"
        t.check(best is not None and best["streams"] >= STREAMS, text)
    targets.append(t)
    return targets, device


def render(targets: list[Target], device: str) -> str:
    on_hopper = "H100" in device or "H200" in device
    lines = [f"GPU targets (device: {device or 'unknown'}"
             + ("" if on_hopper else "; not an H100/H200: informational only") + ")"]
    lines.append(f"{'target':<42} {'goal':<22} {'verdict':<13} measured")
    for t in targets:
        lines.append(f"{t.name:<42} {t.goal:<22} {t.verdict:<13} {t.measured}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    results_dir = Path(argv[0])
    if not results_dir.is_dir():
        print(f"gpu_targets: {results_dir} is not a folder", file=sys.stderr)
        return 2
    print(render(*evaluate(results_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
