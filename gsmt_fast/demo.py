"""``gsmt-fast demo`` (what ``make demo`` runs): synthesize the thumos-like benchmark, train the demo config,
detect on the validation split, evaluate, print the mAP table and the detection speed, write the results JSON and
one timeline PNG."""

from __future__ import annotations

import time
from pathlib import Path


def config_path(name: str) -> Path:
    """A shipped config: ``gsmt_fast/configs`` in a wheel, ``configs/`` in a source checkout."""
    here = Path(__file__).resolve().parent
    for folder in (here / "configs", here.parent / "configs"):
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(f"shipped config {name} not found next to {here}")


def run_demo(out: str | Path = "demo_out", seed: int = 0, quiet: bool = False) -> dict:
    import torch

    from .data.annotations import detect_kwargs, load_annotations
    from .data.dataset import load_dataset_spec
    from .data.features import FeatureStore
    from .data.synthetic import generate
    from .detector import Detector, results_to_json
    from .evaluation import evaluate, parse_thresholds
    from .plot import plot_timeline
    from .results import write_results
    from .train import load_config, train

    out = Path(out)
    t_start = time.perf_counter()
    data_root = out / "data"
    if not (data_root / "dataset.json").is_file():
        print(f"[1/4] synthesizing the thumos-like benchmark (seed {seed}) -> {data_root}")
        generate("thumos-like", data_root, seed=seed, progress=not quiet)
    else:
        print(f"[1/4] reusing the benchmark in {data_root}")
    demo_config = config_path("demo.yaml")
    cfg = load_config(demo_config)
    cfg["seed"] = seed
    print(f"[2/4] training ({cfg['train']['epochs']} epochs, config {demo_config.name}) -> {out / 'train'}")
    train(cfg, out / "train", data_root=data_root, progress=not quiet)

    print("[3/4] detecting on the validation split with the best checkpoint")
    spec = load_dataset_spec(cfg["data"], data_root)
    aset = load_annotations(spec.annotations)
    store = FeatureStore(spec.features)
    videos = aset.subset(spec.val_split)
    feats = [store.load(v.video_id) for v in videos]
    det = Detector(out / "train" / "best.safetensors")
    det.detect(feats[:2], **detect_kwargs(videos[:2]))  # warm-up
    t0 = time.perf_counter()
    results = det.detect(feats, **detect_kwargs(videos))
    elapsed = time.perf_counter() - t0
    payload = results_to_json(results)
    write_results(out / "results.json", payload["results"])

    print("[4/4] evaluating")
    thresholds = parse_thresholds(cfg["eval"]["tiou_thresholds"])
    r = evaluate(aset.to_activitynet(subset=spec.val_split), payload, tiou_thresholds=thresholds,
                 subset=spec.val_split)
    print(r.format_table())
    n_snip = sum(len(f) for f in feats)
    precision = getattr(det.backend, "precision", "fp32")
    print(f"detection speed ({det.backend.name} backend, {precision}, {torch.get_num_threads()} threads): "
          f"{len(videos) / elapsed:.1f} videos/s, {n_snip / elapsed:.0f} snippets/s, "
          f"{1000 * elapsed / len(videos):.1f} ms/video")
    best = max(results, key=lambda res: len(aset.videos[res.video_id].labels))
    png = plot_timeline(payload, aset, best.video_id, out / f"timeline_{best.video_id}.png")
    print(f"wrote {out / 'results.json'} and {png} ({time.perf_counter() - t_start:.0f} s in all)")
    return {"average_mAP": float(r.average_mAP), "videos_per_s": len(videos) / elapsed}
