"""Streaming speed and memory (docs/STREAMING.md): per-push latency and sustained rate of one stream per backend,
resident memory over a one-hour stream, and how many THUMOS-rate streams one process keeps up with.

    python bench/bench_streaming.py --ckpt .gpu_assets/thumos.safetensors --data .gpu_assets/thumos
    python bench/bench_streaming.py --device cuda --backends triton --streams 2000,10000 --push-snippets 8 \\
        --tick-snippets 8 --skip-memory --out RESULTS_DIR          # the GPU step of bench/gpu_check.sh

Sections (each skippable):

- **latency**: one :class:`StreamSession` per backend fed one snippet per ``push`` as fast as possible: per-push
  latency p50/p99 over all pushes and over the pushes that ran the model (every ``hop``-th), sustained snippets/s
  and its ratio to the THUMOS rate (7.5 snippets/s: 30 fps, stride 4).
- **memory**: a one-hour THUMOS-rate stream (27,000 snippets, one per push, as fast as possible) through one
  session: resident memory (``/proc/self/statm``) after each simulated minute; growth after the first minute.
- **streams**: a :class:`StreamPool` of N streams at the THUMOS rate, started ``i mod hop`` snippets apart (cameras
  do not start together); every ``--push-snippets`` snippet periods each stream pushes that many snippets, every
  ``--tick-snippets`` periods the pool ticks (one ``run_windows`` call). The simulated stream time is compared with
  the wall time spent pushing and ticking (after one warm-up hop): N streams are sustained in real time when the
  wall time is at most the stream time. Tick latency p50/p99 is the extra delay a tick adds to a detection.

Features: the validation videos of ``--data`` cycled (real candidate counts), or Gaussian noise without it. Every
number is printed and written to ``OUT/streaming_<date>_<device>_<commit>.json`` with the machine, torch threads and
the load average next to it (other work on a shared machine skews CPU timings).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402

THUMOS_RATE = 7.5  # snippets per second: 30 fps, feature stride 4
FPS = 30.0


def feature_source(data: Path | None, input_dim: int, seconds: float, seed: int = 0) -> np.ndarray:
    """A long feature sequence: the validation videos of ``data`` concatenated (repeated as needed), or noise."""
    n = int(round(seconds * THUMOS_RATE))
    if data is not None:
        from backend_accuracy import load_validation

        _, feats, _ = load_validation(data)
        base = np.concatenate(feats).astype(np.float32)
        if base.shape[1] != input_dim:
            raise SystemExit(f"--data features have dimension {base.shape[1]}, the checkpoint expects {input_dim}")
        return np.resize(base, (n, input_dim)) if n > len(base) else base[:n]
    return np.random.default_rng(seed).standard_normal((n, input_dim)).astype(np.float32)


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def percentiles(ms) -> dict:
    ms = np.asarray(ms, dtype=np.float64)
    if not len(ms):
        return {"p50": None, "p99": None, "max": None, "n": 0}
    return {"p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)), "max": float(ms.max()),
            "n": int(len(ms))}


def bench_latency(det, feats: np.ndarray, snippets: int) -> dict:
    session = det.stream(fps=FPS)
    hop = session.policy.hop
    for i in range(2 * hop):  # warm-up: the first model runs allocate
        session.push(feats[i:i + 1])
    session = det.stream(fps=FPS)
    all_ms, model_ms = [], []
    cpu0 = time.process_time()
    t_all = time.perf_counter()
    for i in range(snippets):
        t0 = time.perf_counter()
        session.push(feats[i:i + 1])
        ms = (time.perf_counter() - t0) * 1e3
        all_ms.append(ms)
        if (i + 1) % hop == 0:
            model_ms.append(ms)
    wall = time.perf_counter() - t_all
    cpu = time.process_time() - cpu0
    session.close()
    rate = snippets / wall
    return {"snippets": snippets, "hop": hop, "push_ms": percentiles(all_ms), "model_push_ms": percentiles(model_ms),
            "snippets_per_s": rate, "x_realtime": rate / THUMOS_RATE, "cpu_s": cpu,
            "x_realtime_per_cpu_s": snippets / THUMOS_RATE / cpu}


def bench_replay(det, feats: np.ndarray, snippets: int, chunk: int) -> dict:
    """One stream replayed ``chunk`` snippets per push as fast as possible (a file, or a stream catching up): the
    session runs the windows a push makes due as one batch."""
    session = det.stream(fps=FPS)
    session.push(feats[:chunk])
    session = det.stream(fps=FPS)
    c0, t0 = time.process_time(), time.perf_counter()
    for i in range(0, snippets, chunk):
        session.push(feats[i:i + chunk])
    session.close()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"snippets": snippets, "chunk": chunk, "snippets_per_s": snippets / wall,
            "x_realtime": snippets / wall / THUMOS_RATE, "cpu_s": cpu,
            "x_realtime_per_cpu_s": snippets / THUMOS_RATE / cpu}


def bench_memory(det, feats: np.ndarray, minutes: int = 60) -> dict:
    per_minute = int(60 * THUMOS_RATE)
    session = det.stream(fps=FPS)
    samples = [rss_mib()]
    t0 = time.perf_counter()
    for minute in range(minutes):
        block = feats[(minute * per_minute) % (len(feats) - per_minute):][:per_minute]
        for i in range(per_minute):
            session.push(block[i:i + 1])
        samples.append(rss_mib())
    wall = time.perf_counter() - t0
    session.close()
    first = samples[1]
    return {"snippets": minutes * per_minute, "stream_minutes": minutes, "wall_s": wall,
            "rss_mib_start": samples[0], "rss_mib_after_first_minute": first, "rss_mib_end": samples[-1],
            "rss_mib_max_after_first_minute": max(samples[1:]),
            "growth_after_first_minute_pct": 100.0 * (max(samples[1:]) - first) / first,
            "rss_mib_per_minute": samples}


def bench_streams(det, feats: np.ndarray, n_streams: int, stream_seconds: float, push_snippets: int,
                  tick_snippets: int) -> dict:
    pool = det.stream_pool(fps=FPS)
    hop = pool.policy.hop
    periods = int(round(stream_seconds * THUMOS_RATE))
    rng = np.random.default_rng(n_streams)
    offsets = rng.integers(0, len(feats) - periods - 2 * hop, size=n_streams)
    start = [i % hop for i in range(n_streams)]  # stream i joins i mod hop periods late
    for i in range(n_streams):
        pool.open(i)
    sent = np.zeros(n_streams, dtype=np.int64)
    backend_time = [0.0, 0.0]  # wall, CPU seconds inside backend.run_windows (pack, forward, post-processing)
    run_windows = det.backend.run_windows

    def timed_run_windows(windows, final, cfg):
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            return run_windows(windows, final, cfg)
        finally:
            backend_time[0] += time.perf_counter() - t0
            backend_time[1] += time.process_time() - c0

    det.backend.run_windows = timed_run_windows
    tick_ms, wall, cpu, warm = [], 0.0, 0.0, 2 * hop  # the first 2 hops warm up (allocations, CUDA graphs)
    windows = 0
    for period in range(1, periods + 1):
        t0, c0 = time.perf_counter(), time.process_time()
        if period % push_snippets == 0:
            for i in range(n_streams):
                due = max(0, period - start[i]) - sent[i]
                if due > 0:
                    pool.push(i, feats[offsets[i] + sent[i]:offsets[i] + sent[i] + due])
                    sent[i] += due
        if period % tick_snippets == 0:
            t1 = time.perf_counter()
            pool.tick()
            if period > warm:
                tick_ms.append((time.perf_counter() - t1) * 1e3)
                windows += pool.last_tick_windows
        if period == warm:
            backend_time[:] = [0.0, 0.0]
        if period > warm:
            wall += time.perf_counter() - t0
            cpu += time.process_time() - c0
    del det.backend.run_windows  # the instance attribute: the class method again
    timed = (periods - warm) / THUMOS_RATE
    return {"streams": n_streams, "hop": hop, "stream_s": timed, "wall_s": wall, "load": wall / timed,
            "cpu_s": cpu, "cpu_load": cpu / timed, "backend_wall_s": backend_time[0], "backend_cpu_s": backend_time[1],
            # what the streams cost outside the backend (push checks, buffers, windows, emission), per window
            "host_cpu_ms_per_window": 1e3 * (cpu - backend_time[1]) / windows if windows else None,
            "realtime": wall <= timed, "tick_ms": percentiles(tick_ms), "windows": windows,
            "windows_per_s_wall": windows / wall if wall else None, "push_snippets": push_snippets,
            "tick_snippets": tick_snippets}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", type=Path, default=common.REPO_ROOT / ".gpu_assets" / "thumos.safetensors",
                   help="window-mode checkpoint (default: .gpu_assets/thumos.safetensors)")
    p.add_argument("--data", type=Path, default=None, help="benchmark folder whose validation features are replayed")
    p.add_argument("--device", default="cpu")
    p.add_argument("--backends", default="torch,reference", help="backends for the latency section")
    p.add_argument("--precision", default=None)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--latency-snippets", type=int, default=2000,
                   help="snippets pushed one by one per backend in the latency section (0: skip it)")
    p.add_argument("--replay-chunk", type=int, default=64, help="snippets per push of the replay row (0: skip)")
    p.add_argument("--skip-memory", action="store_true")
    p.add_argument("--memory-minutes", type=int, default=60)
    p.add_argument("--streams", default="25,50,100,200", help="pool sizes to try (comma list; empty: skip)")
    p.add_argument("--stream-backend", default=None, help="backend of the pool section (default: first of --backends)")
    p.add_argument("--stream-seconds", type=float, default=30.0, help="simulated stream time per pool size")
    p.add_argument("--push-snippets", type=int, default=1)
    p.add_argument("--tick-snippets", type=int, default=1)
    p.add_argument("--out", type=Path, default=common.REPO_ROOT / "bench" / "results")
    p.add_argument("--fixed-name", action="store_true",
                   help="write OUT/bench_streaming.json (what bench/gpu_targets.py reads) instead of a dated name")
    args = p.parse_args(argv)

    import torch

    import gsmt_fast

    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.ckpt.is_file():
        raise SystemExit(f"no checkpoint {args.ckpt} (pass --ckpt; .gpu_assets/ comes from bench/make_gpu_assets.py)")
    env = common.environment(args.device)
    print(f"{env['device_name']} | torch threads {env['torch_threads']} | commit {env['commit']} | "
          f"load {env['loadavg_1m']:.2f}", flush=True)
    out = {"env": env, "ckpt": str(args.ckpt), "latency": [], "memory": None, "streams": []}
    backends = [b for b in args.backends.split(",") if b]
    probe = gsmt_fast.Detector(args.ckpt, backend=backends[0], device=args.device, precision=args.precision)
    need = max(args.memory_minutes * 60 if not args.skip_memory else 0, 600.0)
    feats = feature_source(args.data, probe.model_config.input_dim, need + 60)

    for backend in backends if args.latency_snippets > 0 else []:
        try:
            det = gsmt_fast.Detector(args.ckpt, backend=backend, device=args.device, precision=args.precision)
        except Exception as error:  # noqa: BLE001 - a backend that cannot run here is reported, the others go on
            out["latency"].append({"backend": backend, "skipped": f"{type(error).__name__}: {error}"})
            print(f"latency {backend}: skipped ({error})", flush=True)
            continue
        row = {"backend": backend, "precision": getattr(det.backend, "precision", None),
               **bench_latency(det, feats, args.latency_snippets), "loadavg_1m": os.getloadavg()[0]}
        out["latency"].append(row)
        print(f"latency {backend} {row['precision']}: push p50 {row['push_ms']['p50']:.3f} ms p99 "
              f"{row['push_ms']['p99']:.2f} ms; pushes that ran the model p50 {row['model_push_ms']['p50']:.2f} ms "
              f"p99 {row['model_push_ms']['p99']:.2f} ms; {row['snippets_per_s']:.0f} snippets/s = "
              f"{row['x_realtime']:.0f}x real time; CPU {row['cpu_s']:.1f} s = {row['x_realtime_per_cpu_s']:.0f}x real "
              f"time per CPU second (load avg {row['loadavg_1m']:.2f})", flush=True)
        if args.replay_chunk:
            replay = {**bench_replay(det, feats, args.latency_snippets, args.replay_chunk),
                      "loadavg_1m": os.getloadavg()[0]}
            row["replay"] = replay
            print(f"replay {backend}, {replay['chunk']} snippets per push: {replay['snippets_per_s']:.0f} snippets/s = "
                  f"{replay['x_realtime']:.0f}x real time; {replay['x_realtime_per_cpu_s']:.0f}x real time per CPU "
                  f"second (load avg {replay['loadavg_1m']:.2f})", flush=True)

    stream_backend = args.stream_backend or backends[0]
    det = gsmt_fast.Detector(args.ckpt, backend=stream_backend, device=args.device, precision=args.precision)
    if not args.skip_memory:
        row = {"backend": stream_backend, **bench_memory(det, feats, args.memory_minutes),
               "loadavg_1m": os.getloadavg()[0]}
        out["memory"] = row
        print(f"memory {stream_backend}: {row['stream_minutes']} min stream in {row['wall_s']:.0f} s; RSS "
              f"{row['rss_mib_after_first_minute']:.1f} MiB after 1 min, max "
              f"{row['rss_mib_max_after_first_minute']:.1f} MiB, end {row['rss_mib_end']:.1f} MiB: growth "
              f"{row['growth_after_first_minute_pct']:.2f} %",
              flush=True)

    for n in [int(s) for s in args.streams.split(",") if s]:
        row = {"backend": stream_backend,
               **bench_streams(det, feats, n, args.stream_seconds, args.push_snippets, args.tick_snippets),
               "loadavg_1m": os.getloadavg()[0]}
        out["streams"].append(row)
        print(f"streams {n:6d} ({stream_backend}, hop {row['hop']}): {row['stream_s']:.0f} s of stream in "
              f"{row['wall_s']:.1f} s wall (load {row['load']:.2f}: {'REAL TIME' if row['realtime'] else 'too slow'});"
              f" CPU {row['cpu_s']:.1f} s ({row['cpu_load']:.2f} CPU-s per stream-s); tick p50 "
              f"{row['tick_ms']['p50']:.1f} ms p99 {row['tick_ms']['p99']:.1f} ms; "
              f"{row['windows_per_s_wall']:.0f} windows/s; outside the backend "
              f"{row['host_cpu_ms_per_window']:.2f} CPU-ms per window (load avg {row['loadavg_1m']:.2f})", flush=True)
    sustained = [r["streams"] for r in out["streams"] if r["realtime"]]
    out["max_realtime_streams_tried"] = max(sustained) if sustained else 0

    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%d-%H%M%S")
    name = "bench_streaming.json" if args.fixed_name else \
        f"streaming_{stamp}_{common.slug(env['device_name'], 24)}_{env['commit']}.json"
    from gsmt_fast.files import atomic_write_json

    atomic_write_json(args.out / name, out)
    print(f"wrote {args.out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
