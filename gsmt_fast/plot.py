"""Timeline plot of one video: ground-truth instances and the top detections with their scores."""

from __future__ import annotations

from pathlib import Path

from .files import atomic_path

PLOT_FORMATS = ("png", "pdf", "svg")
MAX_TOP_K = 200  # rows of one readable timeline


def plot_timeline(results, annotations, video_id: str, out: str | Path, top_k: int = 10) -> Path:
    """Write a timeline: one row of ground truth, then the ``top_k`` detections (by score, ``1 <= top_k <= 200``),
    coloured by class. The format follows the file suffix: ``.png``, ``.pdf`` or ``.svg``."""
    out = Path(out)
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in PLOT_FORMATS:
        raise ValueError(f"--out {out}: the plot format follows the suffix, one of {', '.join(PLOT_FORMATS)}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= MAX_TOP_K:
        raise ValueError(f"top_k must be an integer in [1, {MAX_TOP_K}], got {top_k!r}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .data.annotations import canonical_video_id, load_annotations
    from .results import read_results

    vid = canonical_video_id(video_id)
    aset = load_annotations(annotations) if not hasattr(annotations, "videos") else annotations
    if vid not in aset.videos:
        raise ValueError(f"video {video_id!r} is not in the annotations")
    gt = aset.videos[vid]
    preds = read_results(results).get(vid, [])
    preds = sorted(preds, key=lambda r: -r["score"])[:top_k]
    cmap = plt.get_cmap("tab20")
    color = {c: cmap(i % 20) for i, c in enumerate(aset.classes)}

    rows = 1 + len(preds)
    fig, ax = plt.subplots(figsize=(12, 0.9 + 0.35 * rows))
    for (s, e), lab in zip(gt.segments, gt.labels):
        ax.broken_barh([(s, e - s)], (rows - 1 + 0.1, 0.8), color=color.get(lab, "gray"))
        ax.text(s, rows - 1 + 0.5, lab, va="center", fontsize=7)
    for i, p in enumerate(preds):
        y = rows - 2 - i
        s, e = p["segment"]
        ax.broken_barh([(s, e - s)], (y + 0.15, 0.7), color=color.get(p["label"], "gray"), alpha=0.8)
        ax.text(e, y + 0.5, f" {p['label']} {p['score']:.2f}", va="center", fontsize=7)
    ax.set_yticks([rows - 0.5] + [rows - 1.5 - i for i in range(len(preds))])
    ax.set_yticklabels(["ground truth"] + [f"det {i + 1}" for i in range(len(preds))], fontsize=7)
    ax.set_xlim(0, gt.duration)
    ax.set_ylim(0, rows)
    ax.set_xlabel("time (s)")
    ax.set_title(f"video {vid}: ground truth and top {len(preds)} detections")
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format=fmt, dpi=110)
    plt.close(fig)
    return out
