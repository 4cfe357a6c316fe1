"""Per-layer time of the CPU forward on ONNX Runtime (fp32 and int8), from ONNX Runtime's own profiler: where the
time of one batch goes, which bounds what a precision can gain end to end (docs/DEPLOYING.md, "int8 on AVX2").

    python bench/profile_cpu_forward.py --batch 64 --out bench/results/profile_cpu.json

Paper preset, T = 256, K = 20, d_in 2048, seeded random weights (as bench/run.py); int8 is calibrated on the same
random windows (its speed does not depend on the calibration). Each precision: one warm-up run, then ``--runs``
profiled runs; node times are summed per node and reported with their share of the forward, and grouped into the
model's layers by the weight each node reads (fused nodes: ONNX Runtime's optimized graph).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common  # noqa: E402
from run import random_model, write_checkpoint  # noqa: E402


def profile(path: Path, x, valid, runs: int, cfg) -> tuple[dict, dict]:
    """Microseconds per node of the optimized graph (summed over ``runs``) from ONNX Runtime's profiler, and each
    node's layer (:func:`layers_of`)."""
    import onnx
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        layer_of = layers_of(onnx.load(options.optimized_model_filepath), cfg)
        session.run(None, {"features": x, "valid_len": valid})
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.enable_profiling = True
        options.profile_file_prefix = str(Path(tmp) / "profile")
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        session.run(None, {"features": x, "valid_len": valid})  # warm-up (also profiled; subtracted below)
        first = Path(session.end_profiling())
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        for _ in range(runs):
            session.run(None, {"features": x, "valid_len": valid})
        events = json.loads(Path(session.end_profiling()).read_text())
        first.unlink()
    per_node = defaultdict(float)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per_node[(e["args"].get("op_name", "?"), e["name"][: -len("_kernel_time")])] += e["dur"]
    return per_node, layer_of


def layers_of(model, cfg) -> dict[str, str]:
    """Node name → model layer, by the shape of the weight the node reads (directly or through a
    DequantizeLinear); nodes without a weight (attention, norms, casts) are named by their operator."""
    c, cm, t, k, d = cfg.hidden_dim, cfg.mask_dim, cfg.temporal_scale, cfg.num_classes, cfg.input_dim
    by_shape = {(d, c): "input projection", (c, 3 * c): "QKV projection", (c, c): "attention out proj + MLP",
                (cm, c, 3): "mask conv 1 (k=3)", (cm, cm, 3): "mask conv 2 (k=3)", (t, cm, 1): "mask output conv",
                (k + 1, c, 1): "class head"}
    shapes = {i.name: tuple(i.dims) for i in model.graph.initializer}
    dequantized = {n.output[0]: n.input[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    out = {}
    for node in model.graph.node:
        for name in node.input:
            layer = by_shape.get(shapes.get(dequantized.get(name, name)))
            if layer:
                out[node.name] = layer
                break
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)


    from gsmt_fast import export

    env = common.environment("cpu")
    report = {"env": env, "batch": args.batch, "runs": args.runs, "precisions": {}}
    with tempfile.TemporaryDirectory() as tmp:
        model = random_model("paper", 256, 20, 2048, seed=0)
        ckpt = write_checkpoint(model, "window", Path(tmp))
        fp32 = export.export_onnx(ckpt, Path(tmp) / "fp32.onnx")
        rng = np.random.default_rng(1)
        x = rng.standard_normal((args.batch, 256, 2048), dtype=np.float32)
        valid = np.full(args.batch, 256, dtype=np.int64)
        int8 = export.quantize_int8(fp32, Path(tmp) / "int8.onnx", (x[:16], valid[:16]))
        for name, path in (("fp32", fp32), ("int8", int8)):
            nodes, layer_of = profile(path, x, valid, args.runs, model.cfg)
            total = sum(nodes.values())
            rows = sorted(nodes.items(), key=lambda kv: -kv[1])
            layers = defaultdict(float)
            for (op, node), us in nodes.items():
                layers[layer_of.get(node, f"other: {op}")] += us
            report["precisions"][name] = {
                "forward_ms_per_video": total / args.runs / args.batch / 1e3,
                "layers": {k: {"share": v / total, "ms_per_video": v / args.runs / args.batch / 1e3}
                           for k, v in sorted(layers.items(), key=lambda kv: -kv[1])},
                "top_nodes": [{"op": op, "node": node, "share": us / total} for (op, node), us in rows[:15]]}
    print(format_report(report))
    if args.out:
        from gsmt_fast.files import atomic_write_json

        atomic_write_json(args.out, report)
    return 0


def format_report(report) -> str:
    env = report["env"]
    lines = [f"## ONNX Runtime CPU forward profile — {env['device_name']}, {env['date']}, commit {env['commit']}, "
             f"batch {report['batch']}, load average {env['loadavg_1m']} (pid {os.getpid()})", ""]
    for name, r in report["precisions"].items():
        lines += [f"### {name}: {r['forward_ms_per_video']:.2f} ms per video (profiler node time)", "",
                  "| layer | share | ms/video |", "|---|---|---|"]
        lines += [f"| {k} | {v['share']:.1%} | {v['ms_per_video']:.3f} |" for k, v in r["layers"].items()]
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
