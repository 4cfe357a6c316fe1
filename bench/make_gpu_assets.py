"""Build the data of ``bench/gpu_check.sh``'s ``accuracy`` step: the validation splits of the two synthetic
benchmarks and a checkpoint trained on each.

    python bench/make_gpu_assets.py                 # seconds: synthesizes the data, copies the shipped checkpoints
    python bench/make_gpu_assets.py --retrain       # ~8 min on 2 idle CPU cores: also retrains the checkpoints

For each synthetic split (thumos-like, anet-like): ``gsmt-fast synth`` (seed 0, default size); the validation
videos' features + the annotation files go to ``OUT/{thumos,anet}/`` and the checkpoint to
``OUT/{thumos,anet}.safetensors``. The checkpoints ship in ``bench/assets/`` (trained by ``--retrain`` with
``configs/synthetic_{thumos,anet}_paper.yaml`` on the same data: the paper model), so building the assets needs no
training: gpu_check.sh runs this script itself on the GPU machine when no ``.gpu_assets/`` came with the call.
``--retrain`` trains them anew (training needs kornia, which the GPU machine lacks: retrain on a development machine
and commit ``bench/assets/``). Existing outputs are kept unless ``--force``.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "bench" / "assets"
# The shipped assets are the paper model (mask candidates): the configs they were trained with.
SPLITS = {"thumos": ("thumos-like", "configs/synthetic_thumos_paper.yaml"),
          "anet": ("anet-like", "configs/synthetic_anet_paper.yaml")}


def build(name: str, out: Path, work: Path, retrain: bool) -> None:
    from gsmt_fast.data.annotations import load_annotations
    from gsmt_fast.data.features import FeatureStore, canonical_video_id

    profile, config = SPLITS[name]
    data, run = work / f"{name}_data", work / f"{name}_run"
    cli = [sys.executable, "-m", "gsmt_fast.cli"]
    subprocess.run(cli + ["synth", "--profile", profile, "--out", str(data), "--quiet"], check=True)
    if retrain:
        subprocess.run(cli + ["train", "--config", str(REPO / config), "--data", str(data), "--out", str(run)],
                       check=True)
        SHIPPED.mkdir(parents=True, exist_ok=True)
        shutil.copy(run / "best.safetensors", SHIPPED / f"{name}.safetensors")
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
    shutil.copy(SHIPPED / f"{name}.safetensors", out / f"{name}.safetensors")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=REPO / ".gpu_assets")
    p.add_argument("--force", action="store_true", help="rebuild splits whose outputs exist")
    p.add_argument("--retrain", action="store_true", help="train the checkpoints anew (into bench/assets/)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        for name in SPLITS:
            if (args.out / f"{name}.safetensors").exists() and not (args.force or args.retrain):
                print(f"{name}: kept ({args.out / name})")
                continue
            if not args.retrain and not (SHIPPED / f"{name}.safetensors").exists():
                p.error(f"{SHIPPED / name}.safetensors is missing: run with --retrain")
            build(name, args.out, Path(tmp), args.retrain)
            print(f"{name}: built in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
