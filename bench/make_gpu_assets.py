"""Build ``.gpu_assets/``: what ``bench/gpu_check.sh``'s ``accuracy`` step reads on the GPU machine.

    python bench/make_gpu_assets.py            # ~7 min on 2 CPU cores (two trainings)

For each synthetic split (thumos-like with ``configs/synthetic_thumos.yaml``, anet-like with
``configs/synthetic_anet.yaml``): ``gsmt-fast synth`` (seed 0, default size), ``gsmt-fast train``, then the
validation videos' features + the annotation files go to ``.gpu_assets/{thumos,anet}/`` and the best checkpoint to
``.gpu_assets/{thumos,anet}.safetensors`` (~14 MB in all: small enough to travel with the device tool's ``carry``).
The folder is git-ignored (add ``/.gpu_assets/`` to ``.git/info/exclude`` if it is not). Existing assets are kept
unless ``--force``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SPLITS = {"thumos": ("thumos-like", "configs/synthetic_thumos.yaml"),
          "anet": ("anet-like", "configs/synthetic_anet.yaml")}


def build(name: str, out: Path, work: Path) -> None:
    from gsmt_fast.data.annotations import load_annotations
    from gsmt_fast.data.features import FeatureStore, canonical_video_id

    profile, config = SPLITS[name]
    data, run = work / f"{name}_data", work / f"{name}_run"
    cli = [sys.executable, "-m", "gsmt_fast.cli"]
    subprocess.run(cli + ["synth", "--profile", profile, "--out", str(data)], check=True)
    subprocess.run(cli + ["train", "--config", str(REPO / config), "--data", str(data), "--out", str(run)], check=True)
    dest = out / name
    (dest / "features").mkdir(parents=True, exist_ok=True)
    for f in ("annotations.json", "dataset.json"):
        if (data / f).exists():
            shutil.copy(data / f, dest / f)
    store = FeatureStore(data / "features")
    (root,) = store.roots  # synth writes one folder of per-video files
    for video in load_annotations(data / "annotations.json").subset("validation"):
        src = Path(root.describe(canonical_video_id(video.video_id)))
        shutil.copy(src, dest / "features" / src.name)
    shutil.copy(run / "best.safetensors", out / f"{name}.safetensors")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=REPO / ".gpu_assets")
    p.add_argument("--force", action="store_true", help="rebuild splits whose assets exist")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        for name in SPLITS:
            if (args.out / f"{name}.safetensors").exists() and not args.force:
                print(f"{name}: kept ({args.out / name})")
                continue
            build(name, args.out, Path(tmp))
            print(f"{name}: built in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
