"""Streamed vs offline accuracy and end delay of a checkpoint, over hops and emission policies (docs/STREAMING.md).

    python bench/streaming_accuracy.py --data .gpu_assets/thumos --ckpt .gpu_assets/thumos.safetensors \\
        --backend torch --precision fp32 --out bench/results/streaming_accuracy.json

``--data`` is a benchmark folder (``annotations.json`` + ``features/``); its validation videos are detected offline
(``Detector.detect``, window mode) and streamed (one :class:`gsmt_fast.streaming.StreamSession` per video, the whole
video pushed, then ``close()``) with every policy of :func:`policies` at every hop of ``--hops``. Per row: streamed
average mAP and its ratio to offline, the mean end delay over true positives (``gentime − gt_end``, averaged over
the tIoU thresholds like the mAP), the delay at tIoU 0.5, the number of detections and the windows run per stream
second. The model runs once per distinct window: the backend is wrapped by :class:`MemoBackend`, which answers a
window it has already computed (same first snippet, same features) from memory, so each policy row costs only its
emission logic while every row still goes through the real session code. The default policy's rows are also run
without the memo (``--check-default``) to show they are the same.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from backend_accuracy import load_validation  # noqa: E402


class MemoBackend:
    """A backend wrapper that computes each distinct window once: ``run_windows`` answers windows seen before (key:
    first snippet, length, SHA-1 of the features, final flag) from memory and sends the others to the wrapped
    backend in one call. Everything else is the wrapped backend's."""

    def __init__(self, backend):
        self._backend = backend
        self._memo: dict = {}
        self.computed = 0

    def __getattr__(self, name):
        return getattr(self._backend, name)

    @staticmethod
    def _key(window, final):
        digest = hashlib.sha1(np.ascontiguousarray(window.features).tobytes()).digest()
        return window.first, len(window.features), window.grid, digest, bool(final)

    def run_windows(self, windows, final, cfg):
        keys = [self._key(w, f) for w, f in zip(windows, final)]
        missing = [j for j, k in enumerate(keys) if k not in self._memo]
        if missing:
            outputs = self._backend.run_windows([windows[j] for j in missing], [final[j] for j in missing], cfg)
            for j, out in zip(missing, outputs):
                self._memo[keys[j]] = out
            self.computed += len(missing)
        return [self._memo[k] for k in keys]


def policies(hop: int) -> list[tuple[str, dict]]:
    """The policies compared at one hop (EmissionPolicy fields); the first is the library's default."""
    never = 1e9  # a score no detection reaches: nobody is "confident"
    return [
        ("(c) default: score gate 0.95 + stability 2 + horizon 2*hop", {}),
        ("(a) naive: past end + margin 4, suppress > 0.7, no horizon",
         {"margin": 4, "confident_score": 0.0, "stable_hops": 1, "horizon": 100_000}),
        ("(a) past end + margin 4 + horizon 2*hop", {"margin": 4, "confident_score": 0.0, "stable_hops": 1}),
        ("(a) past end + margin 2 + horizon 2*hop", {"margin": 2, "confident_score": 0.0, "stable_hops": 1}),
        ("(b) stability 2 hops, margin 2", {"margin": 2, "confident_score": never, "low_score_extra_margin": 0}),
        ("(b) stability 3 hops, margin 2",
         {"margin": 2, "confident_score": never, "low_score_extra_margin": 0, "stable_hops": 3}),
        ("(c) gate, confident margin 0", {"margin": 0, "low_score_extra_margin": 8}),
        ("(c) gate, confident margin 1", {"margin": 1, "low_score_extra_margin": 7}),
        ("(c) gate, confident margin 3", {"margin": 3, "low_score_extra_margin": 5}),
        ("(c) gate, low-score margin 6", {"low_score_extra_margin": 4}),
        ("(c) gate, low-score margin 12", {"low_score_extra_margin": 10}),
        ("(c) gate 0.9", {"confident_score": 0.9}),
        ("(c) gate, stability 3", {"stable_hops": 3}),
        ("(c) gate, horizon 1*hop", {"horizon": hop}),
        ("(c) gate, horizon 3*hop", {"horizon": 3 * hop}),
        ("(c) gate, suppress > 0.5", {"suppress_iou": 0.5}),
        ("(c) gate, suppress > 0.8", {"suppress_iou": 0.8}),
    ]


def background_rule_rows(det, videos, feats, gt, offline_map: float, hop: int, settings: list[tuple]) -> list[dict]:
    """Research rule (c'), not in the library: a detection is final once the snippets after its end hold background
    evidence: the mean background probability over ``[end, end + evidence)`` (those present) is at least
    ``threshold`` and at least ``min_after`` snippets follow the end; ends older than ``evidence + horizon`` are
    never decided; suppression as the library's. It needs the class probabilities, which ``run_windows`` does not
    return, so the windows run here as ``pack`` → ``forward`` → ``post_process`` (the same computation)."""
    from gsmt_fast.data.grid import SnippetGrid
    from gsmt_fast.data.windows import Window
    from gsmt_fast.streaming import EmissionPolicy, Emitter, StreamDetections, stream_metrics, stream_time

    backend, t = det.backend, det.model_config.temporal_scale
    per_video = []
    for v, f in zip(videos, feats):
        positions = list(range(hop, len(f) + 1, hop))
        if not positions or positions[-1] != len(f):
            positions.append(len(f))
        outputs = []
        for s in range(0, len(positions), 64):
            batch = [Window(max(0, q - t), f[max(0, q - t):q],
                            SnippetGrid.stride(v.fps, det.grid_config.feat_stride, det.grid_config.num_frames,
                                               first_snippet=max(0, q - t))) for q in positions[s:s + 64]]
            x, valid = backend.pack(batch)
            probs, masks = backend.forward(x, valid)
            dets = backend.post_process(batch, [True] * len(batch), probs, masks, valid, det.inference)
            probs = np.asarray(probs.float().cpu() if hasattr(probs, "cpu") else probs)
            outputs += [(d, probs[j, -1, :valid[j]]) for j, d in enumerate(dets)]
        per_video.append((positions, outputs))

    class BackgroundEvidence(Emitter):
        def __init__(self, policy, grid, temporal_scale, min_after, evidence, threshold):
            super().__init__(policy, grid, temporal_scale)
            self.min_after, self.evidence, self.threshold = min_after, evidence, threshold
            self.background = None  # P(background) of the window's snippets [p - len, p)

        def decided(self, p, end_units, scores, runs, last):
            ends = np.ceil(end_units - 1e-6).astype(np.int64)
            fresh = end_units > p - self.evidence - self.policy.decision_span + 1e-6
            if last:
                return fresh
            first = p - len(self.background)
            ok = np.zeros(len(ends), dtype=bool)
            for i, e in enumerate(ends):
                if fresh[i] and p - e >= self.min_after and e >= first:
                    ok[i] = self.background[e - first:min(e + self.evidence, p) - first].mean() >= self.threshold
            return ok

    rows = []
    for name, min_after, evidence, threshold in settings:
        streamed = []
        stride, frames = det.grid_config.feat_stride, det.grid_config.num_frames
        for v, f, (positions, outputs) in zip(videos, feats, per_video):
            grid = SnippetGrid.stride(v.fps, stride, frames)
            emitter = BackgroundEvidence(EmissionPolicy(hop=hop), grid, t, min_after, evidence, threshold)
            parts = []
            for q, (d, background) in zip(positions, outputs):
                emitter.background = background
                # as StreamSession.close(): the window at the end is decided as the end (again, when it was due)
                steps = [False, True] if q == len(f) and q % hop == 0 else [q % hop != 0]
                for last in steps:
                    seg, sc, lb = emitter.step(q, d.segments, d.scores, d.labels, last=last)
                    parts.append(StreamDetections(np.maximum(seg, 0.0), sc, lb, det.class_names, v.video_id,
                                                  np.full(len(sc), stream_time(q, v.fps, stride, frames))))
            streamed.append(StreamDetections.concatenate(parts, det.class_names, v.video_id))
        m = stream_metrics(gt, streamed, subset="validation")
        rows.append({"policy": name, "hop": hop, "average_mAP": m["average_mAP"],
                     "ratio": m["average_mAP"] / offline_map, "mean_end_delay_s": m["mean_end_delay_s"],
                     "end_delay_s": m["end_delay_s"], "mAP": m["mAP"], "detections": m["detections"]})
        print(f"hop {hop:3d} | {name:58s} | mAP {m['average_mAP']:.4f} ({m['average_mAP'] / offline_map:.3f}x) | "
              f"delay {m['mean_end_delay_s']:.2f} s (@0.5 {m['end_delay_s'][2]:.2f}) | {m['detections']} det",
              flush=True)
    return rows


def stream_videos(det, videos, feats, policy: dict, hop: int):
    from gsmt_fast.streaming import StreamDetections

    out = []
    for v, f in zip(videos, feats):
        session = det.stream(fps=v.fps, hop=hop, policy=policy, stream_id=v.video_id)
        out.append(StreamDetections.concatenate([session.push(f), session.close()], det.class_names, v.video_id))
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--ckpt", type=Path, required=True)
    p.add_argument("--backend", default="torch")
    p.add_argument("--precision", default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--hops", default="4,8,16", help="hops for the curve (the full policy list runs at the default hop)")
    p.add_argument("--check-default", action="store_true",
                   help="also run the default policy without the memo and compare")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--background-rule", action="store_true",
                   help="also measure the research rule (c'): emit on background evidence after the end")
    p.add_argument("--only-background-rule", action="store_true", help="measure only that rule (and offline)")
    p.add_argument("--out", type=Path, default=None, help="JSON with every row (and a PNG of the curve beside it)")
    args = p.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)

    import gsmt_fast
    from gsmt_fast.data.annotations import detect_kwargs
    from gsmt_fast.detector import results_to_json
    from gsmt_fast.streaming import DEFAULT_HOP, EmissionPolicy, stream_metrics

    videos, feats, gt = load_validation(args.data)
    det = gsmt_fast.Detector(args.ckpt, backend=args.backend, device=args.device, precision=args.precision)
    t0 = time.perf_counter()
    offline_results = det.detect(feats, **detect_kwargs(videos))
    offline = gsmt_fast.evaluate(gt, results_to_json(offline_results), subset="validation")
    offline_s = time.perf_counter() - t0
    offline_detections = sum(len(r) for r in offline_results)
    print(f"offline window mode: {offline_detections} detections, average mAP {offline.average_mAP:.4f} "
          f"({', '.join(f'{m:.3f}' for m in offline.mAP)}), {offline_s:.1f} s; backend {det.backend.name} "
          f"{getattr(det.backend, 'precision', '')}, torch threads {torch.get_num_threads()}", flush=True)

    real_backend = det.backend
    det.backend = MemoBackend(real_backend)
    stream_seconds = sum(len(f) * det.grid_config.feat_stride / v.fps for v, f in zip(videos, feats))
    hops = [int(h) for h in args.hops.split(",")]
    rows = []

    def measure(name, hop, changes):
        t = time.perf_counter()
        computed = det.backend.computed
        streamed = stream_videos(det, videos, feats, changes, hop)
        m = stream_metrics(gt, streamed, subset="validation")
        policy = EmissionPolicy().replace(hop=hop, **changes)
        row = {"policy": name, "hop": hop, "settings": {k: getattr(policy, k) for k in policy.__dataclass_fields__},
               "average_mAP": m["average_mAP"], "ratio": m["average_mAP"] / offline.average_mAP,
               "mean_end_delay_s": m["mean_end_delay_s"], "end_delay_s": m["end_delay_s"], "mAP": m["mAP"],
               "detections": m["detections"],
               "new_windows_computed": det.backend.computed - computed, "seconds": time.perf_counter() - t}
        rows.append(row)
        print(f"hop {hop:3d} | {name:58s} | mAP {row['average_mAP']:.4f} ({row['ratio']:.3f}x) | delay "
              f"{row['mean_end_delay_s']:.2f} s (@0.5 {row['end_delay_s'][2]:.2f}) | {row['detections']} det | "
              f"{row['seconds']:.0f} s", flush=True)
        return streamed

    if args.background_rule or args.only_background_rule:
        det.backend = real_backend
        rows += background_rule_rows(det, videos, feats, gt, offline.average_mAP, DEFAULT_HOP, [
            ("(c') background evidence: 2..4 snippets, P(bg) >= 0.5", 2, 4, 0.5),
            ("(c') background evidence: 2..6 snippets, P(bg) >= 0.5", 2, 6, 0.5),
            ("(c') background evidence: 4..8 snippets, P(bg) >= 0.5", 4, 8, 0.5),
            ("(c') background evidence: 2..4 snippets, P(bg) >= 0.8", 2, 4, 0.8)])
        det.backend = MemoBackend(real_backend)
    # The finest hop first: its windows contain the coarser hops' (same positions), so they come from the memo.
    for hop in ([] if args.only_background_rule else sorted(hops)):
        for name, changes in policies(hop)[:6]:
            measure(name, hop, changes)
    if not args.only_background_rule:
        for name, changes in policies(DEFAULT_HOP)[6:]:
            measure(name, DEFAULT_HOP, changes)

    check = None
    if args.check_default:
        det.backend = real_backend
        memo_rows = {r["hop"]: r for r in rows if r["policy"].startswith("(c) default")}
        streamed = stream_videos(det, videos, feats, {}, DEFAULT_HOP)
        m = stream_metrics(gt, streamed, subset="validation")
        check = {"average_mAP": m["average_mAP"], "memo_average_mAP": memo_rows[DEFAULT_HOP]["average_mAP"],
                 "same": m["average_mAP"] == memo_rows[DEFAULT_HOP]["average_mAP"]}
        print(f"default policy without the memo: average mAP {m['average_mAP']:.4f} (memo rows: "
              f"{check['memo_average_mAP']:.4f}; same: {check['same']})", flush=True)

    payload = {"ckpt": str(args.ckpt), "data": str(args.data), "backend": real_backend.name,
               "precision": getattr(real_backend, "precision", None), "videos": len(videos),
               "stream_seconds": stream_seconds, "offline_average_mAP": offline.average_mAP,
               "offline_mAP": [float(x) for x in offline.mAP], "offline_detections": offline_detections,
               "rows": rows, "default_check": check,
               "nan_rows": [r["policy"] for r in rows if math.isnan(r["mean_end_delay_s"])]}
    if args.out:
        from gsmt_fast.files import atomic_write_json

        atomic_write_json(args.out, payload)
        plot_curve(payload, args.out.with_suffix(".png"))
    return 0


def plot_curve(payload: dict, path: Path) -> None:
    """Streamed/offline mAP against mean end delay: one line per policy family over the hops, the variants at the
    default hop as points."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # the plot is a convenience; the JSON holds every number
        print("matplotlib not installed: no plot")
        return
    from gsmt_fast.files import atomic_path

    fig, ax = plt.subplots(figsize=(8, 5))
    families: dict[str, list] = {}
    for r in payload["rows"]:
        families.setdefault(r["policy"], []).append(r)
    for name, rows in families.items():
        rows = sorted(rows, key=lambda r: r["hop"])
        x, y = [r["mean_end_delay_s"] for r in rows], [r["ratio"] for r in rows]
        if len(rows) > 1:
            ax.plot(x, y, marker="o", label=name)
            for r in rows:
                ax.annotate(f"hop {r['hop']}", (r["mean_end_delay_s"], r["ratio"]), fontsize=7,
                            textcoords="offset points", xytext=(3, 3))
        else:
            ax.scatter(x, y, s=12, color="grey")
            ax.annotate(name.split(": ")[-1] if ": " in name else name, (x[0], y[0]), fontsize=6, color="grey",
                        textcoords="offset points", xytext=(3, -8))
    ax.axhline(0.9, color="red", lw=0.8, ls="--")
    ax.axvline(1.5, color="green", lw=0.8, ls="--")
    ax.axvline(2.5, color="red", lw=0.8, ls="--")
    ax.set_xlabel("mean end delay over true positives (s)")
    ax.set_ylabel("streamed / offline average mAP")
    ax.set_title(f"streaming on {Path(payload['data']).name}: offline {payload['offline_average_mAP']:.4f}")
    ax.set_xlim(0, min(6.0, max(r["mean_end_delay_s"] for r in payload["rows"]) + 0.3))
    if any(len(rows) > 1 for rows in families.values()):
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
