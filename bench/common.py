"""Shared pieces of the benchmarks: timing, memory, FLOP counting and where/what was measured.

Timing rules: every measured call is warmed up first; the number of repetitions comes from the warm-up time (aim at
``target_s`` of measurement, between ``min_reps`` and ``max_reps``) and never runs past a deadline; reported numbers
are medians (latency percentiles from the same samples). On CUDA each call is bracketed by CUDA events after a
synchronisation, so the time is the GPU's, including the host work that fed it.
"""

from __future__ import annotations

import datetime
import math
import os
import platform
import re
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

REPO_ROOT = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------------------- environment
def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def cpu_isa() -> str:
    """The CPU's widest matrix/vector instruction sets, as the CPU backends' speed depends on them: ``AMX``,
    ``AVX512-BF16``, ``AVX-512``, ``AVX2`` (those present, '+'-joined; ``unknown`` without /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    flags = set(next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), []))
    found = [name for name, flag in (("AMX", "amx_bf16"), ("AVX512-BF16", "avx512_bf16"), ("AVX-512", "avx512f"),
                                     ("AVX512-VNNI", "avx512_vnni"), ("AVX-VNNI", "avx_vnni"), ("AVX2", "avx2"))
             if flag in flags]
    return "+".join(found) or "no AVX2"


def device_name(device: str) -> str:
    """GPU name, or the CPU model with its instruction sets (``AMD EPYC [AVX2]``)."""
    if torch.device(device).type == "cuda":
        return torch.cuda.get_device_name(torch.device(device))
    return f"{cpu_model()} [{cpu_isa()}]"


def git_commit(repo: Path = REPO_ROOT) -> str:
    """Short hash of HEAD, with ``-dirty`` when tracked files differ from it; ``unknown`` outside a git checkout."""
    def git(*args) -> str:
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, timeout=10,
                              check=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("GSMT_BENCH_COMMIT", "unknown")
    return commit + ("-dirty" if dirty else "")


def environment(device: str) -> dict:
    """What a measurement depends on besides the code: machine, versions, threads, commit, date."""
    is_cuda = torch.device(device).type == "cuda"
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device": device,
        "device_name": device_name(device),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "commit": git_commit(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "cuda": torch.version.cuda if is_cuda else None,
        "platform": platform.platform(),
        # Other work on the machine skews CPU timings (2 shared cores here): keep the load next to the numbers.
        "loadavg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
    }


def slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-") or "unknown"


def batch_of(pool: list, time_kw: dict, batch: int) -> tuple[list, dict]:
    """``batch`` videos cycling through ``pool``, with their per-video time metadata (lists) sliced alike."""
    idx = [i % len(pool) for i in range(batch)]
    kw = {k: ([v[i] for i in idx] if isinstance(v, list) else v) for k, v in time_kw.items()}
    return [pool[i] for i in idx], kw


# ---------------------------------------------------------------------------------------------------- timing
def is_cuda(device) -> bool:
    return torch.device(device).type == "cuda"


def time_call(fn: Callable[[], object], device) -> float:
    """Seconds one call of ``fn`` takes (CUDA events on a GPU, ``perf_counter`` on the CPU)."""
    if is_cuda(device):
        start = torch.cuda.Event(enable_timing=True)
        end = torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


@dataclass
class Timing:
    """How long to measure each call: warm-up calls, then enough repetitions to fill ``target_s``."""

    warmup: int = 1
    min_reps: int = 3
    max_reps: int = 50
    target_s: float = 1.0
    deadline: float | None = None  # time.monotonic() after which no new repetition starts (beyond min 1)

    def remaining(self) -> float:
        return math.inf if self.deadline is None else self.deadline - time.monotonic()


def measure(fn: Callable[[], object], device, timing: Timing) -> list[float]:
    """Per-call seconds of ``fn`` after warm-up; at least one sample, more while time allows."""
    estimate = None
    for _ in range(timing.warmup):
        estimate = time_call(fn, device)
    samples = []
    if estimate is None:  # no warm-up asked for: the first sample doubles as the estimate
        samples.append(time_call(fn, device))
        estimate = samples[0]
    reps = int(min(timing.max_reps, max(timing.min_reps, math.ceil(timing.target_s / max(estimate, 1e-6)))))
    # Never start more repetitions than the deadline leaves room for (a truncated point is better than none).
    if timing.deadline is not None:
        reps = max(1, min(reps, int(timing.remaining() / max(estimate, 1e-6))))
    while len(samples) < reps:
        samples.append(time_call(fn, device))
    return samples


def summarize(samples: list[float]) -> dict:
    a = np.asarray(samples, dtype=np.float64)
    return {"median_s": float(np.median(a)), "p50_s": float(np.percentile(a, 50)),
            "p99_s": float(np.percentile(a, 99)), "min_s": float(a.min()), "n": int(a.size)}


# ---------------------------------------------------------------------------------------------------- memory
def _proc_status_kib(field: str) -> int | None:
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.M)
    except OSError:
        return None
    return int(match.group(1)) if match else None


class HostPeakMemory:
    """Peak growth of this process's resident memory inside a ``with`` block, in MiB.

    Linux: the peak (VmHWM) is reset through ``/proc/self/clear_refs`` on entry, so the result is the block's own
    peak above the RSS at entry. Elsewhere ``ru_maxrss`` only ever grows: the result is then a lower bound (0 when an
    earlier block peaked higher) and ``method`` says so.
    """

    def __enter__(self):
        self.peak_mib = None
        try:
            Path("/proc/self/clear_refs").write_text("5")
            self.method = "VmHWM-reset"
        except OSError:
            self.method = "ru_maxrss (lower bound)"
        self.base_kib = _proc_status_kib("VmRSS")
        self.base_maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return self

    def __exit__(self, *exc):
        if self.method == "VmHWM-reset" and self.base_kib is not None:
            self.peak_mib = max(0, _proc_status_kib("VmHWM") - self.base_kib) / 1024
        else:
            unit = 1 if sys.platform == "darwin" else 1024  # macOS reports bytes, Linux KiB
            grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - self.base_maxrss
            self.peak_mib = max(0, grown) * unit / 2**20
        return False


class DevicePeakMemory:
    """Peak CUDA memory allocated by PyTorch inside a ``with`` block (MiB, weights included); None on the CPU."""

    def __init__(self, device):
        self.device = torch.device(device)
        self.peak_mib = None

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mib = torch.cuda.max_memory_allocated(self.device) / 2**20
        return False


# ---------------------------------------------------------------------------------------------------- FLOPs
FLOP_NOTE = ("FLOPs from torch.utils.flop_counter.FlopCounterMode: 2 per multiply-accumulate of matmuls, "
             "convolutions and attention (QK^T and AV); softmax, norms, activations and post-processing not counted")


def _sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _cpu_attention_ops() -> dict:
    """FlopCounterMode knows the CUDA attention kernels but not the CPU one that SDPA dispatches to here: without
    this mapping the attention matmuls would silently count as 0 on the CPU and as 4·T²·C on a GPU."""
    names = ("_scaled_dot_product_flash_attention_for_cpu",)
    return {getattr(torch.ops.aten, n): _sdpa_flops for n in names if hasattr(torch.ops.aten, n)}


@torch.no_grad()
def count_flops(fn: Callable[[], object]) -> tuple[int, dict[str, int]]:
    """FLOPs of one call of ``fn`` (run it on a batch of one to get FLOPs per video) and the count per aten op."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False, custom_mapping=_cpu_attention_ops()) as counter:
        fn()
    per_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), per_op


def count_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# ---------------------------------------------------------------------------------------------------- output
def markdown_table(rows: list[dict], columns: list[tuple[str, str]]) -> str:
    """``columns``: (header, key); floats are formatted to 3 significant digits, None as '–'."""
    def cell(value) -> str:
        if value is None:
            return "–"
        if isinstance(value, float):
            if value == 0 or not math.isfinite(value):
                return f"{value:g}"
            return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
        return str(value)

    lines = ["| " + " | ".join(h for h, _ in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(cell(row.get(k)) for _, k in columns) + " |" for row in rows]
    return "\n".join(lines)
