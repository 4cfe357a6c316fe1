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

import sys
import time

import _bench_common as common

GPU_DIMS = dict(batch=256, length=256, c_in=512, c_m=256, n_cols=50)
CPU_DIMS = dict(batch=2, length=32, c_in=32, c_m=32, n_cols=5)


def main(argv=None) -> int:
    args = common.parse_args(__doc__, "bench_mask_head.json", argv, default_out="bench/results")
    import torch
    import torch.nn.functional as F

    device = common.torch_device("bench_mask_head", args)
    kernel = common.load_kernel("mask_head")
    dims = GPU_DIMS if args.device == "cuda" else CPU_DIMS
    batch, length, c_in, c_m, n_cols = (dims[k] for k in ("batch", "length", "c_in", "c_m", "n_cols"))

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
                row["ms"] = common.time_ms(fn, args)  # the first call (compile / JIT) is not timed
                if args.device == "cuda" and name == "triton":
                    row["ms_cuda_graph"] = time_cuda_graph(fn, args)
            except Exception as error:  # noqa: BLE001 - a row that cannot run is reported, not fatal
                row["error"] = f"{type(error).__name__}: {error}"[:300]
            row["wall_s"] = round(time.perf_counter() - started, 2)
            if "ms" in row:
                row["tflops"], row["gbps"], row["peak_fraction"] = common.rates(flops, bytes_written, row["ms"])
            rows.append(row)

        # Sanity: the timed kernel agrees with eager (a broken build would show here, not only in the tests). The fp32
        # reference must not be TF32 (cuDNN's default for fp32 convolutions).
        tf32_allowed = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = False
        reference = eager(e32, *weights32).float()
        torch.backends.cudnn.allow_tf32 = tf32_allowed
        agreement = {
            f"triton_{lowp_name}_vs_fp32_rel_rms": common.rel_rms(kernel.mask_head(e16, *weights16), reference),
            f"eager_{lowp_name}_vs_fp32_rel_rms": common.rel_rms(eager(e16, *weights16), reference),
            "triton_fp32_vs_fp32_rel_rms": common.rel_rms(kernel.mask_head(e32, *weights32), reference),
        }

    env = common.environment(device)
    result = dict(
        op="mask_head", device=env["device_name"], torch=env["torch"], triton=env["triton"],
        interpreter=env["triton_interpret"], dims=dims,
        flop_formula_full="2*B*T*(3*C*Cm + 3*Cm*Cm + Cm*T)",
        flop_formula_columns="2*B*(T*(3*C*Cm + 3*Cm*Cm) + M*Cm*T)",
        bytes_formula="mask bytes written: B*T*N*bytes(out), N = T or M",
        peak_tflops=common.H100_BF16_PEAK_TFLOPS, timing=common.timing_note(args), environment=env, rows=rows,
        agreement=agreement,
    )
    print(f"mask head, {env['device_name']}, B={batch} T={length} C={c_in} Cm={c_m} M={n_cols}, "
          f"torch {env['torch']}, triton {env['triton']}")
    table_rows = []
    for row in rows:
        cells = [row["impl"], row["dtype"], row["variant"]]
        if "ms" in row:
            graph_ms = row.get("ms_cuda_graph")
            table_rows.append(cells + [f"{row['ms']:.4g}", f"{row['tflops']:.4g}", f"{row['gbps']:.4g}",
                                       f"{100 * row['peak_fraction']:.3g}",
                                       "" if graph_ms is None else format(graph_ms, ".4g")])
        else:
            table_rows.append(cells + [f"failed: {row['error']}", "", "", "", ""])
    print(common.markdown_table(["impl", "dtype", "variant", "ms", "TFLOP/s", "GB/s (masks)", "% of 790 TFLOP/s",
                          "ms (CUDA graph)"], table_rows, align="lllrrrrr"))
    print("agreement (rel RMS vs fp32 eager):", {k: f"{v:.2e}" for k, v in agreement.items()})
    common.write_report(args, "bench_mask_head.json", result)
    return 0 if all("ms" in row for row in rows) else 1


def time_cuda_graph(fn, args):
    """Median ms of one replay of ``fn`` captured in a CUDA graph: the GPU's time without the wrapper's host work
    (validation, weight repacking and three Triton launches cost ~0.2 ms of CPU per call, as much as the GPU work at
    B=256). None when the capture fails."""
    import torch

    try:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
        return common.time_ms(graph.replay, args)
    except Exception as error:  # noqa: BLE001 - the eager timing stands without it
        print(f"CUDA graph capture failed: {type(error).__name__}: {error}", file=sys.stderr)
        return None


if __name__ == "__main__":
    sys.exit(main())
