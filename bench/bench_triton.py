"""End-to-end ``triton`` backend on the GPU: features resident on the device → final detections

    python bench/bench_triton.py --out DIR                 # H100: paper preset, K 20, T 256, batches 1 … 1024
    python bench/bench_triton.py --device cpu --quick      # smoke run under TRITON_INTERPRET=1 (tiny model)

Per precision (fp16, bf16, fp32) and batch size: ``TritonBackend.detect_windows`` on a ``(B, T, d_in)`` float32
tensor already on the GPU — one CUDA-graph replay (forward kernels + CUDA post-processing) per chunk of ≤ 1024
windows, the status check, results left on the device (``to_host=False``) — timed call by call with a device
synchronisation: videos/s from the median, latency p50/p99. Batch 1 is also timed with the detections copied to
host memory (``to_host=True``), which is what a caller of ``Detector.detect`` waits for. The ``reference`` backend
(eager fp32 model on the same GPU + NumPy post-processing) runs in the same process on one batch, for the speed-up.
Also: whether the fp32 ``triton`` detections equal ``reference``'s on that batch (same labels and segments).

The model is the paper preset with seeded random weights and the classifier scaled like ``bench/run.py`` so that a
window yields a trained model's number of candidates. Writes ``DIR/bench_triton.json`` and a markdown table.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
from pathlib import Path

import numpy as np

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="cpu: interpreter smoke run")
    p.add_argument("--quick", action="store_true", help="tiny model and batches (what --device cpu implies)")
    p.add_argument("--batches", default="1,16,64,256,1024")
    p.add_argument("--precisions", default="fp16,bf16,fp32")
    p.add_argument("--reference-batch", type=int, default=64, help="windows timed with the reference backend")
    p.add_argument("--seconds", type=float, default=1.5, help="timing budget per point")
    p.add_argument("--out", type=Path, default=None, help="folder for bench_triton.json")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.device == "cpu":
        os.environ.setdefault("TRITON_INTERPRET", "1")
        args.quick = True
    import torch
    from common import Timing, measure, summarize
    from run import CLS_HEAD_SCALE

    import gsmt_fast
    from gsmt_fast.backends.reference import ReferenceBackend
    from gsmt_fast.backends.triton_backend import TritonBackend

    if args.quick:
        t, d, batches, precisions = 16, 32, [1, 3], ["fp32"]
        cfg = gsmt_fast.GSMTConfig.preset("tiny", num_classes=4, temporal_scale=t, input_dim=d)
        args.reference_batch = min(args.reference_batch, 3)
    else:
        t, d = 256, 2048
        batches = [int(b) for b in args.batches.split(",")]
        precisions = args.precisions.split(",")
        cfg = gsmt_fast.GSMTConfig.preset("paper", num_classes=20, temporal_scale=t, input_dim=d)
    torch.manual_seed(0)
    model = gsmt_fast.GSMT(cfg).eval()
    with torch.no_grad():
        model.cls_head.weight.mul_(CLS_HEAD_SCALE)
    inference = gsmt_fast.InferenceConfig(mode="short", nms_sigma=0.4)
    device = torch.device(args.device)
    gpu = device.type == "cuda"

    gen = torch.Generator(device="cpu").manual_seed(1)
    x_all = torch.randn((max(batches + [args.reference_batch]), t, d), generator=gen).to(device)

    def inputs(b):
        return (x_all[:b], torch.full((b,), t, dtype=torch.int32, device=device),
                torch.full((b,), 4.0 / 30.0, dtype=torch.float64, device=device),
                torch.zeros(b, dtype=torch.float64, device=device))

    def timed(fn, budget_s):  # the harness's timing (bench/common.py): one warm-up, >= 3 calls filling budget_s
        stats = summarize(measure(fn, device, Timing(warmup=1, min_reps=3, max_reps=200, target_s=budget_s)))
        return {**stats, "p50_ms": 1e3 * stats["p50_s"], "p99_ms": 1e3 * stats["p99_s"]}

    rows = []
    # The reference backend once, on reference_batch windows: eager fp32 model + NumPy post-processing.
    rb = args.reference_batch
    ref = ReferenceBackend(model, device=device)
    x, valid, scale, offset = inputs(rb)
    xr = x.cpu().numpy()

    def run_reference():
        probs, masks = ref.forward(xr, valid.cpu().numpy())
        return ref.window_detections(probs, masks, valid.cpu().numpy(), scale.cpu().numpy(), offset.cpu().numpy(),
                                     inference)

    ref_time = timed(run_reference, 0.0)
    ref_out = run_reference()
    ref_vps = rb / ref_time["median_s"]
    rows.append({"backend": "reference", "precision": "fp32", "batch": rb, "videos_per_s": ref_vps,
                 "p50_ms": ref_time["p50_ms"], "p99_ms": ref_time["p99_ms"]})
    print(f"reference fp32 batch {rb}: {ref_vps:.1f} videos/s", flush=True)

    same = None
    for precision in precisions:
        backend = TritonBackend(model, device=device, precision=precision)
        if precision == "fp32":  # correctness on this input: the same detections as the reference
            out = backend.detect_windows(x, valid, scale, offset, inference).as_list()
            same = sum(len(a[0]) == len(b[0]) and np.array_equal(a[2], b[2]) and np.allclose(a[0], b[0], atol=1e-6)
                       for a, b in zip(out, ref_out))
            print(f"triton fp32 == reference on {same}/{rb} windows", flush=True)
        for b in batches:
            batch_inputs = inputs(b)

            def call(to_host, args_b=batch_inputs, backend=backend):
                return backend.detect_windows(*args_b, inference, to_host=to_host)

            stats = timed(lambda: call(False), args.seconds)
            row = {"backend": "triton", "precision": precision, "batch": b, "videos_per_s": b / stats["median_s"],
                   "p50_ms": stats["p50_ms"], "p99_ms": stats["p99_ms"], "n": stats["n"]}
            if b == 1:
                host = timed(lambda: call(True), args.seconds)
                row["p50_ms_to_host"], row["p99_ms_to_host"] = host["p50_ms"], host["p99_ms"]
                if gpu:  # where batch-1 latency goes (each part timed alone, with a synchronisation)
                    row["latency_breakdown_ms"] = latency_breakdown(backend, batch_inputs, inference, timed,
                                                                    args.seconds)
                    print("  batch-1 breakdown (ms, p50):", row["latency_breakdown_ms"], flush=True)
            row["speedup_vs_reference"] = row["videos_per_s"] / ref_vps
            rows.append(row)
            print(f"triton {precision} batch {b}: {row['videos_per_s']:.0f} videos/s, p50 {row['p50_ms']:.3f} ms "
                  f"({row['speedup_vs_reference']:.0f}x reference)", flush=True)
        del backend
        if gpu:
            torch.cuda.empty_cache()

    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": torch.cuda.get_device_name(0) if gpu else "cpu (TRITON_INTERPRET=1)",
        "torch": torch.__version__, "triton": __import__("triton").__version__,
        "model": {"preset": "tiny" if args.quick else "paper", "T": t, "d_in": d, "K": cfg.num_classes},
        "fp32_same_detections_as_reference": f"{same}/{rb}" if same is not None else None,
        "rows": rows,
    }
    print("\n| backend | precision | batch | videos/s | p50 ms | p99 ms | p50 ms to host | x reference |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        host = f"{r['p50_ms_to_host']:.3f}" if "p50_ms_to_host" in r else ""
        print(f"| {r['backend']} | {r['precision']} | {r['batch']} | {r['videos_per_s']:,.0f} | {r['p50_ms']:.3f} | "
              f"{r['p99_ms']:.3f} | {host} | {r.get('speedup_vs_reference', 1.0):.1f} |")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "bench_triton.json").write_text(json.dumps(report, indent=2))
    return 0


def latency_breakdown(backend, batch_inputs, inference, timed, seconds) -> dict:
    """p50 ms of the parts of a batch-1 ``detect_windows``: the captured graph alone (GPU time of forward kernels +
    post-processing kernel), the forward kernels launched eagerly, the CUDA post-processing op alone (check=False),
    and the host side (status check + copies) as the rest of the whole call."""
    from gsmt_fast.postprocess import native

    x, valid, scale, offset = batch_inputs
    bucket = backend.graph_bucket(1, inference)
    probs, masks = backend.forward_device(x, valid)
    parts = {
        "graph_replay": timed(bucket.graph.replay, seconds)["p50_ms"],
        "forward_eager": timed(lambda: backend.forward_device(x, valid), seconds)["p50_ms"],
        "postprocess_op": timed(lambda: native.window_detections_batch(probs, masks, valid, scale, offset, inference,
                                                                       check=False), seconds)["p50_ms"],
        "detect_windows": timed(lambda: backend.detect_windows(x, valid, scale, offset, inference, to_host=False),
                                seconds)["p50_ms"],
    }
    parts["host_side"] = parts["detect_windows"] - parts["graph_replay"]
    return {k: round(v, 4) for k, v in parts.items()}


if __name__ == "__main__":
    sys.exit(main())
