"""Validation mAP of a checkpoint through several backends/precisions, and whether their detections equal the
``reference`` backend's (bf16 within ±0.005 of fp32; ``triton`` fp32 == ``reference``).

    python bench/backend_accuracy.py --data DIR --ckpt best.safetensors --tious thumos \\
        --runs reference,torch:fp32,torch:bf16,triton:fp32,triton:fp16,triton:bf16 --device cuda --out result.json
    python bench/backend_accuracy.py --data DIR --ckpt best.safetensors --tious thumos \\
        --runs reference,onnxruntime:fp32,onnxruntime:fp16,onnxruntime:int8 --calibration TRAIN_DIR

``--data`` is a benchmark folder (``annotations.json`` + ``features/``, as ``gsmt-fast synth`` writes); the
validation split is detected with each ``backend:precision`` and evaluated at the THUMOS (0.3:0.1:0.7) or
ActivityNet (0.5:0.05:0.95) thresholds. Per run: average mAP, its difference to the first run (the reference), and
how many videos have exactly the reference's labels and segments (|Δ| ≤ 1e-6 s) and the largest score difference.
Runs that cannot be constructed here are reported as skipped with the reason. ``onnxruntime:int8`` is calibrated on
the training split of ``--calibration`` (a dataset folder from ``gsmt-fast synth``, seed 0: the data the
checkpoints were trained on).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

TIOUS = {"thumos": (0.3, 0.4, 0.5, 0.6, 0.7), "anet": tuple(round(0.5 + 0.05 * i, 2) for i in range(10))}


def load_validation(data_dir: Path):
    """The validation split of a benchmark folder (``annotations.json`` + ``features/``): (videos, features, ground
    truth), the videos' annotation records, their feature arrays in that order and the ActivityNet-style ground truth
    that ``gsmt_fast.evaluate`` takes."""
    from gsmt_fast.data.annotations import load_annotations
    from gsmt_fast.data.features import FeatureStore

    data_dir = Path(data_dir)
    annotations = load_annotations(data_dir / "annotations.json")
    store = FeatureStore(data_dir / "features")
    videos = annotations.subset("validation")
    features = [store.load(v.video_id) for v in videos]
    return videos, features, annotations.to_activitynet(subset="validation")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--ckpt", type=Path, required=True)
    p.add_argument("--tious", choices=sorted(TIOUS), required=True)
    p.add_argument("--runs", default="reference,torch:fp32,torch:bf16")
    p.add_argument("--device", default=None)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--calibration", type=Path, default=None,
                   help="dataset folder whose training split calibrates int8 runs (onnxruntime:int8); the calibrated "
                        "model goes to the export cache, where the backend finds it")
    args = p.parse_args(argv)

    import gsmt_fast
    from gsmt_fast.data.annotations import detect_kwargs
    from gsmt_fast.detector import results_to_json

    videos, feats, gt = load_validation(args.data)
    rows, first = [], None
    for spec in args.runs.split(","):
        backend, _, precision = spec.partition(":")
        try:
            if precision == "int8":
                from gsmt_fast.export import export_onnx

                export_onnx(args.ckpt, None, precision="int8", calibration=args.calibration)
            det = gsmt_fast.Detector(args.ckpt, backend=backend, device=args.device, precision=precision or None)
        except Exception as error:  # noqa: BLE001 - report and go on: the other runs still mean something
            rows.append({"run": spec, "skipped": f"{type(error).__name__}: {error}"})
            print(f"{spec}: skipped ({error})", flush=True)
            continue
        t0 = time.perf_counter()
        res = det.detect(feats, **detect_kwargs(videos))
        seconds = time.perf_counter() - t0
        ev = gsmt_fast.evaluate(gt, results_to_json(res), subset="validation", tiou_thresholds=TIOUS[args.tious])
        row = {"run": spec, "average_mAP": float(ev.average_mAP), "mAP": [float(m) for m in ev.mAP],
               "seconds": seconds, "videos": len(videos)}
        if first is None:
            first = (spec, res, row["average_mAP"])
        else:
            same = [len(a) == len(b) and np.array_equal(a.labels, b.labels)
                    and np.allclose(a.segments, b.segments, rtol=0, atol=1e-6) for a, b in zip(first[1], res)]
            diffs = [np.abs(a.scores - b.scores).max() for a, b, s in zip(first[1], res, same) if s and len(a)]
            row.update({"vs": first[0], "delta_mAP": row["average_mAP"] - first[2],
                        "videos_same_detections": int(sum(same)),
                        "max_score_diff_when_same": float(max(diffs)) if diffs else None})
        rows.append(row)
        extra = (f" (Δ {row['delta_mAP']:+.4f} vs {first[0]}; same detections on {row['videos_same_detections']}/"
                 f"{len(videos)} videos)") if "vs" in row else ""
        print(f"{spec}: average mAP {row['average_mAP']:.4f}{extra}, {seconds:.1f} s", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"ckpt": str(args.ckpt), "data": str(args.data), "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
