"""What the bench/kernels/bench_*.py scripts share: their command line, the interpreter switch for ``--device cpu``,
the kernel import, timing, rates against the 790 TFLOP/s peak, and the markdown/JSON output.

The scripts run with their own folder on sys.path (``python bench/kernels/bench_X.py``), so ``import _bench_common``
finds this file. It imports neither torch nor triton at module level: ``TRITON_INTERPRET`` must be set (by
:func:`parse_args`) before either is imported.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
H100_BF16_PEAK_TFLOPS = 790.0  # the measured dense bf16 matrix-product peak of the H100


def parse_args(doc: str, json_name: str, argv=None, *, default_out: str = ".", add_arguments=None):
    """The common flags (plus ``add_arguments(parser)``'s); ``--device cpu`` sets TRITON_INTERPRET=1 right away."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cuda: paper dims with do_bench; cpu: Triton interpreter on tiny shapes (smoke test)")
    parser.add_argument("--out", type=Path, default=Path(default_out), help=f"folder for {json_name}")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows (always on cpu)")
    parser.add_argument("--warmup", type=int, default=25, help="do_bench warm-up in ms (GPU)")
    parser.add_argument("--rep", type=int, default=100, help="do_bench measuring time in ms (GPU)")
    if add_arguments is not None:
        add_arguments(parser)
    args = parser.parse_args(argv)
    if args.device == "cpu":
        # Before triton (or torch, which may import it lazily) is imported: the interpreter is chosen at import.
        os.environ["TRITON_INTERPRET"] = "1"
    return args


def load_kernel(name: str):
    """``gsmt_fast.kernels.<name>`` when the package is installed, else ``kernels/<name>.py`` of this checkout."""
    try:
        return importlib.import_module(f"gsmt_fast.kernels.{name}")
    except ImportError:
        sys.path.insert(0, str(REPO_ROOT))
        return importlib.import_module(f"kernels.{name}")


def torch_device(script: str, args):
    """The torch.device of ``--device``; exit status 2 (after a message) when CUDA is asked for and missing."""
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"{script}: --device cuda but no CUDA device is available", file=sys.stderr)
        raise SystemExit(2)
    return torch.device(args.device)


def time_ms(fn, args) -> float:
    """do_bench median (warmup/rep from args) on the GPU; on the CPU one warm-up call, then one timed call."""
    if args.device == "cuda":
        import triton.testing

        return float(triton.testing.do_bench(fn, warmup=args.warmup, rep=args.rep, return_mode="median"))
    fn()
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def timing_note(args) -> str:
    """How :func:`time_ms` timed, for the JSON report."""
    if args.device == "cuda":
        return f"do_bench median, warmup {args.warmup} ms, rep {args.rep} ms"
    return "interpreter: one timed call after one warm-up call"


def element_size(dtype) -> int:
    """Bytes per element of a torch dtype."""
    import torch

    return torch.empty((), dtype=dtype).element_size()


def rates(flops: float, nbytes: float, ms: float) -> tuple[float, float, float]:
    """(TFLOP/s, GB/s, fraction of the 790 TFLOP/s peak) of a run of ``ms`` milliseconds."""
    tflops = flops / (ms * 1e-3) / 1e12
    return tflops, nbytes / (ms * 1e-3) / 1e9, tflops / H100_BF16_PEAK_TFLOPS


def rel_rms(a, b) -> float:
    """Relative RMS error ||a - b|| / ||b||, in float64."""
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-300))


def dtype_name(dtype) -> str:
    """"bfloat16" for torch.bfloat16, etc."""
    return str(dtype).replace("torch.", "")


def git_commit() -> str:
    """Short commit hash of this checkout, or "unknown"."""
    try:
        return subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment(device) -> dict:
    """Date, device name, library versions, interpreter flag and commit, for the JSON report."""
    import torch
    import triton

    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device": device.type,
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version(),
        "triton_interpret": os.environ.get("TRITON_INTERPRET") == "1", "commit": git_commit(),
    }


def markdown_table(header, rows, align: str | None = None) -> str:
    """A markdown table; ``align`` has one letter per column, "l" or "r" (default: all left)."""
    align = align or "l" * len(header)
    lines = ["| " + " | ".join(header) + " |", "|" + "".join("---:|" if a == "r" else "---|" for a in align)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def write_report(args, json_name: str, report: dict) -> Path:
    """Write ``report`` as ``args.out/json_name`` (creating the folder) and say where."""
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / json_name
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")
    return path
