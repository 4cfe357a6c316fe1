"""Benchmark of the fused mask head (kernels/mask_head.py) against eager PyTorch and torch.compile.

    python bench/kernels/bench_mask_head.py --device cuda --out DIR    # paper dims on a GPU (~30 s with compile)
    python bench/kernels/bench_mask_head.py --device cpu --out DIR     # interpreter smoke run, tiny dims (< 20 s)

Dims (GPU): B=256 videos, T=256 snippets, C=512, Cm=256 (the paper's head), and the column variant with M=50 selected
snippets per video (the top-M1 snippets of post-processing). Rows:
  triton bf16 / fp32 full masks, triton bf16 columns, eager bf16 full / columns, torch.compile bf16 full.
Eager = the model's own ops (F.conv1d x3, ReLU, sigmoid) on bf16 tensors, on the channels-last embedding seen as
(B, C, T) (``e.transpose(1, 2)``, what the model's head gets); its column variant computes the full masks then gathers.

FLOPs (2 per multiply-add), counted by hand as the work the task needs:
  full masks: 2 * B * T * (3*C*Cm + 3*Cm*Cm + Cm*T)
  columns:    2 * B * (T * (3*C*Cm + 3*Cm*Cm) + M * Cm*T)   (also for eager, which does the full work and gathers)
GB/s counts the mask bytes written, B * T * N * bytes(out) (N = T or M): the T x T output is the head's largest
stream. The fraction of peak is TFLOP/s / 790 (the measured H100 dense bf16 peak).

Timing: ``triton.testing.do_bench(fn, warmup=25, rep=100)``, median ms, on a GPU; on CPU (Triton interpreter) one
warm-up call and one timed call, and no torch.compile. On a GPU the Triton rows are also timed as a CUDA-graph replay
(``ms_cuda_graph``): the wrapper's host work (~0.2 ms per call) is as long as the GPU work at B=256, so the plain
timing of those rows is partly host-bound (TFLOP/s and GB/s are computed from the plain timing). Prints a markdown
table and writes DIR/bench_mask_head.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
H100_BF16_PEAK_TFLOPS = 790.0
GPU_DIMS = dict(batch=256, length=256, c_in=512, c_m=256, n_cols=50)
CPU_DIMS = dict(batch=2, length=32, c_in=32, c_m=32, n_cols=5)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda",
                        help="cuda: paper dims with do_bench; cpu: Triton interpreter, tiny dims, 1 repetition")
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="folder for bench_mask_head.json")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile row")
    return parser.parse_args(argv)


def import_kernel():
    """gsmt_fast.kernels.mask_head when the package is installed, else kernels/mask_head.py from this checkout."""
    try:
        from gsmt_fast.kernels import mask_head as module
    except ImportError:
        sys.path.insert(0, str(REPO_ROOT))
        from kernels import mask_head as module
    return module


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device == "cpu":
        # Before torch/triton are imported: Triton reads it at import time.
        os.environ["TRITON_INTERPRET"] = "1"
    import torch
    import torch.nn.functional as F
    import triton

    if args.device == "cuda" and not torch.cuda.is_available():
        print("bench_mask_head: --device cuda but no CUDA GPU is available", file=sys.stderr)
        return 2
    kernel = import_kernel()
    dims = GPU_DIMS if args.device == "cuda" else CPU_DIMS
    batch, length, c_in, c_m, n_cols = (dims[k] for k in ("batch", "length", "c_in", "c_m", "n_cols"))
    device = torch.device(args.device)

    g = torch.Generator().manual_seed(0)
    e32 = torch.randn(batch, length, c_in, generator=g).to(device)
    weights32 = [
        (torch.randn(c_m, c_in, 3, generator=g) / (3 * c_in) ** 0.5).to(device),
        (torch.randn(c_m, generator=g) * 0.1).to(device),
        (torch.randn(c_m, c_m, 3, generator=g) / (3 * c_m) ** 0.5).to(device),
        (torch.randn(c_m, generator=g) * 0.1).to(device),
        (torch.randn(length, c_m, 1, generator=g) * (2.0 / c_m) ** 0.5).to(device),
        (torch.randn(length, generator=g) * 0.1).to(device),
    ]
    columns = torch.randint(0, length, (batch, n_cols), generator=g).to(device)
    # bf16 on the GPU; the interpreter's bf16 tl.dot is broken, so the CPU smoke run uses fp16 in its place.
    lowp = torch.bfloat16 if device.type == "cuda" else torch.float16
    lowp_name = "bf16" if lowp == torch.bfloat16 else "fp16"
    e16 = e32.to(lowp)
    weights16 = [w.to(lowp) for w in weights32]

    def eager(e, w1, b1, w2, b2, w3, b3, selected=None):
        x = e.transpose(1, 2)
        h = F.relu(F.conv1d(x, w1, b1, padding=1))
        h = F.relu(F.conv1d(h, w2, b2, padding=1))
        masks = torch.sigmoid(F.conv1d(h, w3, b3))
        if selected is None:
            return masks
        return torch.gather(masks, 2, selected[:, None, :].expand(-1, masks.shape[1], -1))

    full_flops = 2 * batch * length * (3 * c_in * c_m + 3 * c_m * c_m + c_m * length)
    column_flops = 2 * batch * (length * (3 * c_in * c_m + 3 * c_m * c_m) + n_cols * c_m * length)
    # name, dtype label, variant, callable, FLOPs, mask bytes written
    runs = [
        ("triton", lowp_name, "full", lambda: kernel.mask_head(e16, *weights16), full_flops,
         batch * length * length * 2),
        ("triton", "fp32", "full", lambda: kernel.mask_head(e32, *weights32), full_flops, batch * length * length * 4),
        ("triton", lowp_name, f"columns M={n_cols}", lambda: kernel.mask_head(e16, *weights16, columns=columns),
         column_flops, batch * length * n_cols * 2),
        ("eager", lowp_name, "full", lambda: eager(e16, *weights16), full_flops, batch * length * length * 2),
        ("eager", lowp_name, f"columns M={n_cols}", lambda: eager(e16, *weights16, selected=columns), column_flops,
         batch * length * n_cols * 2),
    ]
    if args.device == "cuda" and not args.no_compile:
        compiled = torch.compile(eager)
        runs.append(("torch.compile", lowp_name, "full", lambda: compiled(e16, *weights16), full_flops,
                     batch * length * length * 2))

    rows = []
    with torch.no_grad():
        for name, dtype, variant, fn, flops, bytes_written in runs:
            row = dict(impl=name, dtype=dtype, variant=variant, flops=flops, mask_bytes_written=bytes_written)
            started = time.perf_counter()
            try:
                if args.device == "cuda":
                    fn()  # compile / JIT outside the timing
                    torch.cuda.synchronize()
                    row["ms"] = triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")
                    if name == "triton":
                        row["ms_cuda_graph"] = time_cuda_graph(fn)
                else:
                    fn()
                    t0 = time.perf_counter()
                    fn()
                    row["ms"] = (time.perf_counter() - t0) * 1e3
            except Exception as error:  # noqa: BLE001 - a row that cannot run is reported, not fatal
                row["error"] = f"{type(error).__name__}: {error}"[:300]
            row["wall_s"] = round(time.perf_counter() - started, 2)
            if "ms" in row:
                row["tflops"] = flops / (row["ms"] * 1e-3) / 1e12
                row["gbps"] = bytes_written / (row["ms"] * 1e-3) / 1e9
                row["peak_fraction"] = row["tflops"] / H100_BF16_PEAK_TFLOPS
            rows.append(row)

        # Sanity: the timed kernel agrees with eager (a broken build would show here, not only in the tests). The fp32
        # reference must not be TF32 (cuDNN's default for fp32 convolutions).
        tf32_allowed = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = False
        reference = eager(e32, *weights32).float()
        torch.backends.cudnn.allow_tf32 = tf32_allowed
        agreement = {
            f"triton_{lowp_name}_vs_fp32_rel_rms": rel_rms(kernel.mask_head(e16, *weights16), reference),
            f"eager_{lowp_name}_vs_fp32_rel_rms": rel_rms(eager(e16, *weights16), reference),
            "triton_fp32_vs_fp32_rel_rms": rel_rms(kernel.mask_head(e32, *weights32), reference),
        }

    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    result = dict(
        op="mask_head", device=device_name, torch=torch.__version__, triton=triton.__version__,
        interpreter=os.environ.get("TRITON_INTERPRET") == "1", dims=dims,
        flop_formula_full="2*B*T*(3*C*Cm + 3*Cm*Cm + Cm*T)",
        flop_formula_columns="2*B*(T*(3*C*Cm + 3*Cm*Cm) + M*Cm*T)",
        bytes_formula="mask bytes written: B*T*N*bytes(out), N = T or M",
        peak_tflops=H100_BF16_PEAK_TFLOPS, timing="do_bench(warmup=25, rep=100), median" if device.type == "cuda"
        else "1 warm-up + 1 timed call (interpreter)", rows=rows, agreement=agreement,
    )
    print(f"mask head, {device_name}, B={batch} T={length} C={c_in} Cm={c_m} M={n_cols}, "
          f"torch {torch.__version__}, triton {triton.__version__}")
    print("| impl | dtype | variant | ms | TFLOP/s | GB/s (masks) | % of 790 TFLOP/s | ms (CUDA graph) |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for row in rows:
        if "ms" in row:
            graph_ms = row.get("ms_cuda_graph")
            print(f"| {row['impl']} | {row['dtype']} | {row['variant']} | {row['ms']:.4g} | {row['tflops']:.4g} | "
                  f"{row['gbps']:.4g} | {100 * row['peak_fraction']:.3g} | "
                  f"{'' if graph_ms is None else format(graph_ms, '.4g')} |")
        else:
            print(f"| {row['impl']} | {row['dtype']} | {row['variant']} | failed: {row['error']} | | | | |")
    print("agreement (rel RMS vs fp32 eager):", {k: f"{v:.2e}" for k, v in agreement.items()})
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "bench_mask_head.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return 0 if all("ms" in row for row in rows) else 1


def time_cuda_graph(fn):
    """Median ms of one replay of ``fn`` captured in a CUDA graph: the GPU's time without the wrapper's host work
    (validation, weight repacking and three Triton launches cost ~0.2 ms of CPU per call, as much as the GPU work at
    B=256). None when the capture fails."""
    import torch
    import triton

    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        return triton.testing.do_bench(graph.replay, warmup=25, rep=100, return_mode="median")
    except Exception as error:  # noqa: BLE001 - the eager timing stands without it
        print(f"CUDA graph capture failed: {type(error).__name__}: {error}", file=sys.stderr)
        return None


def rel_rms(a, b) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


if __name__ == "__main__":
    sys.exit(main())
