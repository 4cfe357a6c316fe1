"""Benchmark of the fused linear kernel (kernels/linear.py) at the paper's dims.

    python bench/kernels/bench_linear.py --device cuda --out DIR     # H100: do_bench, bf16 + fp32 kernel
    python bench/kernels/bench_linear.py --device cpu --out DIR      # smoke test under the Triton interpreter

Configurations (the model's linear layers, M = B*T rows with B videos of T=256 snippets, C=512, d_in=2048):
    input_proj   x (M, 2048) -> (M, 512), + positional encoding (row_add, period T)
    qkv_ln       LN(x) (M, 512) -> (M, 1536)                       (pre-LN QKV projection)
    mlp_ln_relu  relu(LN(x) (M, 512) -> (M, 512)) + x              (pre-LN MLP + residual)
Implementations: the Triton kernel in bf16 and fp32 (ieee dots), eager PyTorch (the reference's ops run in bf16,
as the eager model in bf16) and torch.compile of that same bf16 reference (GPU only).

FLOPs = 2*M*N*K (one multiply-add per (m, n, k); LN, bias, activation and adds are O(M*(K+N)) and left out).
Bytes = the fewest an implementation must move: x read once (M*K), weight once (N*K), out written once (M*N),
residual read once (M*N) and row_add once (P*N), in the dtype of the run (bias, LN params: negligible, counted).
TFLOP/s = FLOPs / time, GB/s = Bytes / time; "of peak" = TFLOP/s / 790 (the measured dense bf16 peak of an H100
here, so fp32 rows show how far the FMA path is from the tensor cores). Each row also reports the rel. RMS error
against the fp32 reference on the same inputs. Times are do_bench medians (warmup 25 ms, rep 100 ms).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

H100_BF16_PEAK_TFLOPS = 790.0


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    p.add_argument("--out", type=Path, default=Path("bench/results/kernels"), help="folder for bench_linear.json")
    p.add_argument("--batch", type=int, default=None, help="videos per batch (default 256 on cuda, 2 on cpu)")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile (always skipped on cpu)")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device == "cpu":
        # Must precede the first import of triton (torch may import it lazily).
        os.environ["TRITON_INTERPRET"] = "1"
    import torch
    import triton
    import triton.testing
    from gsmt_fast.kernels.linear import fused_linear, fused_linear_reference

    cuda = args.device == "cuda"
    if cuda and not torch.cuda.is_available():
        print("bench_linear: --device cuda but no CUDA GPU is available", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    if cuda:
        B, T, C, d_in = args.batch or 256, 256, 512, 2048
        # bf16 tl.dot is broken under the interpreter: the CPU smoke test runs fp16 in its place.
        lowp = torch.bfloat16
    else:
        B, T, C, d_in = args.batch or 2, 16, 32, 64
        lowp = torch.float16
    M = B * T
    gen = torch.Generator(device="cpu").manual_seed(0)

    def randn(*shape, scale=1.0):
        return (torch.randn(*shape, generator=gen) * scale).to(device)

    configs = [
        ("input_proj", d_in, C, dict(row_add=randn(T, C), row_add_period=T)),
        ("qkv_ln", C, 3 * C, dict(ln_weight=1 + randn(C, scale=0.2), ln_bias=randn(C, scale=0.2))),
        ("mlp_ln_relu", C, C, dict(ln_weight=1 + randn(C, scale=0.2), ln_bias=randn(C, scale=0.2),
                                   activation="relu", residual="x")),
    ]

    def timed(fn) -> float:
        if cuda:
            return float(triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median"))
        fn()  # first call compiles/warms; then one timed repetition
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) * 1e3

    def rel_rms(a, b) -> float:
        a, b = a.double(), b.double()
        return float((a - b).norm() / b.norm())

    rows = []
    for name, K, N, extra in configs:
        x32 = randn(M, K)
        w32 = randn(N, K, scale=K**-0.5)
        b32 = randn(N, scale=0.1)
        kw32 = {k: (x32 if v == "x" else v) for k, v in extra.items()}
        with torch.no_grad():
            ref32 = fused_linear_reference(x32, w32, b32, **kw32)
        flops = 2 * M * N * K
        impls = [("triton", lowp), ("triton", torch.float32), ("eager", lowp)]
        if cuda and not args.no_compile:
            impls.append(("torch.compile", lowp))
        for impl, dtype in impls:
            x, w, b = x32.to(dtype), w32.to(dtype), b32.to(dtype)
            kw = {k: (v.to(dtype) if isinstance(v, torch.Tensor) else v) for k, v in kw32.items()}
            if impl == "triton":
                out = torch.empty(M, N, device=device, dtype=dtype)

                def fn(x=x, w=w, b=b, kw=kw, out=out):
                    return fused_linear(x, w, b, out=out, **kw)
            else:
                def reference(x, w, b, kw=kw, dtype=dtype):
                    return fused_linear_reference(x, w, b, compute_dtype=dtype, **kw)

                compiled = torch.compile(reference, dynamic=False) if impl == "torch.compile" else reference

                def fn(x=x, w=w, b=b, compiled=compiled):
                    return compiled(x, w, b)
            try:
                with torch.no_grad():
                    err = rel_rms(fn(), ref32)
                    ms = timed(fn)
            except Exception as exc:  # noqa: BLE001 - one failing implementation must not hide the others
                print(f"bench_linear: {name} {impl} {dtype} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                rows.append(dict(config=name, M=M, K=K, N=N, impl=impl, dtype=str(dtype).replace("torch.", ""),
                                 error=f"{type(exc).__name__}: {exc}"[:500]))
                continue
            es = torch.tensor([], dtype=dtype).element_size()
            nbytes = es * (M * K + N * K + M * N + N)
            nbytes += es * M * N if "residual" in kw else 0
            nbytes += es * T * N if "row_add" in kw else 0
            nbytes += es * 2 * K if "ln_weight" in kw else 0
            tflops = flops / (ms * 1e-3) / 1e12
            rows.append(dict(config=name, M=M, K=K, N=N, impl=impl, dtype=str(dtype).replace("torch.", ""),
                             ms=ms, tflops=tflops, gbps=nbytes / (ms * 1e-3) / 1e9,
                             frac_peak=tflops / H100_BF16_PEAK_TFLOPS, rel_rms_vs_fp32=err, flops=flops,
                             bytes=nbytes))
            del fn
        if cuda:
            torch.cuda.empty_cache()

    header = "| config | M | K | N | impl | dtype | ms | TFLOP/s | GB/s | of 790 TFLOP/s | rel RMS vs fp32 |"
    lines = [header, "|" + "---|" * 11]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['config']} | {r['M']} | {r['K']} | {r['N']} | {r['impl']} | {r['dtype']} | failed: "
                         f"{r['error'][:60]} | | | | |")
            continue
        lines.append(f"| {r['config']} | {r['M']} | {r['K']} | {r['N']} | {r['impl']} | {r['dtype']} | "
                     f"{r['ms']:.4f} | {r['tflops']:.1f} | {r['gbps']:.0f} | {100 * r['frac_peak']:.1f}% | "
                     f"{r['rel_rms_vs_fp32']:.2e} |")
    table = "\n".join(lines)
    device_name = torch.cuda.get_device_name(device) if cuda else "cpu (Triton interpreter)"
    print(f"bench_linear on {device_name}: B={B} T={T} C={C} d_in={d_in}; torch {torch.__version__}, "
          f"triton {triton.__version__}")
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    result = dict(benchmark="fused_linear", device=device_name, torch=torch.__version__, triton=triton.__version__,
                  dims=dict(B=B, T=T, C=C, d_in=d_in, M=M), peak_tflops=H100_BF16_PEAK_TFLOPS,
                  flops_formula="2*M*N*K", bytes_formula="es*(M*K + N*K + M*N + N [+ M*N residual] "
                  "[+ T*N row_add] [+ 2*K LN])", timing="do_bench median, warmup 25 ms, rep 100 ms" if cuda
                  else "interpreter, one repetition after one warm-up call", rows=rows, table=table)
    path = args.out / "bench_linear.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
