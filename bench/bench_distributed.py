"""Scale-out timing: sharded detection and DDP training with 1 vs N ranks under torchrun (docs/SCALING.md).

Detection: a thumos-like synthetic archive (``--videos`` videos, window mode, T = 256) and a randomly initialised
model of ``configs/synthetic_thumos_paper.yaml`` (throughput does not depend on training; random masks are noisy, a
worst case for run extraction). Timed runs, each on a fresh parts folder:

- ``plain``: ``gsmt-fast detect`` in one process, all videos in one ``detect`` call (no chunks, no part files);
- ``torchrun xN``: ``torchrun --standalone --nproc-per-node N -m gsmt_fast.cli detect`` (chunks, part files, merge).

For each: the wall time of the command (process start-up, imports, checkpoint hashing, planning, detection, merge),
the time in ``detect`` calls (torchrun: with the loading of the features; the slowest rank) → videos/s, and for
torchrun the slowest rank's whole sharded run (planning, part files, merge). The N-rank merged JSON is checked to be
identical to the 1-rank one. Training: ``gsmt-fast train`` on a thumos-like training split with the shipped config
(``small`` preset), one process vs torchrun with N ranks; the second epoch's ``train_seconds`` from ``metrics.json``
(the first includes warm-up; validation is excluded).

torchrun gives each of N > 1 ranks one intra-op thread (OMP_NUM_THREADS=1); a single process uses all cores, and is
also timed with one thread, so that the rank count and the thread count are not confused (on a shared, loaded
machine two OpenMP threads can be several times slower than one). The rows, with the CPU model and ISA, date,
commit and load, are printed and appended to ``--results-md`` when given.

    python bench/bench_distributed.py                      # CPU: detection 1 vs 2 ranks, training 1 vs 2 ranks
    python bench/bench_distributed.py --device cuda --ranks 1 --no-train --backend torch --chunk-size 128  # 1 GPU
    python bench/bench_distributed.py --device cuda --ranks 1,8 --no-train --videos 4096    # 8 GPUs on one node
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

from common import cpu_isa, cpu_model, environment, markdown_table  # noqa: E402

RANK_LINE = re.compile(r"rank (\d+)/(\d+): detected \d+ chunks \((\d+) videos\) in ([0-9.]+) s \(([0-9.]+) s loading")
PLAIN_LINE = re.compile(r"(\d+) videos, \d+ detections in ([0-9.]+) s")


def run(cmd: list[str], threads: int | None = None, timeout: float = 900) -> tuple[float, str]:
    """Run ``cmd`` (with OMP_NUM_THREADS=threads when given); (wall seconds, output)."""
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, cwd=REPO)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
    return wall, r.stdout + r.stderr


def torchrun(ranks: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(ranks)]


def make_assets(work: Path, videos: int, train_videos: int, seed: int) -> dict:
    import torch

    from gsmt_fast import save_checkpoint
    from gsmt_fast.config import GridConfig
    from gsmt_fast.data.synthetic import generate
    from gsmt_fast.model import GSMT
    from gsmt_fast.train import build_model_config, load_config

    archive = work / "archive"
    generate("thumos-like", archive, seed=seed, num_videos=videos, progress=False)
    meta = json.loads((archive / "dataset.json").read_text())
    cfg = load_config(REPO / "configs" / "synthetic_thumos_paper.yaml")
    torch.manual_seed(seed)
    model = GSMT(build_model_config(cfg, len(meta["classes"]), meta["feature_dim"], meta["temporal_scale"]))
    ckpt = save_checkpoint(model, work / "random.safetensors", class_names=meta["classes"],
                           inference=cfg["inference"], grid=GridConfig.from_dict(meta["grid"]),
                           input_mode=meta["input_mode"])
    train_data = work / "train_data"
    if train_videos:
        generate("thumos-like", train_data, seed=seed + 1, num_videos=train_videos, progress=False)
    return {"archive": archive, "ckpt": ckpt, "train_data": train_data}


def bench_detection(assets: dict, ranks_list: list[int], args, work: Path) -> list[dict]:
    base = ["-m", "gsmt_fast.cli", "detect", "--ckpt", str(assets["ckpt"]), "--features",
            str(assets["archive"] / "features"), "--annotations", str(assets["archive"] / "annotations.json"),
            "--quiet", "--backend", args.backend]
    if args.precision:
        base += ["--precision", args.precision]
    if args.device:
        base += ["--device", args.device] if args.device != "cuda" else []
    rows, merged = [], {}
    configs = [(f"torchrun x{n}", n, None) for n in ranks_list]
    if 1 in ranks_list and any(n > 1 for n in ranks_list):  # the same per-process threads as the N-rank run
        configs.insert(ranks_list.index(1) + 1, ("torchrun x1", 1, 1))
    if args.plain:
        configs = [("plain", None, None), ("plain", None, 1)] + configs
    for rep in range(args.reps):
        for name, n, threads in configs:
            out = work / f"det_{name.replace(' ', '_')}_{threads}_{rep}.json"
            extra = [] if n is None or args.chunk_size is None else ["--chunk-size", str(args.chunk_size)]
            cmd = ([sys.executable] if n is None else torchrun(n)) + base + ["--out", str(out)] + extra
            wall, text = run(cmd, threads)
            if n is None:
                m = PLAIN_LINE.search(text)
                videos, detect_s, run_s = int(m.group(1)), float(m.group(2)), None
            else:
                ranks = [(int(v), float(s), float(d)) for _, _, v, s, d in RANK_LINE.findall(text)]
                if len(ranks) != n:
                    raise RuntimeError(f"expected {n} rank lines, got {ranks}:\n{text[-2000:]}")
                videos = sum(v for v, _, _ in ranks)
                run_s, detect_s = max(s for _, s, _ in ranks), max(d for _, _, d in ranks)
                merged.setdefault(n, out.read_bytes())
            threads = "1" if threads == 1 else ("1 per rank" if n and n > 1 else "all")
            rows.append({"what": "detect", "run": name, "rep": rep + 1, "threads": threads, "videos": videos,
                         "detect_s": detect_s, "videos_per_s": videos / detect_s, "run_s": run_s, "wall_s": wall,
                         "videos_per_s_wall": videos / wall})
            print(f"detect {name} ({threads} threads) rep {rep + 1}: {videos} videos, detection {detect_s:.2f} s "
                  f"({videos / detect_s:.1f} videos/s), command {wall:.1f} s", flush=True)
    if len(merged) > 1:
        first = next(iter(merged.values()))
        identical = all(v == first for v in merged.values())
        print(f"merged JSON identical across rank counts {sorted(merged)}: {identical}")
        for row in rows:
            row["identical_json"] = identical if row["run"] != "plain" else None
    return rows


def bench_training(assets: dict, ranks_list: list[int], args, work: Path) -> list[dict]:
    rows = []
    sets = ["train.epochs=2", "eval.every=1000", f"train.batch_size={args.train_batch}"]
    base = ["-m", "gsmt_fast.cli", "train", "--config", str(REPO / "configs" / "synthetic_thumos_paper.yaml"), "--data",
            str(assets["train_data"]), "--quiet"]
    for item in sets:
        base += ["--set", item]
    configs = [("plain", None, None), ("plain", None, 1)] + [(f"torchrun x{n}", n, None) for n in ranks_list if n > 1]
    for rep in range(args.reps):
        for name, n, threads in configs:
            out = work / f"train_{name.replace(' ', '_')}_{threads}_{rep}"
            cmd = ([sys.executable] if n is None else torchrun(n)) + base + ["--out", str(out)]
            wall, _ = run(cmd, threads, timeout=1800)
            epochs = json.loads((out / "metrics.json").read_text())["epochs"]
            threads = "1" if threads == 1 else ("1 per rank" if n and n > 1 else "all")
            rows.append({"what": "train", "run": name, "rep": rep + 1, "threads": threads,
                         "epoch_s": epochs[1]["train_seconds"], "wall_s": wall,
                         "loss": f"{epochs[1]['loss_total']:.6f}"})
            print(f"train {name} ({threads} threads) rep {rep + 1}: epoch 2 {epochs[1]['train_seconds']:.2f} s, "
                  f"command {wall:.1f} s, "
                  f"loss {epochs[1]['loss_total']:.5f}", flush=True)
    return rows


def write_markdown(path: Path, env: dict, args, det_rows: list[dict], train_rows: list[dict], windows: str) -> None:
    from gsmt_fast.files import atomic_write_text

    head = (f"\n## {env['date']} · {args.device or 'cpu'} · commit {env['commit']}\n\n"
            f"`python bench/bench_distributed.py {' '.join(sys.argv[1:])}` — {cpu_model()}, ISA: {cpu_isa()}, "
            f"{env['cpu_count']} CPUs"
            + (f", GPU {env['device_name']}" if (args.device or "cpu").startswith("cuda") else "")
            + f"; torch {env['torch']}, python {env['python']}; load average (1 min) {env['loadavg_1m']:.2f} at "
            f"start, {env['loadavg_1m_end']:.2f} at the end (other work on the machine).\n")
    text = head
    if det_rows:
        text += (f"\nDetection: {args.videos} thumos-like videos ({windows}), random-init "
                 f"`synthetic_thumos_paper.yaml` model, backend `{args.backend}`"
                 f"{', precision ' + args.precision if args.precision else ''}; "
                 "`detect s`: the `detect` calls (torchrun: with the features' loading, slowest rank); `sharded "
                 "run s`: the slowest rank from planning to merge (part files, checksums, the results JSON); "
                 "`command s`: the whole command, process start-up and imports included.\n\n")
        text += markdown_table(det_rows, [("run", "run"), ("rep", "rep"), ("threads", "threads"),
                                          ("videos", "videos"), ("detect s", "detect_s"),
                                          ("videos/s", "videos_per_s"), ("sharded run s", "run_s"),
                                          ("command s", "wall_s"),
                                          ("videos/s incl. start-up", "videos_per_s_wall"),
                                          ("JSON == 1 rank", "identical_json")]) + "\n"
    if train_rows:
        text += (f"\nTraining: `configs/synthetic_thumos_paper.yaml` (`small` preset) on {args.train_videos} "
                 f"thumos-like videos, global batch {args.train_batch}; `epoch s` = second epoch's "
                 "`train_seconds`.\n\n")
        text += markdown_table(train_rows, [("run", "run"), ("rep", "rep"), ("threads", "threads"),
                                            ("epoch s", "epoch_s"), ("command s", "wall_s"),
                                            ("epoch-2 loss", "loss")]) + "\n"
    old = path.read_text() if path.is_file() else (
        "# Scale-out benchmark (bench/bench_distributed.py)\n\nAppend-only; newest last.\n")
    atomic_write_text(path, old + text)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ranks", default="1,2", help="rank counts to time under torchrun (comma list)")
    p.add_argument("--videos", type=int, default=96, help="videos in the detection archive")
    p.add_argument("--train-videos", type=int, default=24, help="videos of the training benchmark (0: no training)")
    p.add_argument("--train-batch", type=int, default=16)
    p.add_argument("--no-train", action="store_true", help="time detection only")
    p.add_argument("--no-plain", dest="plain", action="store_false", help="skip the unsharded one-process detect")
    p.add_argument("--backend", default="auto")
    p.add_argument("--precision", default=None)
    p.add_argument("--device", default=None, help="cpu (default) or cuda (each rank takes cuda:LOCAL_RANK)")
    p.add_argument("--chunk-size", type=int, default=None, help="videos per chunk (default: detect's)")
    p.add_argument("--reps", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--results-md", default="none",
                   help="markdown file to append the rows to (default: none; bench/RESULTS.md keeps a summary)")
    p.add_argument("--json", default=None, help="also write the rows and environment as JSON here")
    args = p.parse_args(argv)
    ranks_list = [int(x) for x in args.ranks.split(",") if x.strip()]
    env = environment(args.device or "cpu")
    with tempfile.TemporaryDirectory(prefix="gsmt_dist_bench_") as tmp:
        work = Path(tmp)
        t0 = time.perf_counter()
        assets = make_assets(work, args.videos, 0 if args.no_train else args.train_videos, args.seed)
        from gsmt_fast.data.features import FeatureStore

        store = FeatureStore(assets["archive"] / "features")
        lengths = [store.num_snippets(v) for v in store.video_ids()]
        windows = (f"{min(lengths)}–{max(lengths)} snippets, {sum(lengths)} in all")
        print(f"assets in {time.perf_counter() - t0:.1f} s: {len(lengths)} videos, {windows}", flush=True)
        det_rows = bench_detection(assets, ranks_list, args, work)
        train_rows = [] if args.no_train or not args.train_videos else bench_training(assets, ranks_list, args, work)
    env["loadavg_1m_end"] = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if args.results_md != "none":
        write_markdown(Path(args.results_md), env, args, det_rows, train_rows, windows)
        print(f"appended to {args.results_md}")
    if args.json:
        from gsmt_fast.files import atomic_write_json

        atomic_write_json(args.json, {"environment": env, "cpu": cpu_model(), "isa": cpu_isa(),
                                      "detect": det_rows, "train": train_rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
