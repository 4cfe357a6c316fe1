"""Throughput of gsmt_fast's Detector backends (and ActionFormer as a peer), features already in memory.

    python bench/run.py --quick            # CPU smoke run: T 100 and 256, K 20, batches 1/16/64, < 3 min on 2 cores
    python bench/run.py --device cuda      # the full sweep: K 20 and 200, batches 1 … 1024
    gsmt-fast bench --quick                # the same through the CLI

Per backend that constructs on this machine (the others are skipped with the reason), per configuration
(T = 100 resize mode / T = 256 window mode; the ``paper`` preset with d_in 2048; K = 20 and 200) and per batch size:

* end-to-end ``Detector.detect`` on a list of ``batch`` videos: videos/s and latency p50/p99 of one call;
* the model forward alone (``backend.forward`` on the packed windows) and the post-processing alone
  (``backend.post_process`` + ``Detector.video_result``, as ``detect`` runs them) on the same inputs;
* peak memory: host RSS growth during the end-to-end calls, and PyTorch's peak CUDA allocation on a GPU;
* parameters and FLOPs per video of the model (FlopCounterMode), next to the paper's Table 3.

Window mode uses videos of exactly T snippets (one window each, so videos/s is windows/s); resize mode uses videos of
random native length, resampled to T inside ``detect`` (part of the end-to-end time). Models have seeded random
weights: the forward's speed does not depend on training. The post-processing cost depends on how many candidates
a window yields, so the classifier head is scaled (``CLS_HEAD_SCALE``) to spread the foreground probabilities like a
trained model instead of leaving them all near 1/(K+1) (where K = 200 yields no candidate at all); the table shows
the resulting candidates per window.

Writes: a markdown table on stdout; ``<out>/<date>_<device>_<commit>.json``; ``<out>/throughput_<...>.png``; rows
appended to ``bench/RESULTS.md`` (``--results-md``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # sibling modules, also when loaded by `gsmt-fast bench`

import common  # noqa: E402
from common import DevicePeakMemory, HostPeakMemory, Timing, measure, summarize  # noqa: E402

import gsmt_fast  # noqa: E402
from gsmt_fast.detector import BACKENDS  # noqa: E402

BENCH_DIR = Path(__file__).resolve().parent
DEFAULT_BATCHES = (1, 4, 16, 64, 256, 1024)
QUICK_BATCHES = (1, 16, 64)
DEFAULT_T = "100,256"  # 100 → resize mode (ActivityNet-like), 256 → window mode (THUMOS-like)
WINDOW_FPS = 30.0
RESIZE_SECONDS_PER_SNIPPET = 0.5  # native snippet length of the resize-mode videos (only sets their durations)
VIDEO_POOL = 256  # distinct videos held in memory; larger batches repeat them (each call still copies/resamples)
CLS_HEAD_SCALE = 6.0  # see the module docstring
PAPER_TABLE3 = {"T": 100, "K": 200, "params": 2.9e6, "flops": 0.6e9,
                "note": "paper Table 3 (T=100, K=200): 2.9 M parameters, 0.6 GFLOPs per video"}
NOTES = [
    "Models use seeded random weights: the forward's speed does not depend on training. Post-processing cost "
    f"depends on the candidates per window (column 'cands/win'); the classifier head is scaled x{CLS_HEAD_SCALE:g} "
    "so that foreground probabilities spread over [0, 1] as a trained model's do.",
    "Features are float32 NumPy arrays in host memory; end-to-end = detect(): windowing/resampling, host->device "
    "copy, forward, candidates, SoftNMS, conversion to seconds. latency = one detect() call on the whole batch.",
    "window mode: videos of exactly T snippets (videos/s = windows/s); resize mode: videos of random native length "
    "resampled to T inside detect().",
    common.FLOP_NOTE + ". " + PAPER_TABLE3["note"] + ".",
    "host MiB = peak RSS growth during the end-to-end calls; device MiB = torch.cuda.max_memory_allocated "
    "(weights included).",
]


# ---------------------------------------------------------------------------------------------------- inputs
def parse_int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v.strip()]


def parse_temporal_scales(text: str) -> list[tuple[int, str]]:
    """``"100,256"`` or ``"16:resize,16:window"`` → [(T, mode)]; without a mode, T = 100 is resize, others window."""
    out = []
    for item in text.split(","):
        t, _, mode = item.strip().partition(":")
        mode = mode or ("resize" if int(t) == 100 else "window")
        if mode not in ("resize", "window"):
            raise SystemExit(f"--T: mode must be 'resize' or 'window', got {mode!r} in {item!r}")
        out.append((int(t), mode))
    return out


def make_videos(temporal_scale: int, mode: str, input_dim: int, count: int, seed: int):
    """``count`` seeded videos (float32 ``(n, d)``) and the time metadata ``detect`` needs for them."""
    rng = np.random.default_rng(seed)
    if mode == "window":
        lengths = [temporal_scale] * count
    else:
        lengths = rng.integers(max(2, temporal_scale // 2), 5 * temporal_scale + 1, size=count).tolist()
    videos = [rng.standard_normal((n, input_dim), dtype=np.float32) for n in lengths]
    if mode == "window":
        return videos, {"fps": WINDOW_FPS}
    return videos, {"duration": [n * RESIZE_SECONDS_PER_SNIPPET for n in lengths]}


def random_model(preset: str, temporal_scale: int, num_classes: int, input_dim: int, seed: int,
                 **config) -> gsmt_fast.GSMT:
    """A seeded random model of ``preset`` (``config``: further GSMTConfig fields), classifier scaled as trained."""
    torch.manual_seed(seed)
    cfg = gsmt_fast.GSMTConfig.preset(preset, num_classes=num_classes, temporal_scale=temporal_scale,
                                      input_dim=input_dim, **config)
    model = gsmt_fast.GSMT(cfg)
    with torch.no_grad():
        model.cls_head.weight.mul_(CLS_HEAD_SCALE)
    return model.eval()


def write_checkpoint(model, mode: str, folder: Path) -> Path:
    path = folder / f"bench_T{model.cfg.temporal_scale}_{mode}_K{model.cfg.num_classes}.safetensors"
    # The paper's post-processing per dataset family: ActivityNet (resize) 'long' runs, σ 0.6; THUMOS 'short', σ 0.4.
    inference = {"mode": "long", "nms_sigma": 0.6} if mode == "resize" else {"mode": "short", "nms_sigma": 0.4}
    gsmt_fast.save_checkpoint(model, path, grid={"convention": "resize" if mode == "resize" else "stride"},
                              inference=inference)
    return path


# ---------------------------------------------------------------------------------------------------- one point
def batches_of(det, plans):
    """The (video index, Window) batches ``detect`` runs, ``det.batch_size`` windows each, with their final flags."""
    windows = [(i, w) for i, p in enumerate(plans) for w in p.windows]
    return [(part, [len(plans[i].windows) == 1 for i, _ in part])
            for part in (windows[s:s + det.batch_size] for s in range(0, len(windows), det.batch_size))]


def bench_point(det, videos, time_kw, timing: Timing, device) -> dict:
    """End-to-end, forward-alone and post-processing-alone timings of one backend on one batch of videos, all through
    the public calls ``detect`` itself makes (plan → pack → forward → post_process → video_result)."""
    batch = len(videos)
    det.batch_size = batch
    last = {}

    def end_to_end():
        last["results"] = det.detect(videos, **time_kw)

    with HostPeakMemory() as host, DevicePeakMemory(device) as dev:
        e2e = summarize(measure(end_to_end, device, timing))

    plans = det.plan(videos, **time_kw)
    batches = batches_of(det, plans)
    packed = [det.backend.pack([w for _, w in part]) for part, _ in batches]
    fwd = summarize(measure(lambda: [det.backend.forward(x, v) for x, v in packed], device, timing))

    outputs = [det.backend.forward(x, v) for x, v in packed]
    windows = [w for part, _ in batches for w in part]
    # outputs: (probs, masks), plus the boundary distances of a model with the boundary head
    num_candidates = [len(c) for (probs, masks, *bounds), (_, valid) in zip(outputs, packed)
                      for c in det.backend.candidates(probs, masks, valid, det.inference, *bounds)]

    def post_processing():  # what detect() does after the forward pass, on the same outputs
        parts = [[] for _ in range(batch)]
        for (part, final), (probs, masks, *bounds), (_, valid) in zip(batches, outputs, packed):
            for (i, _), out in zip(part, det.backend.post_process([w for _, w in part], final, probs, masks, valid,
                                                                  det.inference, *bounds)):
                parts[i].append(out)
        return [det.video_result(parts[i], p.duration, p.video_id) for i, p in enumerate(plans)]

    post = summarize(measure(post_processing, device, timing))
    return {
        "batch": batch,
        "windows": len(windows),
        "videos_per_s": batch / e2e["median_s"],
        "latency_p50_ms": 1e3 * e2e["p50_s"],
        "latency_p99_ms": 1e3 * e2e["p99_s"],
        "reps": e2e["n"],
        "forward_ms": 1e3 * fwd["median_s"],
        "forward_videos_per_s": batch / fwd["median_s"],
        "post_ms": 1e3 * post["median_s"],
        "post_videos_per_s": batch / post["median_s"],
        "candidates_per_window": float(np.mean(num_candidates)) if num_candidates else 0.0,
        "detections_per_video": float(np.mean([len(r) for r in last["results"]])),
        "host_peak_delta_mib": host.peak_mib,
        "host_memory_method": host.method,
        "device_peak_mib": dev.peak_mib,
        "seconds": {"end_to_end": e2e, "forward": fwd, "post": post},
    }


# ---------------------------------------------------------------------------------------------------- the sweep
def open_backends(ckpt: Path, names: list[str], device: str, log, calibration=None) -> tuple[dict, list[dict]]:
    """One Detector per name; a name may carry a precision (``torch:bf16``, ``onnxruntime:int8``). int8 needs a
    calibrated model: ``calibration`` (packed windows) fills the export cache first."""
    detectors, skipped = {}, []
    for spec in names:
        name, _, precision = spec.partition(":")
        try:
            if precision == "int8":
                from gsmt_fast.export import export_onnx

                export_onnx(ckpt, None, precision="int8", calibration=calibration)
            detectors[spec] = gsmt_fast.Detector(ckpt, backend=name, device=device, precision=precision or None)
        except Exception as e:  # noqa: BLE001 - any failure means "not available here"; the reason is reported
            reason = f"{type(e).__name__}: {e}"
            skipped.append({"backend": spec, "reason": reason})
            log(f"  skip backend {spec!r}: {reason}")
    return detectors, skipped


def calibration_windows(ckpt: Path, pool, time_kw, count: int = 64):
    """Packed windows of the first ``count`` pool videos, cut as detect() cuts them (int8 calibration: speed does
    not depend on which windows calibrate)."""
    det = gsmt_fast.Detector(ckpt, backend="reference")
    videos, kw = common.batch_of(pool, time_kw, min(count, len(pool)))
    return det.backend.pack([w for p in det.plan(videos, **kw) for w in p.windows])


def model_info(model, mode: str) -> dict:
    t, d = model.cfg.temporal_scale, model.cfg.input_dim
    x = torch.zeros(1, t, d)
    flops, per_op = common.count_flops(lambda: model(x))
    info = {"model": "gsmt", "T": t, "mode": mode, "K": model.cfg.num_classes, "input_dim": d,
            "params": common.count_parameters(model), "flops_per_video": flops, "flops_by_op": per_op}
    if (t, model.cfg.num_classes) == (PAPER_TABLE3["T"], PAPER_TABLE3["K"]):
        info["paper_table3"] = {"params": PAPER_TABLE3["params"], "flops": PAPER_TABLE3["flops"]}
    return info


def run_sweep(args, log=print) -> dict:
    device = args.device
    batches = sorted(set(args.batches))
    configs = [(t, mode, k) for t, mode in args.temporal_scales for k in args.classes]
    backends = [b.strip() for b in args.backends.split(",")] if args.backends != "all" else list(BACKENDS)
    peers = [] if args.peers == "none" else [p.strip() for p in args.peers.split(",")]
    start = time.monotonic()
    deadline = None if args.budget_s is None else start + args.budget_s
    timing = Timing(warmup=args.warmup, min_reps=args.reps, max_reps=max(args.reps, args.max_reps),
                    target_s=args.target_s, deadline=deadline)
    report = {"schema": 1, "env": common.environment(device), "settings": {
        "preset": args.preset, "input_dim": args.input_dim, "configs": [list(c) for c in configs],
        "batches": batches, "backends": backends, "peers": peers, "warmup": args.warmup, "min_reps": args.reps,
        "max_reps": timing.max_reps, "target_s": args.target_s, "budget_s": args.budget_s, "seed": args.seed,
        "quick": args.quick, "cls_head_scale": CLS_HEAD_SCALE}, "notes": NOTES, "models": [], "rows": [],
        "skipped": [], "complete": False}
    log(f"device: {report['env']['device_name']} ({device}), torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, commit {report['env']['commit']}, "
        f"load average {report['env']['loadavg_1m']}")

    with tempfile.TemporaryDirectory(prefix="gsmt_bench_") as tmp, export_cache(Path(tmp) / "cache"):
        for n_config, (t, mode, k) in enumerate(configs):
            log(f"[T={t} {mode} K={k}]")
            model = random_model(args.preset, t, k, args.input_dim, args.seed)
            report["models"].append(model_info(model, mode))
            ckpt = write_checkpoint(model, mode, Path(tmp))
            pool, time_kw = make_videos(t, mode, args.input_dim, min(VIDEO_POOL, max(batches)), args.seed + 1)
            calibration = calibration_windows(ckpt, pool, time_kw) if any(":int8" in b for b in backends) else None
            detectors, skipped = open_backends(ckpt, backends, device, log, calibration)
            report["skipped"] += [dict(s, T=t, mode=mode, K=k) for s in skipped]
            # Each configuration, then each backend/peer in it, gets an equal share of the budget that is left, so
            # that a slow first configuration cannot starve the others.
            config_timing = share(timing, len(configs) - n_config)
            runners = [("backend", name) for name in detectors] + [("peer", name) for name in peers]
            for n_runner, (kind, name) in enumerate(runners):
                runner_timing = share(config_timing, len(runners) - n_runner)
                if kind == "backend":
                    bench_backend(name, detectors[name], pool, time_kw, batches, runner_timing, device,
                                  (t, mode, k), report, log)
                else:
                    bench_peer(name, (t, mode, k), args, pool, time_kw, batches, runner_timing, report, log)
            del detectors
            if getattr(args, "on_config_done", None):
                args.on_config_done(report)
    report["complete"] = True
    report["elapsed_s"] = time.monotonic() - start
    report["env"]["loadavg_1m_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    return report


@contextlib.contextmanager
def export_cache(folder: Path):
    """ONNX exports of the throwaway benchmark models go to ``folder``, not to the user's cache."""
    previous = os.environ.get("GSMT_FAST_CACHE")
    os.environ["GSMT_FAST_CACHE"] = str(folder)
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop("GSMT_FAST_CACHE", None)
        else:
            os.environ["GSMT_FAST_CACHE"] = previous


def share(timing: Timing, parts: int) -> Timing:
    """``timing`` with a deadline ``1/parts`` of the remaining budget away (unchanged without a budget)."""
    if timing.deadline is None:
        return timing
    return dataclasses.replace(timing, deadline=time.monotonic() + max(0.0, timing.remaining()) / max(1, parts))


def bench_backend(name, det, pool, time_kw, batches, timing, device, config, report, log):
    t, mode, k = config
    seconds_per_video = None  # from the previous batch: to skip a batch that cannot finish within the budget
    for batch in batches:
        if seconds_per_video is not None and seconds_per_video * batch * (timing.warmup + 1) > timing.remaining():
            reason = f"time budget: batch {batch} would need ~{seconds_per_video * batch * 2:.0f} s"
            report["skipped"].append({"backend": name, "T": t, "mode": mode, "K": k, "batch": batch,
                                      "reason": reason})
            log(f"  {name} batch {batch}: skipped ({reason})")
            continue
        videos, kw = common.batch_of(pool, time_kw, batch)
        row = {"backend": name, "T": t, "mode": mode, "K": k, **bench_point(det, videos, kw, timing, device)}
        seconds_per_video = sum(row["seconds"][m]["median_s"] for m in ("end_to_end", "forward", "post")) / batch
        report["rows"].append(row)
        log(f"  {name} batch {batch}: {row['videos_per_s']:.1f} videos/s (forward {row['forward_videos_per_s']:.1f},"
            f" post {row['post_videos_per_s']:.1f}), {row['candidates_per_window']:.0f} cands/window")


def bench_peer(peer, config, args, pool, time_kw, batches, timing, report, log):
    t, mode, k = config
    if peer != "actionformer":
        report["skipped"].append({"backend": peer, "T": t, "mode": mode, "K": k, "reason": "unknown peer"})
        return
    import peer_actionformer

    rows, info, reason = peer_actionformer.bench_config(t, mode, k, args.input_dim, pool, time_kw, batches,
                                                        args.device, timing, seed=args.seed, log=log,
                                                        skipped=report["skipped"])
    if reason:
        report["skipped"].append({"backend": peer_actionformer.BACKEND_NAME, "T": t, "mode": mode, "K": k,
                                  "reason": reason})
        log(f"  skip peer {peer}: {reason}")
    if info:
        report["models"].append(info)
    report["rows"] += rows


# ---------------------------------------------------------------------------------------------------- output
TABLE_COLUMNS = [("backend", "backend"), ("T", "T"), ("mode", "mode"), ("K", "K"), ("batch", "batch"),
                 ("videos/s", "videos_per_s"), ("p50 ms", "latency_p50_ms"), ("p99 ms", "latency_p99_ms"),
                 ("fwd videos/s", "forward_videos_per_s"), ("post videos/s", "post_videos_per_s"),
                 ("cands/win", "candidates_per_window"), ("dets/video", "detections_per_video"),
                 ("host MiB", "host_peak_delta_mib"), ("dev MiB", "device_peak_mib"), ("reps", "reps")]
MODEL_COLUMNS = [("model", "model"), ("T", "T"), ("mode", "mode"), ("K", "K"), ("params (M)", "params_m"),
                 ("GFLOPs/video", "gflops"), ("seq len", "seq_len")]


def model_rows(report) -> list[dict]:
    rows = [{**m, "params_m": m["params"] / 1e6, "gflops": m["flops_per_video"] / 1e9,
             "seq_len": m.get("seq_len", m["T"])} for m in report["models"]]
    rows.append({"model": "paper Table 3", "T": PAPER_TABLE3["T"], "mode": "resize", "K": PAPER_TABLE3["K"],
                 "params_m": PAPER_TABLE3["params"] / 1e6, "gflops": PAPER_TABLE3["flops"] / 1e9})
    return rows


def format_report(report) -> str:
    env = report["env"]
    parts = [f"## gsmt_fast benchmark — {env['device_name']} ({env['device']}), {env['date']}, commit "
             f"{env['commit']}, torch {env['torch']}, python {env['python']}, {env['torch_threads']} threads, "
             f"load average {env.get('loadavg_1m')} → {env.get('loadavg_1m_end')}",
             "", common.markdown_table(report["rows"], TABLE_COLUMNS), "",
             common.markdown_table(model_rows(report), MODEL_COLUMNS), ""]
    if report["skipped"]:
        parts.append("Skipped:")
        seen = set()
        for s in report["skipped"]:
            key = (s["backend"], s["reason"])
            if key not in seen:
                seen.add(key)
                parts.append(f"- {s['backend']}: {s['reason']}")
        parts.append("")
    parts += [f"- {n}" for n in report["notes"]]
    return "\n".join(parts)


def output_stem(report) -> str:
    env = report["env"]
    stamp = datetime.datetime.strptime(env["date"], "%Y-%m-%dT%H:%M:%SZ").strftime("%Y%m%d-%H%M%S")
    kind = "cuda" if env["device"].startswith("cuda") else "cpu"
    return f"{stamp}_{common.slug(kind + '-' + env['device_name'])}_{common.slug(env['commit'], 20)}"


RESULTS_MD_HEADER = """# Benchmark results (append-only)

Rows are appended by `python bench/run.py` (see bench/README.md for what each column measures). Never edit old rows;
a new measurement is a new row. videos/s and latencies are end-to-end `Detector.detect` with features in host memory;
fwd/post are the model forward alone and the post-processing alone. Random seeded weights (speed does not depend on
training). JSON with every sample: bench/results/.

| date | commit | device | threads | torch | python | backend | T | mode | K | batch | videos/s | p50 ms | p99 ms \
| fwd videos/s | post videos/s | cands/win | host MiB | dev MiB |
|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|
"""


def append_results_md(report, path: Path) -> None:
    env = report["env"]
    if not path.exists():
        path.write_text(RESULTS_MD_HEADER)
    fmt = common.markdown_table  # reuse its number formatting on a one-row table
    columns = [("", k) for k in ("videos_per_s", "latency_p50_ms", "latency_p99_ms", "forward_videos_per_s",
                                 "post_videos_per_s", "candidates_per_window", "host_peak_delta_mib",
                                 "device_peak_mib")]
    lines = []
    for row in report["rows"]:
        numbers = fmt([row], columns).splitlines()[2].strip("| ")
        lines.append(f"| {env['date'][:16].replace('T', ' ')} | {env['commit']} | {env['device_name']} "
                     f"({env['device']}) | {env['torch_threads']} | {env['torch']} | {env['python']} | "
                     f"{row['backend']} | {row['T']} | {row['mode']} | {row['K']} | {row['batch']} | {numbers} |")
    with path.open("a") as f:
        f.write("\n".join(lines) + ("\n" if lines else ""))


def plot_throughput(report, path: Path) -> Path | None:
    if not report["rows"]:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    configs = sorted({(r["T"], r["mode"], r["K"]) for r in report["rows"]})
    fig, axes = plt.subplots(1, len(configs), figsize=(5 * len(configs), 4), squeeze=False)
    for ax, (t, mode, k) in zip(axes[0], configs):
        rows = [r for r in report["rows"] if (r["T"], r["mode"], r["K"]) == (t, mode, k)]
        for i, name in enumerate(sorted({r["backend"] for r in rows})):
            mine = sorted((r for r in rows if r["backend"] == name), key=lambda r: r["batch"])
            b = [r["batch"] for r in mine]
            ax.plot(b, [r["videos_per_s"] for r in mine], "o-", color=f"C{i}", label=f"{name} end-to-end")
            ax.plot(b, [r["forward_videos_per_s"] for r in mine], "x--", color=f"C{i}", alpha=0.6,
                    label=f"{name} forward only")
        ax.set_xscale("log", base=2)
        batches = sorted({r["batch"] for r in rows})
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.set_yscale("log")
        ax.set_xlabel("batch size (videos per detect call)")
        ax.set_ylabel("videos / s")
        ax.set_title(f"T={t} {mode}, K={k}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    env = report["env"]
    fig.suptitle(f"{env['device_name']} ({env['device']}), {env['torch_threads']} threads, commit {env['commit']}",
                 fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------------- CLI
def build_parser(prog: str = "bench/run.py") -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="CPU smoke run: batches 1,16,64, K=20, few repetitions, 150 s budget (< 3 min on 2 cores)")
    p.add_argument("--backends", default="all", help=f"comma list of {', '.join(BACKENDS)} or 'all' (default), each "
                   "optionally with a precision (torch:bf16, onnxruntime:int8); backends that fail to construct here "
                   "are skipped with the reason")
    p.add_argument("--batches", type=parse_int_list, help=f"videos per detect call (default {DEFAULT_BATCHES})")
    p.add_argument("--T", dest="temporal_scales", type=parse_temporal_scales, default=None,
                   help=f"temporal scales, each T or T:mode (default {DEFAULT_T}: 100 is resize mode, others window)")
    p.add_argument("--K", dest="classes", type=parse_int_list, help="numbers of classes (default 20,200; quick 20)")
    p.add_argument("--device", default=None, help="cpu or cuda[:i] (default: cuda when available)")
    p.add_argument("--out", type=Path, default=BENCH_DIR / "results", help="folder for the JSON and the plot")
    p.add_argument("--results-md", default=str(BENCH_DIR / "RESULTS.md"),
                   help="markdown file the rows are appended to ('none': do not append)")
    p.add_argument("--peers", default="actionformer", help="peers to compare with: actionformer or none")
    p.add_argument("--preset", default="paper", help="model preset (default paper; tiny for smoke tests)")
    p.add_argument("--input-dim", type=int, default=2048, help="feature dimension d_in (default 2048, I3D)")
    p.add_argument("--reps", type=int, default=None, help="minimum timed repetitions per measurement (5; quick 3)")
    p.add_argument("--max-reps", type=int, default=None, help="maximum timed repetitions (100; quick 20)")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up calls per measurement")
    p.add_argument("--target-s", type=float, default=None, help="seconds to spend per measurement (3; quick 1)")
    p.add_argument("--budget-s", type=float, default=None,
                   help="overall time budget: later points get fewer repetitions or are skipped (quick: 150)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: PyTorch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-plot", action="store_true")
    return p


def resolve_args(args) -> argparse.Namespace:
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.batches is None:
        args.batches = list(QUICK_BATCHES if args.quick else DEFAULT_BATCHES)
    if args.temporal_scales is None:
        args.temporal_scales = parse_temporal_scales(DEFAULT_T)
    if args.classes is None:
        args.classes = [20] if args.quick else [20, 200]
    if args.reps is None:
        args.reps = 3 if args.quick else 5
    if args.max_reps is None:
        args.max_reps = 20 if args.quick else 100
    if args.target_s is None:
        args.target_s = 1.0 if args.quick else 3.0
    if args.budget_s is None and args.quick:
        args.budget_s = 150.0
    return args


def main(argv=None, prog: str = "bench/run.py") -> int:
    args = resolve_args(build_parser(prog).parse_args(argv))
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("bench: --device cuda but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    from gsmt_fast.files import atomic_write_json

    paths = {}

    def save(report):  # after every configuration, so a run cut short still leaves its JSON
        paths.setdefault("json", args.out / f"{output_stem(report)}.json")
        atomic_write_json(paths["json"], report)

    args.on_config_done = save
    report = run_sweep(args)
    save(report)
    print()
    print(format_report(report))
    print()
    print(f"JSON: {paths['json']}")
    if not args.no_plot:
        png = plot_throughput(report, args.out / f"throughput_{output_stem(report)}.png")
        if png:
            print(f"plot: {png}")
    if args.results_md != "none":
        append_results_md(report, Path(args.results_md))
        print(f"rows appended to {args.results_md}")
    print(f"finished in {report['elapsed_s']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
