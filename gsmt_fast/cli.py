"""``gsmt-fast`` command line: synth, train, detect, eval, analyze, plot, demo, export, stream, bench.

Errors a user can cause (bad arguments, missing or unreadable files, an unwritable output, a corrupt checkpoint)
end as one line ``gsmt-fast <cmd>: error: ...`` with exit status 2 when found before the command starts its work
(inputs and outputs are checked first), 1 when the work itself fails; nothing partial is left. Progress bars go
to a terminal only: with standard error redirected (a log file, a cluster job) they are off, and ``train`` logs one
line per epoch.
"""

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


def _progress(a) -> bool:
    """Progress bars only on a terminal (a redirected stream would get one carriage-return frame per update)."""
    return not getattr(a, "quiet", False) and sys.stderr.isatty()


def _start_work(a) -> None:
    """Inputs and outputs are checked: from here on a failure is a failure of the work (exit status 1)."""
    a.work_started = True


def cmd_synth(a) -> int:
    from .data.synthetic import generate
    from .files import check_output_path

    if a.videos is not None and a.videos < 1:
        raise ValueError(f"--videos must be >= 1, got {a.videos}")
    check_output_path(a.out, "folder")
    _start_work(a)
    path = generate(a.profile, a.out, seed=a.seed, num_videos=a.videos, progress=_progress(a))
    print(f"wrote the {a.profile} benchmark to {path}")
    return 0


def cmd_train(a) -> int:
    from .distributed import per_rank_batch, torchrun_env
    from .files import check_output_path
    from .train import load_config, train

    cfg = load_config(a.config, a.set or [])
    env = torchrun_env()
    per_rank_batch(int(cfg["train"]["batch_size"]), env[1] if env else 1)  # the global batch must split evenly
    check_output_path(a.out, "folder")
    _start_work(a)
    train(cfg, a.out, data_root=a.data, resume=a.resume, progress=_progress(a))
    return 0


def _video_sources(a, meta_input_mode: str):
    """(video ids, FeatureStore, per-video time kwargs) from --features and optionally --annotations; reads no
    features."""
    from .data.annotations import canonical_video_id, detect_kwargs, load_annotations
    from .data.features import FeatureStore

    feats = [Path(f) for f in a.features]
    for f in feats:
        if not f.exists():
            raise FileNotFoundError(f"--features {f}: no such file or folder")
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
        return ids, store, kw
    if len(feats) == 1 and feats[0].is_dir():
        store = FeatureStore(feats)
        ids = store.video_ids()
    else:
        store = FeatureStore([f.parent for f in feats])
        ids = [canonical_video_id(f.stem) for f in feats]
    if meta_input_mode == "resize" and a.duration is None:
        raise ValueError("this checkpoint uses resize mode: pass --duration or --annotations")
    return ids, store, {"fps": a.fps, "duration": a.duration}


def _video_inputs(a, meta_input_mode: str):
    """(video ids, feature arrays, per-video time kwargs) from --features and optionally --annotations."""
    ids, store, kw = _video_sources(a, meta_input_mode)
    return ids, [store.load(v) for v in ids], kw


def _print_evaluation(a, predictions) -> None:
    """The mAP table of ``predictions`` (results dict or file) against --annotations / --split."""
    from .evaluation import evaluate, parse_thresholds

    r = evaluate(a.annotations, predictions, tiou_thresholds=parse_thresholds(a.tiou), subset=a.split)
    print(r.format_table())


def cmd_detect(a) -> int:
    from .detector import Detector, results_to_json
    from .distributed import launched_by_torchrun
    from .results import write_results

    if a.shard is not None or launched_by_torchrun():
        return cmd_detect_sharded(a)
    from .evaluation import parse_thresholds
    from .files import check_output_path

    if a.chunk_size is not None or a.parts is not None:
        raise ValueError("--chunk-size and --parts apply to sharded detection: add --shard i/n or run under torchrun")
    if a.annotations:
        parse_thresholds(a.tiou)
    check_output_path(a.out)
    det = Detector(a.ckpt, backend=a.backend, device=a.device, precision=a.precision, batch_size=a.batch_size)
    ids, arrays, time_kw = _video_inputs(a, det.input_mode)
    plans = det.plan(arrays, video_id=ids, feat_stride=a.feat_stride, num_frames=a.num_frames, **time_kw)
    del arrays  # the plans hold the windows: every video's features and time metadata are valid, the work can start
    _start_work(a)
    if not a.quiet:
        print(f"backend: {det.backend.name} ({getattr(det.backend, 'precision', 'fp32')}"
              f"{', picked by auto' if a.backend == 'auto' else ''})", file=sys.stderr)
    t0 = time.perf_counter()
    results = det.detect_plans(plans, progress=_progress(a))
    elapsed = time.perf_counter() - t0
    payload = results_to_json(results)
    write_results(a.out, payload["results"])
    n_det = sum(len(r) for r in results)
    print(f"{len(ids)} videos, {n_det} detections in {elapsed:.2f} s ({len(ids) / elapsed:.1f} videos/s, "
          f"backend {det.backend.name}) -> {a.out}")
    if a.annotations:
        _print_evaluation(a, payload)
    return 0


def cmd_detect_sharded(a) -> int:
    """``detect`` split over torchrun's ranks or as shard ``--shard i/n``, resumable (see gsmt_fast.sharding)."""
    from . import distributed
    from .detector import Detector
    from .sharding import detector_identity, parse_shard, run_sharded_detection

    torchrun = distributed.launched_by_torchrun()
    if torchrun and a.shard is not None:
        raise ValueError("--shard i/n and torchrun are two ways to split the videos: use one of them")
    if a.chunk_size is not None and a.chunk_size < 1:
        raise ValueError(f"--chunk-size must be >= 1, got {a.chunk_size}")
    if torchrun:
        # Detection exchanges only its plan and a final barrier: Gloo on every device.
        world = distributed.init_from_env(backend="gloo")
    else:
        index, count = parse_shard(a.shard)
        world = distributed.WorldInfo(rank=index, world_size=count)
    try:
        device = a.device
        if device is None and torchrun:
            import torch

            if torch.cuda.is_available():  # one GPU per local rank (shared round-robin when ranks outnumber GPUs)
                device = f"cuda:{world.local_rank % torch.cuda.device_count()}"
        det = Detector(a.ckpt, backend=a.backend, device=device, precision=a.precision, batch_size=a.batch_size)
        ids, store, time_kw = _video_sources(a, det.input_mode)
        report = run_sharded_detection(det, ids, store.load, store.num_snippets, a.out, world=world,
                                       static_shards=not torchrun, feat_stride=a.feat_stride,
                                       num_frames=a.num_frames, chunk_size=a.chunk_size, parts_dir=a.parts,
                                       identity=detector_identity(det, a.ckpt),
                                       progress=_progress(a) and world.is_main, **time_kw)
    finally:
        distributed.shutdown(world)
    what = "shard" if not torchrun else "rank"
    n_videos = len(report.processed_videos)
    rate = f", {n_videos / report.detect_seconds:.1f} videos/s" if n_videos and report.detect_seconds > 0 else ""
    print(f"{what} {world.rank}/{world.world_size}: detected {len(report.processed_chunks)} chunks ({n_videos} "
          f"videos) in {report.seconds:.2f} s ({report.detect_seconds:.2f} s loading and detecting{rate}); "
          f"{report.skipped_chunks} chunks were already done")
    if report.merged:
        print(f"{len(ids)} videos, {report.num_detections} detections in {report.num_chunks} chunks -> {a.out}")
        if a.annotations:
            _print_evaluation(a, a.out)
    elif not torchrun:
        print(f"{report.remaining_chunks} of {report.num_chunks} chunks belong to shards still running or not yet "
              f"run; the last shard to finish writes {a.out}")
    return 0


def cmd_export(a) -> int:
    from .export import export_main
    from .files import check_output_path

    if a.format == "tensorrt" and a.out is None:
        raise ValueError("--format tensorrt needs --out (the engine file to write)")
    if a.out is not None:
        check_output_path(a.out)
    # A missing optional package (onnx, onnxruntime, tensorrt) or GPU is one error line naming what to install.
    path = export_main(a.ckpt, a.out, a.format, precision=a.precision or ("fp16" if a.format == "tensorrt" else "fp32"),
                       opset=a.opset, batch=a.batch, calibration=a.calibration, workspace_gib=a.workspace_gib)
    print(f"wrote {path}{' (export cache)' if a.out is None else ''}")
    return 0


def cmd_eval(a) -> int:
    from .evaluation import evaluate, parse_thresholds

    if Path(a.results).is_dir():
        raise ValueError(f"--results {a.results} is a folder; give the results JSON file")
    r = evaluate(a.annotations, a.results, tiou_thresholds=parse_thresholds(a.tiou), subset=a.split)
    print(r.format_table(per_class=a.per_class))
    return 0


def cmd_analyze(a) -> int:
    import warnings

    from .analysis import analyze, require_matplotlib
    from .files import check_output_path

    if not a.no_plot:
        try:
            require_matplotlib()
        except ImportError as e:
            raise ValueError(str(e)) from None
    check_output_path(a.out, "folder")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the report lists what was ignored; printed once below
        report = analyze(a.results, a.annotations, split=a.split, tiou_thresholds=a.tiou, error_tiou=a.error_tiou,
                         top_factor=a.top_factor, length_buckets=a.length_buckets,
                         snippet_seconds=a.snippet_seconds, feat_stride=a.feat_stride,
                         temporal_scale=a.temporal_scale, checkpoint=a.ckpt, warn=False)
    for message in report.warnings:
        print(f"gsmt-fast analyze: warning: {message}", file=sys.stderr)
    written = report.write(a.out, plots=not a.no_plot)
    print(report.format_summary())
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


def cmd_plot(a) -> int:
    from .files import check_output_path
    from .plot import plot_timeline

    check_output_path(a.out)
    path = plot_timeline(a.results, a.annotations, a.video, a.out, top_k=a.top_k)
    print(f"wrote {path}")
    return 0


def cmd_demo(a) -> int:
    from .demo import run_demo

    run_demo(a.out, seed=a.seed, quiet=not _progress(a))
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
        if not source.is_file():
            raise FileNotFoundError(f"--features {source}: no such file")
    if a.threads is not None:
        if a.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {a.threads}")
        import torch

        torch.set_num_threads(a.threads)
    # No _start_work: the input arrives while the stream runs, so a malformed chunk or a bad checkpoint found then is
    # still a bad input (exit status 2); the detections already printed were final and stay valid.
    return replay(a.ckpt, source, out=sys.stdout, fps=a.fps, feat_stride=a.feat_stride, num_frames=a.num_frames,
                  hop=a.hop, margin=a.margin, chunk=a.chunk, realtime=a.realtime, backend=a.backend, device=a.device,
                  precision=a.precision, stream_id=a.stream_id)


def find_bench_script() -> tuple[Path | None, list[Path]]:
    """``bench/run.py`` of the source checkout this package runs from (an editable install), or None.

    The benchmark harness lives in the repository, not in the wheel. Only the checkout that holds this very package
    counts (its pyproject.toml names gsmt_fast): never the working directory, whose code would run with the user's
    rights just because they ran ``gsmt-fast bench`` there. Returns (path or None, places looked at)."""
    root = Path(__file__).resolve().parent.parent
    script, pyproject = root / "bench" / "run.py", root / "pyproject.toml"
    try:
        ours = pyproject.is_file() and 'name = "gsmt_fast"' in pyproject.read_text()
    except OSError:
        ours = False
    return (script if ours and script.is_file() else None), [script]


def cmd_bench(argv: list[str]) -> int:
    """Run ``bench/run.py``'s ``main`` with the arguments after ``bench`` passed through unchanged."""
    import importlib.util

    script, looked = find_bench_script()
    if script is None:
        print("gsmt-fast bench: error: the benchmark harness bench/run.py is part of the gsmt_fast repository, not "
              "of the installed package (looked at: " + ", ".join(map(str, looked)) + "). Clone the repository and "
              "run `python bench/run.py --quick` in it, or install it editable (`pip install -e .`) and use "
              "`gsmt-fast bench`.", file=sys.stderr)
        return 2
    spec = importlib.util.spec_from_file_location("gsmt_fast_bench_run", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv, prog="gsmt-fast bench")


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="gsmt-fast", description="GSMT temporal action localization: synthesize data, "
                                "train, detect, evaluate, analyze errors, plot, benchmark.")
    p.add_argument("--version", action="version", version=f"gsmt_fast {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("synth", help="write a synthetic benchmark in the real on-disk formats")
    s.add_argument("--profile", required=True, choices=["thumos-like", "anet-like"])
    s.add_argument("--out", required=True, help="output dataset root")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--videos", type=int, default=None, help="number of videos (default: the profile's)")
    s.add_argument("--quiet", action="store_true")
    s.set_defaults(fn=cmd_synth)

    t = sub.add_parser("train", help="train a GSMT model from a YAML config (under torchrun: DDP, see "
                       "docs/SCALING.md)")
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
                   help="reference | torch | triton | onnxruntime | tensorrt | auto (default; what it picks: "
                        "docs/DEPLOYING.md)")
    d.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: the backend's choice)")
    d.add_argument("--precision", default=None,
                   help="fp32 | bf16 (torch, triton, tensorrt) | fp16 (triton, onnxruntime, tensorrt) | int8 "
                        "(onnxruntime, calibrated by `gsmt-fast export`); default: the backend's (torch: bf16 on "
                        "CPUs with native bf16, else fp32; triton, tensorrt: fp16; onnxruntime: fp32). Training-time "
                        "validation uses fp32")
    d.add_argument("--batch-size", type=int, default=64, help="windows per forward pass")
    d.add_argument("--quiet", action="store_true")
    g = d.add_argument_group("sharded, resumable detection (also automatic under torchrun; see docs/SCALING.md)")
    g.add_argument("--shard", metavar="I/N", help="run shard I of N (0-based; e.g. a cluster array task): its "
                   "videos go to a part file, the last shard to finish writes --out; a rerun skips finished videos")
    g.add_argument("--chunk-size", type=int, default=None, metavar="VIDEOS",
                   help="videos per unit of work and of resume (default: N/64 clamped to 8…256)")
    g.add_argument("--parts", default=None, metavar="DIR", help="folder of the part files (default: OUT.parts)")
    _add_time_args(d)
    d.set_defaults(fn=cmd_detect)

    e = sub.add_parser("eval", help="mAP of a results JSON against ActivityNet-style annotations")
    e.add_argument("--results", required=True)
    e.add_argument("--annotations", required=True)
    e.add_argument("--split", default=None, help="subset to evaluate on (e.g. validation, test)")
    e.add_argument("--tiou", default="0.3:0.1:0.7", help="tIoU thresholds: start:step:stop or a comma list")
    e.add_argument("--per-class", action="store_true", help="also print per-class AP")
    e.set_defaults(fn=cmd_eval)

    an = sub.add_parser("analyze", help="error diagnosis of a results JSON (ours or a peer's): false-positive "
                        "breakdown, boundary error, mAP by instance length; writes a JSON report and PNGs",
                        description="Error diagnosis after DETAD (Alwassel et al., ECCV 2018) of any results JSON "
                        "against ActivityNet-style annotations. OUT receives analysis.json and analysis.png (plus "
                        "one PNG per plot); a summary is printed. Rules: gsmt_fast.analysis and docs/ANALYSIS.md.")
    an.add_argument("--results", required=True, help="results JSON (official ActivityNet, OpenTAD or ActionFormer)")
    an.add_argument("--annotations", required=True, help="annotation file (ActivityNet, ActionFormer/OpenTAD, BMN)")
    an.add_argument("--split", default=None, help="subset to analyse (e.g. validation, test); default: all videos")
    an.add_argument("--out", required=True, help="output folder (analysis.json, analysis.png, one PNG per plot)")
    an.add_argument("--tiou", default="0.3:0.1:0.7",
                    help="tIoU thresholds of the mAP overall and by length: start:step:stop or a comma list")
    an.add_argument("--error-tiou", type=float, default=0.5,
                    help="tIoU of the false-positive breakdown and of the true positives whose boundaries are measured")
    an.add_argument("--top-factor", type=int, default=10,
                    help="analyse the top N x G detections of each class (G: its ground-truth instances)")
    an.add_argument("--length-buckets", default="auto",
                    help="auto | snippets | seconds | coverage, optionally with edges, e.g. snippets:4,8,16,32 "
                         "(defaults: snippets 4,8,16,32; seconds 3,6,12,18; coverage 0.2,0.4,0.6,0.8)")
    unit = an.add_argument_group("snippet duration (at most one; default: the dataset.json beside --annotations, "
                                 "if any; without one, errors are in seconds only)")
    unit = unit.add_mutually_exclusive_group()
    unit.add_argument("--ckpt", help="checkpoint whose grid gives it (feat_stride / fps, or duration / T)")
    unit.add_argument("--feat-stride", type=float, help="frames per snippet step; divided by each video's fps")
    unit.add_argument("--temporal-scale", type=int, help="T of videos resized to T snippets: duration / T")
    unit.add_argument("--snippet-seconds", type=float, help="one duration for every video, in seconds")
    an.add_argument("--no-plot", action="store_true", help="write only analysis.json (no matplotlib needed)")
    an.set_defaults(fn=cmd_analyze)

    pl = sub.add_parser("plot", help="timeline PNG of ground truth and top detections of one video")
    pl.add_argument("--results", required=True)
    pl.add_argument("--annotations", required=True)
    pl.add_argument("--video", required=True)
    pl.add_argument("--out", required=True, help="image to write: .png, .pdf or .svg (the format follows the suffix)")
    pl.add_argument("--top-k", type=int, default=10, help="detections to draw, 1 … 200 (default 10)")
    pl.set_defaults(fn=cmd_plot)

    x = sub.add_parser("export", help="export the network to ONNX or a TensorRT engine (post-processing stays in "
                       "the compiled extension; docs/DEPLOYING.md)")
    x.add_argument("--ckpt", required=True, help="checkpoint (.safetensors)")
    x.add_argument("--format", default="onnx", choices=["onnx", "tensorrt"])
    x.add_argument("--out", default=None, help="file to write (onnx: default the export cache, where "
                   "Detector(backend='onnxruntime') finds it)")
    x.add_argument("--precision", default=None, help="onnx: fp32 (default) | fp16 | bf16 (opset >= 22) | int8 "
                   "(needs --calibration); tensorrt: fp16 (default) | bf16 | fp32")
    x.add_argument("--opset", type=int, default=None, help="ONNX opset (default 20, the newest TensorRT 10 parses)")
    x.add_argument("--batch", default=None, metavar="MIN:OPT:MAX",
                   help="dynamic batch range (default 1:64:1024); TensorRT's optimisation profile")
    x.add_argument("--calibration", default=None, metavar="DIR",
                   help="int8: dataset folder (annotations.json + features/) whose training split calibrates")
    x.add_argument("--workspace-gib", type=float, default=None, help="tensorrt: builder workspace (default 4)")
    x.set_defaults(fn=cmd_export)

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
    st.add_argument("--backend", default="auto", help="reference | torch | triton | onnxruntime | tensorrt | auto")
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
    args.work_started = False
    try:
        return args.fn(args)
    except (ValueError, TypeError, KeyError, OSError, RuntimeError, ImportError) as e:
        # Expected failures (see the module docstring); anything else is a bug and keeps its traceback.
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"gsmt-fast {args.command}: error: {message}", file=sys.stderr)
        return 1 if args.work_started else 2


if __name__ == "__main__":
    sys.exit(main())
