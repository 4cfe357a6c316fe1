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

import sys

import _bench_common as common


def main(argv=None) -> int:
    args = common.parse_args(__doc__, "bench_class_head.json", argv)
    import torch
    import torch.nn.functional as F

    class_head = common.load_kernel("class_head")
    device = common.torch_device("bench_class_head", args)
    use_cuda = device.type == "cuda"

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
        ms = common.time_ms(fn, args)
        num_classes = num_foreground + 1
        es = common.element_size(dtype)
        flops = 2 * batch * length * channels * num_classes
        nbytes = (batch * length * channels * es + num_classes * channels * es
                  + 4 * batch * num_classes * length + 3 * 4 * batch * length + 4 * batch * top_snippets)
        tflops, gbps, peak_fraction = common.rates(flops, nbytes, ms)
        rows.append({
            "impl": name, "dtype": common.dtype_name(dtype), "B": batch, "T": length, "C": channels,
            "K": num_foreground, "M1": top_snippets, "ms": ms, "tflops": tflops, "gbps": gbps,
            "peak_fraction": peak_fraction,
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

    print(f"class head: B={batch}, T={length}, C={channels}, M1={top_snippets} on {args.device}")
    print()
    print(common.markdown_table(
        ["impl", "dtype", "K", "ms", "TFLOP/s", "GB/s", "% of 790 TFLOP/s"],
        [[row["impl"], row["dtype"], row["K"], f"{row['ms']:.4f}", f"{row['tflops']:.2f}", f"{row['gbps']:.0f}",
          f"{100 * row['peak_fraction']:.2f}"] for row in rows]))
    common.write_report(args, "bench_class_head.json", {
        "op": "class_head",
        "flops_formula": "2 * B * T * C * (K+1)",
        "bytes_formula": "B*T*C*s + (K+1)*C*s + 4*B*(K+1)*T + 12*B*T + 4*B*M1 (s = element size of e)",
        "peak_tflops": common.H100_BF16_PEAK_TFLOPS,
        "timing": common.timing_note(args),
        "environment": common.environment(device),
        "rows": rows,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
