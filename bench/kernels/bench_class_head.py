"""Benchmark of the class-head kernels (kernels/class_head.py) against eager PyTorch and torch.compile.

    python bench/kernels/bench_class_head.py --device cuda --out DIR     # H100: paper dims, do_bench
    python bench/kernels/bench_class_head.py --device cpu --out DIR      # interpreter smoke test, tiny shapes

Rows (GPU), for K = 20 (THUMOS) and K = 200 (ActivityNet), B = 256 windows, T = 256, C = 512, M1 = 50, valid lengths
uniform in [T/2, T]:
- triton bf16 / triton fp32: ``class_head`` (both launches: logits + softmax + fg/label, then the top-M1 ranks);
- torch eager bf16: the same work as PyTorch ops on the GPU (Conv1d on the (B, C, T) view as GSMT.cls_head runs it,
  softmax of the fp32 logits, max over the K classes, ``topk`` of the masked fg). Its tie order is topk's, not the
  oracle's (the NumPy reference is exact but loops over windows on the host: not a GPU baseline);
- torch.compile bf16: ``torch.compile`` of that function (only for K = 20, to keep the script's compile time short).

Counting (stated once, used for every row):
- FLOPs = 2 * B * T * C * (K+1): the head's GEMM, 2 FLOPs per multiply-add (softmax/selection not counted; they are
  O(B*T*(K+T)) compares and exps, not matrix work).
- bytes = B*T*C*s (read e) + (K+1)*C*s (weight) + 4*B*(K+1)*T (write fp32 probs) + 3*4*B*T (write fg and label,
  read fg back) + 4*B*M1 (write top), s = element size of e: the minimal traffic of the two kernels. The op is
  memory-bound (about 1 FLOP per byte for K = 20), so GB/s against the ~3.3 TB/s of HBM3 is the figure of merit.
- peak: 790 TFLOP/s, the measured H100 dense bf16 matrix-product peak.

Timing: ``triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")`` on the GPU; one timed call after one
warm-up with ``time.perf_counter`` on the CPU (interpreter: the numbers only show that the script runs).
Output: a markdown table on stdout and ``DIR/bench_class_head.json``.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
H100_BF16_PEAK_TFLOPS = 790.0


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                        help="cuda: paper dims with do_bench; cpu: Triton interpreter on tiny shapes (smoke test)")
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for bench_class_head.json")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile row")
    parser.add_argument("--warmup", type=int, default=25, help="do_bench warm-up in ms (GPU)")
    parser.add_argument("--rep", type=int, default=100, help="do_bench measuring time in ms (GPU)")
    return parser.parse_args(argv)


def load_class_head_module():
    """``gsmt_fast.kernels.class_head`` when the package is installed, else the file itself (a bare checkout)."""
    try:
        from gsmt_fast.kernels import class_head
        return class_head
    except ImportError:
        spec = importlib.util.spec_from_file_location("gsmt_class_head_kernel", REPO_ROOT / "kernels" / "class_head.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module


def git_commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device == "cpu":
        # Must be set before triton (or torch, which may import it lazily) is imported.
        os.environ["TRITON_INTERPRET"] = "1"

    import torch
    import torch.nn.functional as F
    import triton

    class_head = load_class_head_module()
    use_cuda = args.device == "cuda"
    if use_cuda and not torch.cuda.is_available():
        print("bench_class_head: --device cuda but no CUDA device is available", file=sys.stderr)
        return 2
    device = torch.device(args.device)

    top_snippets = 50
    if use_cuda:
        batch, length, channels = 256, 256, 512
        class_counts = [20, 200]
        kernel_dtypes = [torch.bfloat16, torch.float32]
        torch_dtype = torch.bfloat16
    else:
        batch, length, channels = 2, 64, 32
        class_counts = [20, 200]
        kernel_dtypes = [torch.float32, torch.float16]  # bf16 tl.dot is broken under the interpreter
        torch_dtype = torch.float32

    def time_ms(fn) -> float:
        if use_cuda:
            return float(triton.testing.do_bench(fn, warmup=args.warmup, rep=args.rep, return_mode="median"))
        fn()
        start = time.perf_counter()
        fn()
        return (time.perf_counter() - start) * 1e3

    def class_head_torch(e, weight, bias, valid_len):
        """Eager PyTorch doing the kernels' work (see the module docstring for how its ties differ)."""
        logits = F.conv1d(e.transpose(1, 2), weight[:, :, None], bias)  # GSMT.cls_head on the (B, C, T) view
        probs = torch.softmax(logits.float(), dim=1)
        fg, label = probs[:, :-1].max(dim=1)
        valid = torch.arange(e.shape[1], device=e.device)[None, :] < valid_len[:, None]
        top = fg.masked_fill(~valid, float("-inf")).topk(min(top_snippets, e.shape[1]), dim=1).indices
        return probs, fg, label, top

    rows = []

    def record(name: str, dtype: torch.dtype, num_foreground: int, fn) -> None:
        ms = time_ms(fn)
        num_classes = num_foreground + 1
        element_size = torch.tensor([], dtype=dtype).element_size()
        flops = 2 * batch * length * channels * num_classes
        nbytes = (batch * length * channels * element_size + num_classes * channels * element_size
                  + 4 * batch * num_classes * length + 3 * 4 * batch * length + 4 * batch * top_snippets)
        tflops = flops / (ms * 1e-3) / 1e12
        rows.append({
            "impl": name, "dtype": str(dtype).replace("torch.", ""), "B": batch, "T": length, "C": channels,
            "K": num_foreground, "M1": top_snippets, "ms": ms, "tflops": tflops, "gbps": nbytes / (ms * 1e-3) / 1e9,
            "peak_fraction": tflops / H100_BF16_PEAK_TFLOPS,
        })
        print(f"  {name:>14} {rows[-1]['dtype']:>8} K={num_foreground}: {ms:.4f} ms", flush=True)

    generator = torch.Generator().manual_seed(0)
    e32 = torch.randn(batch, length, channels, generator=generator).to(device)
    valid_len = torch.randint(length // 2, length + 1, (batch,), generator=generator).to(device)
    for num_foreground in class_counts:
        num_classes = num_foreground + 1
        weight32 = (torch.randn(num_classes, channels, generator=generator) / channels**0.5).to(device)
        bias32 = (torch.randn(num_classes, generator=generator) * 0.1).to(device)

        for dtype in kernel_dtypes:
            e, weight, bias = e32.to(dtype), weight32.to(dtype), bias32.to(dtype)
            outputs = {
                "out_probs": torch.empty(batch, num_classes, length, device=device),
                "out_fg": torch.empty(batch, length, device=device),
                "out_label": torch.empty(batch, length, dtype=torch.int32, device=device),
                "out_top": torch.empty(batch, top_snippets, dtype=torch.int32, device=device),
                "out_top_count": torch.empty(batch, dtype=torch.int32, device=device),
            }

            def kernel(e=e, weight=weight, bias=bias, outputs=outputs):
                return class_head.class_head(e, weight, bias, valid_len, top_snippets, **outputs)

            record("triton", dtype, num_foreground, kernel)

        e, weight, bias = e32.to(torch_dtype), weight32.to(torch_dtype), bias32.to(torch_dtype)

        def eager(e=e, weight=weight, bias=bias):
            return class_head_torch(e, weight, bias, valid_len)

        record("torch eager", torch_dtype, num_foreground, eager)
        if use_cuda and not args.no_compile and num_foreground == class_counts[0]:
            compiled = torch.compile(class_head_torch, dynamic=False)
            record("torch.compile", torch_dtype, num_foreground,
                   lambda e=e, weight=weight, bias=bias, fn=compiled: fn(e, weight, bias, valid_len))

    header = "| impl | dtype | K | ms | TFLOP/s | GB/s | % of 790 TFLOP/s |"
    lines = [f"class head: B={batch}, T={length}, C={channels}, M1={top_snippets} on {args.device}", "",
             header, "|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {row['impl']} | {row['dtype']} | {row['K']} | {row['ms']:.4f} | {row['tflops']:.2f} | "
                     f"{row['gbps']:.0f} | {100 * row['peak_fraction']:.2f} |")
    print("\n".join(lines))

    environment = {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "device": args.device,
        "device_name": torch.cuda.get_device_name(device) if use_cuda else platform.processor() or platform.machine(),
        "torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version(),
        "commit": git_commit(), "interpreter": os.environ.get("TRITON_INTERPRET") == "1",
    }
    result = {
        "op": "class_head",
        "flops_formula": "2 * B * T * C * (K+1)",
        "bytes_formula": "B*T*C*s + (K+1)*C*s + 4*B*(K+1)*T + 12*B*T + 4*B*M1 (s = element size of e)",
        "peak_tflops": H100_BF16_PEAK_TFLOPS,
        "timing": f"do_bench warmup={args.warmup} rep={args.rep} median" if use_cuda else "1 call after 1 warm-up",
        "environment": environment,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench_class_head.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
