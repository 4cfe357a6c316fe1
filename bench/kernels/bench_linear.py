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

import sys

import _bench_common as common


def _add_arguments(parser) -> None:
    parser.add_argument("--batch", type=int, default=None, help="videos per batch (default 256 on cuda, 2 on cpu)")


def main(argv=None) -> int:
    args = common.parse_args(__doc__, "bench_linear.json", argv, default_out="bench/results/kernels",
                      add_arguments=_add_arguments)
    import torch

    linear = common.load_kernel("linear")
    fused_linear, fused_linear_naive = linear.fused_linear, linear.fused_linear_naive
    device = common.torch_device("bench_linear", args)
    cuda = device.type == "cuda"
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

    rows = []
    for name, K, N, extra in configs:
        x32 = randn(M, K)
        w32 = randn(N, K, scale=K**-0.5)
        b32 = randn(N, scale=0.1)
        kw32 = {k: (x32 if v == "x" else v) for k, v in extra.items()}
        with torch.no_grad():
            ref32 = fused_linear_naive(x32, w32, b32, **kw32)
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
                    return fused_linear_naive(x, w, b, compute_dtype=dtype, **kw)

                compiled = torch.compile(reference, dynamic=False) if impl == "torch.compile" else reference

                def fn(x=x, w=w, b=b, compiled=compiled):
                    return compiled(x, w, b)
            try:
                with torch.no_grad():
                    err = common.rel_rms(fn(), ref32)
                    ms = common.time_ms(fn, args)
            except Exception as exc:  # noqa: BLE001 - one failing implementation must not hide the others
                print(f"bench_linear: {name} {impl} {dtype} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
                rows.append(dict(config=name, M=M, K=K, N=N, impl=impl, dtype=common.dtype_name(dtype),
                                 error=f"{type(exc).__name__}: {exc}"[:500]))
                continue
            es = common.element_size(dtype)
            nbytes = es * (M * K + N * K + M * N + N)
            nbytes += es * M * N if "residual" in kw else 0
            nbytes += es * T * N if "row_add" in kw else 0
            nbytes += es * 2 * K if "ln_weight" in kw else 0
            tflops, gbps, frac_peak = common.rates(flops, nbytes, ms)
            rows.append(dict(config=name, M=M, K=K, N=N, impl=impl, dtype=common.dtype_name(dtype), ms=ms,
                             tflops=tflops, gbps=gbps, frac_peak=frac_peak, rel_rms_vs_fp32=err, flops=flops,
                             bytes=nbytes))
            del fn
        if cuda:
            torch.cuda.empty_cache()

    table_rows = []
    for r in rows:
        cells = [r["config"], r["M"], r["K"], r["N"], r["impl"], r["dtype"]]
        if "error" in r:
            table_rows.append(cells + [f"failed: {r['error'][:60]}", "", "", "", ""])
        else:
            table_rows.append(cells + [f"{r['ms']:.4f}", f"{r['tflops']:.1f}", f"{r['gbps']:.0f}",
                                       f"{100 * r['frac_peak']:.1f}%", f"{r['rel_rms_vs_fp32']:.2e}"])
    table = common.markdown_table(["config", "M", "K", "N", "impl", "dtype", "ms", "TFLOP/s", "GB/s", "of 790 TFLOP/s",
                            "rel RMS vs fp32"], table_rows)
    env = common.environment(device)
    device_name = env["device_name"] if cuda else "cpu (Triton interpreter)"
    print(f"bench_linear on {device_name}: B={B} T={T} C={C} d_in={d_in}; torch {env['torch']}, "
          f"triton {env['triton']}")
    print(table)
    common.write_report(args, "bench_linear.json", dict(
        benchmark="fused_linear", device=device_name, torch=env["torch"], triton=env["triton"],
        dims=dict(B=B, T=T, C=C, d_in=d_in, M=M), peak_tflops=common.H100_BF16_PEAK_TFLOPS, flops_formula="2*M*N*K",
        bytes_formula="es*(M*K + N*K + M*N + N [+ M*N residual] [+ T*N row_add] [+ 2*K LN])",
        timing=common.timing_note(args), environment=env, rows=rows, table=table))
    return 0


if __name__ == "__main__":
    sys.exit(main())
