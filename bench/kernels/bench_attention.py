"""Benchmark of the flash attention kernel (kernels/attention.py) against PyTorch's attention.

    python bench/kernels/bench_attention.py --device cuda --out DIR     # H100: paper dims, do_bench
    python bench/kernels/bench_attention.py --device cpu --out DIR      # interpreter smoke test, tiny shapes

Rows (GPU), per shape (B=256, T=256 and B=64, T=1024; C=512, 4 heads, D=128):
- triton bf16 / triton fp32: ``flash_attention`` on the fused (B, T, 3C) QKV tensor, no valid_len;
- torch eager bf16: the reference (reshape + ``F.scaled_dot_product_attention`` + transpose back) in bf16; with no
  mask PyTorch picks its FlashAttention-2/cuDNN kernel on an H100;
- torch.compile bf16: ``torch.compile`` of that reference;
- at T=256 also a padded batch (valid lengths uniform in [T/2, T]): the kernel skips the padded key blocks; eager
  PyTorch gets the boolean mask as the model passes it (no FlashAttention with a mask: efficient attention/cuDNN).

Counting (stated once, used for every row):
- FLOPs = 4 * B * heads * T * T * D (QK^T and PV, 2 FLOPs per multiply-add; softmax not counted; the padded row
  counts the full T x T, so its TFLOP/s is "dense-equivalent").
- bytes = 4 * B * T * C * element size (read q, k, v once, write the output once: the minimal traffic; eager PyTorch
  moves more, so its GB/s is algorithmic, not measured).
- peak: 790 TFLOP/s, the measured H100 dense bf16 matrix-product peak.

Timing: ``triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")`` on the GPU; one timed call after
one warm-up with ``time.perf_counter`` on the CPU (interpreter: the numbers only show the script runs).
Output: a markdown table on stdout and ``DIR/bench_attention.json``.
"""

from __future__ import annotations

import functools
import sys

import _bench_common as common


def main(argv=None) -> int:
    args = common.parse_args(__doc__, "bench_attention.json", argv)
    import torch

    attention = common.load_kernel("attention")
    device = common.torch_device("bench_attention", args)
    use_cuda = device.type == "cuda"

    if use_cuda:
        hidden_dim, num_heads = 512, 4
        shapes = [(256, 256), (64, 1024)]  # (B, T)
        kernel_dtypes = [torch.bfloat16, torch.float32]
        torch_dtype = torch.bfloat16
    else:
        hidden_dim, num_heads = 32, 2
        shapes = [(2, 64)]
        kernel_dtypes = [torch.float32, torch.float16]  # bf16 tl.dot is broken under the interpreter
        torch_dtype = torch.float32
    head_dim = hidden_dim // num_heads

    rows = []

    def record(name: str, dtype: torch.dtype, batch: int, seq_len: int, padded: bool, fn) -> None:
        ms = common.time_ms(fn, args)
        flops = 4 * batch * num_heads * seq_len * seq_len * head_dim
        nbytes = 4 * batch * seq_len * hidden_dim * common.element_size(dtype)
        tflops, gbps, peak_fraction = common.rates(flops, nbytes, ms)
        rows.append({
            "impl": name, "dtype": common.dtype_name(dtype), "B": batch, "T": seq_len, "C": hidden_dim,
            "heads": num_heads, "D": head_dim, "padded": padded, "ms": ms, "tflops": tflops,
            "gbps": gbps, "peak_fraction": peak_fraction,
        })
        print(f"  {name:>18} {rows[-1]['dtype']:>8} B={batch} T={seq_len} padded={padded}: {ms:.3f} ms", flush=True)

    generator = torch.Generator().manual_seed(0)
    for batch, seq_len in shapes:
        qkv32 = torch.randn(batch, seq_len, 3 * hidden_dim, generator=generator).to(device)
        qkv_torch = qkv32.to(torch_dtype)

        for dtype in kernel_dtypes:
            qkv = qkv32.to(dtype)
            out = torch.empty(batch, seq_len, hidden_dim, dtype=dtype, device=device)
            record("triton", dtype, batch, seq_len, False,
                   lambda qkv=qkv, out=out: attention.flash_attention(qkv, num_heads, out=out))

        def eager(qkv=qkv_torch, valid_len=None):
            return attention.flash_attention_naive(qkv, num_heads, valid_len, compute_dtype=torch_dtype)

        record("torch eager", torch_dtype, batch, seq_len, False, eager)
        if use_cuda and not args.no_compile:
            compiled = torch.compile(eager, dynamic=False)
            record("torch.compile", torch_dtype, batch, seq_len, False, compiled)

        if seq_len == shapes[0][1]:
            valid_len = torch.randint(seq_len // 2, seq_len + 1, (batch,), generator=generator).to(device)
            qkv = qkv32.to(kernel_dtypes[0])
            out = torch.empty(batch, seq_len, hidden_dim, dtype=kernel_dtypes[0], device=device)
            padded_kernel = functools.partial(attention.flash_attention, qkv, num_heads, valid_len, out=out)
            record("triton", kernel_dtypes[0], batch, seq_len, True, padded_kernel)
            record("torch eager", torch_dtype, batch, seq_len, True, functools.partial(eager, valid_len=valid_len))

    peak_note = "fraction of 790 TFLOP/s (H100 bf16)" if use_cuda else "fraction of 790 TFLOP/s (meaningless on CPU)"
    print()
    print(common.markdown_table(
        ["impl", "dtype", "B", "T", "C", "heads", "padded", "ms", "TFLOP/s", "GB/s", peak_note],
        [[r["impl"], r["dtype"], r["B"], r["T"], r["C"], r["heads"], "yes" if r["padded"] else "no", f"{r['ms']:.3f}",
          f"{r['tflops']:.2f}", f"{r['gbps']:.1f}", f"{r['peak_fraction']:.3f}"] for r in rows]))
    print()
    common.write_report(args, "bench_attention.json", {
        "benchmark": "flash_attention",
        "flops_formula": "4 * B * heads * T * T * D",
        "bytes_formula": "4 * B * T * C * element_size",
        "peak_tflops": common.H100_BF16_PEAK_TFLOPS,
        "environment": common.environment(device),
        "rows": rows,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
