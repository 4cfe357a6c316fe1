"""``gsmt-fast`` command line: synth, train, detect, eval, plot, demo, stream, bench."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path


def _add_time_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("time metadata (when not taken from --annotations)")
    g.add_argument("--fps", type=float, help="frames per second of the videos (window mode)")
    g.add_argument("--feat-stride", type=float, help="frames between consecutive snippets (default: checkpoint's)")
    g.add_argument("--num-frames", type=float, help="frames per snippet (default: checkpoint's)")
    g.add_argument("--duration", type=float, help="video duration in seconds (resize mode; clamps window mode)")


def cmd_synth(a) -> int:
    from .data.synthetic import generate

    path = generate(a.profile, a.out, seed=a.seed, num_videos=a.videos, progress=not a.quiet)
    print(f"wrote the {a.profile} benchmark to {path}")
    return 0


def cmd_train(a) -> int:
    from .train import load_config, train

    cfg = load_config(a.config, a.set or [])
    train(cfg, a.out, data_root=a.data, resume=a.resume, progress=not a.quiet)
    return 0


def _video_inputs(a, meta_input_mode: str):
    """(video ids, feature arrays, per-video time kwargs) from --features and optionally --annotations."""
    from .data.annotations import canonical_video_id, detect_kwargs, load_annotations
    from .data.features import FeatureStore

    feats = [Path(f) for f in a.features]
    if a.annotations:
        aset = load_annotations(a.annotations)
        videos = aset.subset(a.split) if a.split else list(aset.videos.values())
        store = FeatureStore(feats)
        kw = detect_kwargs(videos)
        ids = kw.pop("video_id")
        if a.fps is not None:
            kw["fps"] = a.fps
        if a.duration is not None:
            kw["duration"] = a.duration
        return ids, [store.load(v) for v in ids], kw
    if len(feats) == 1 and feats[0].is_dir():
        store = FeatureStore(feats)
        ids = store.video_ids()
        arrays = [store.load(v) for v in ids]
    else:
        store = FeatureStore([f.parent for f in feats])
        ids = [canonical_video_id(f.stem) for f in feats]
        arrays = [store.load(v) for v in ids]
    if meta_input_mode == "resize" and a.duration is None:
        raise SystemExit("error: this checkpoint uses resize mode: pass --duration or --annotations")
    return ids, arrays, {"fps": a.fps, "duration": a.duration}


def cmd_detect(a) -> int:
    from .detector import Detector, results_to_json
    from .results import write_results

    det = Detector(a.ckpt, backend=a.backend, device=a.device, precision=a.precision, batch_size=a.batch_size)
    ids, arrays, time_kw = _video_inputs(a, det.input_mode)
    t0 = time.perf_counter()
    results = det.detect(arrays, video_id=ids, feat_stride=a.feat_stride, num_frames=a.num_frames,
                         progress=not a.quiet, **time_kw)
    elapsed = time.perf_counter() - t0
    payload = results_to_json(results)
    write_results(a.out, payload["results"])
    n_det = sum(len(r) for r in results)
    print(f"{len(ids)} videos, {n_det} detections in {elapsed:.2f} s ({len(ids) / elapsed:.1f} videos/s, "
          f"backend {det.backend.name}) -> {a.out}")
    if a.annotations:
        from .evaluation import evaluate, parse_thresholds

        r = evaluate(a.annotations, payload, tiou_thresholds=parse_thresholds(a.tiou), subset=a.split)
        print(r.format_table())
    return 0


def cmd_eval(a) -> int:
    from .evaluation import evaluate, parse_thresholds

    r = evaluate(a.annotations, a.results, tiou_thresholds=parse_thresholds(a.tiou), subset=a.split)
    print(r.format_table(per_class=a.per_class))
    return 0


def cmd_plot(a) -> int:
    from .plot import plot_timeline

    path = plot_timeline(a.results, a.annotations, a.video, a.out, top_k=a.top_k)
    print(f"wrote {path}")
    return 0


def cmd_demo(a) -> int:
    from .demo import run_demo

    run_demo(a.out, seed=a.seed, quiet=a.quiet)
    return 0


def cmd_stream(a) -> int:
    """Replay a feature file (or read ``.npy`` chunks from standard input) as a live stream: one JSON line per
    detection as it becomes final, then one summary line; nothing else on standard output."""
    from .streaming import replay

    if a.features == "-":
        if a.realtime:
            raise ValueError("--realtime paces a replayed file; standard input is read as its producer writes it")
        source = sys.stdin.buffer
    else:
        source = Path(a.features)
    if a.threads:
        import torch

        torch.set_num_threads(a.threads)
    return replay(a.ckpt, source, out=sys.stdout, fps=a.fps, feat_stride=a.feat_stride, num_frames=a.num_frames,
                  hop=a.hop, margin=a.margin, chunk=a.chunk, realtime=a.realtime, backend=a.backend, device=a.device,
                  precision=a.precision, stream_id=a.stream_id)


def find_bench_script() -> tuple[Path | None, list[Path]]:
    """``bench/run.py`` of the checkout this package runs from (editable install) or of the working directory.

    The benchmark harness lives in the repository, not in the wheel; returns (path or None, places looked at)."""
    candidates = [Path(__file__).resolve().parent.parent / "bench" / "run.py", Path.cwd() / "bench" / "run.py"]
    return next((c for c in candidates if c.is_file()), None), candidates


def cmd_bench(argv: list[str]) -> int:
    """Run ``bench/run.py``'s ``main`` with the arguments after ``bench`` passed through unchanged."""
    import importlib.util

    script, looked = find_bench_script()
    if script is None:
        print("gsmt-fast bench: error: the benchmark harness bench/run.py is part of the gsmt_fast repository, not "
              "of the installed package, and was not found (looked at: " + ", ".join(map(str, looked)) + "). Run "
              "it from the repository root of a checkout: `gsmt-fast bench --quick` or `python bench/run.py --quick`.",
              file=sys.stderr)
        return 2
    spec = importlib.util.spec_from_file_location("gsmt_fast_bench_run", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv, prog="gsmt-fast bench")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="gsmt-fast", description="GSMT temporal action localization: synthesize data, "
                                "train, detect, evaluate, plot, benchmark.")
    p.add_argument("--version", action="version", version=f"gsmt_fast {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="write a synthetic benchmark in the real on-disk formats")
    s.add_argument("--profile", required=True, choices=["thumos-like", "anet-like"])
    s.add_argument("--out", required=True, help="output dataset root")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--videos", type=int, default=None, help="number of videos (default: the profile's)")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(fn=cmd_synth)

    t = sub.add_parser("train", help="train a GSMT model from a YAML config")
    t.add_argument("--config", required=True, help="YAML config (see configs/)")
    t.add_argument("--data", help="dataset root (with dataset.json, e.g. from `gsmt-fast synth`)")
    t.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. train.epochs=5")
    t.add_argument("--out", required=True, help="output folder (checkpoints, metrics.json)")
    t.add_argument("--resume", action="store_true", help="continue from OUT/train_state.pt")
    t.add_argument("--quiet", action="store_true", help="no progress bars")
    t.set_defaults(fn=cmd_train)

    d = sub.add_parser("detect", help="detect actions in feature files; writes the official results JSON")
    d.add_argument("--ckpt", required=True, help="checkpoint (.safetensors)")
    d.add_argument("--features", required=True, nargs="+", help="a feature folder (or HDF5 file), or feature files")
    d.add_argument("--out", required=True, help="results JSON to write")
    d.add_argument("--annotations", help="annotation file: videos, fps and durations of --split; also evaluates")
    d.add_argument("--split", help="subset of --annotations to run on (e.g. validation)")
    d.add_argument("--tiou", default="0.3:0.1:0.7", help="tIoU thresholds for the evaluation (start:step:stop)")
    d.add_argument("--backend", default="auto",
                   help="reference | torch | triton | auto (default: triton on a GPU, torch on a CPU)")
    d.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: the backend's choice)")
    d.add_argument("--precision", default=None,
                   help="fp32 | bf16 (torch) | fp16 (triton); default: the backend's (torch: bf16 on CPUs with "
                        "native bf16, else fp32; triton: fp16). Training-time validation uses fp32")
    d.add_argument("--batch-size", type=int, default=64, help="windows per forward pass")
    d.add_argument("--quiet", action="store_true")
    _add_time_args(d)
    d.set_defaults(fn=cmd_detect)

    e = sub.add_parser("eval", help="mAP of a results JSON against ActivityNet-style annotations")
    e.add_argument("--results", required=True)
    e.add_argument("--annotations", required=True)
    e.add_argument("--split", default=None, help="subset to evaluate on (e.g. validation, test)")
    e.add_argument("--tiou", default="0.3:0.1:0.7", help="tIoU thresholds: start:step:stop or a comma list")
    e.add_argument("--per-class", action="store_true", help="also print per-class AP")
    e.set_defaults(fn=cmd_eval)

    pl = sub.add_parser("plot", help="timeline PNG of ground truth and top detections of one video")
    pl.add_argument("--results", required=True)
    pl.add_argument("--annotations", required=True)
    pl.add_argument("--video", required=True)
    pl.add_argument("--out", required=True)
    pl.add_argument("--top-k", type=int, default=10)
    pl.set_defaults(fn=cmd_plot)

    dm = sub.add_parser("demo", help="synthesize, train, detect, evaluate and plot on the thumos-like benchmark")
    dm.add_argument("--out", default="demo_out")
    dm.add_argument("--seed", type=int, default=0)
    dm.add_argument("--quiet", action="store_true")
    dm.set_defaults(fn=cmd_demo)

    st = sub.add_parser("stream", help="replay features as a live stream: one JSON line per detection as it becomes "
                        "final (docs/STREAMING.md)")
    st.add_argument("--ckpt", required=True, help="checkpoint (.safetensors, window mode)")
    st.add_argument("--features", required=True,
                    help="a feature file (.npy/.npz/.csv) replayed as a stream, or - : .npy chunks on standard input "
                         "(each written with numpy.save; pushed as it arrives)")
    st.add_argument("--fps", type=float, help="frames per second of the video (default: the checkpoint's, if any)")
    st.add_argument("--feat-stride", type=float, help="frames between consecutive snippets (default: checkpoint's)")
    st.add_argument("--num-frames", type=float, help="frames per snippet (default: checkpoint's)")
    st.add_argument("--hop", type=int, default=None, help="run the model every HOP snippets (default: the library's)")
    st.add_argument("--margin", type=int, default=None, help="snippets after a detection's end before it is final")
    st.add_argument("--chunk", type=int, default=1, help="snippets per push when replaying a file (default 1)")
    st.add_argument("--realtime", action="store_true", help="replay the file at its real rate (fps / feat-stride)")
    st.add_argument("--stream-id", default=None, help="value of the \"stream\" field of every output line")
    st.add_argument("--backend", default="auto", help="reference | torch | triton | auto")
    st.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: the backend's choice)")
    st.add_argument("--precision", default=None, help="the backend's precision (default: the backend's)")
    st.add_argument("--threads", type=int, default=None,
                    help="torch CPU threads (default: torch's; 1 is often faster for one stream on a busy machine)")
    st.set_defaults(fn=cmd_stream)

    # Only listed here: main() hands every argument after `bench` to bench/run.py (see `gsmt-fast bench --help`).
    sub.add_parser("bench", help="throughput benchmark of the backends (runs the repository's bench/run.py; "
                   "arguments are passed through, see `gsmt-fast bench --help`)", add_help=False)
    return p


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["bench"]:
        return cmd_bench(argv[1:])
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"gsmt-fast {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
