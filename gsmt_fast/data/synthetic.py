"""The synthetic benchmark (docs/DESIGN.md, "Data formats"): a seeded dataset written in the real on-disk formats.

``generate("thumos-like", out)`` writes

- ``out/annotations.json``: ActionFormer JSON (per-video ``fps``, ``label_id``) for ``thumos-like``, the official
  ActivityNet JSON for ``anet-like``;
- ``out/features/<id>.npy`` (``thumos-like``) or ``out/features/v_<id>.npz`` with key ``feats`` (``anet-like``, so the
  ``v_`` handling of the readers is exercised);
- ``out/dataset.json``: what a trainer needs to use it (paths, splits, grid, input mode, T, d, classes).

Both profiles use the splits ``training`` and ``validation``. (Real THUMOS14 trains on its ``validation`` subset and
tests on ``test``; the synthetic data keeps the ActivityNet names so one config shape fits both profiles.)

Feature model, per native snippet t (float32)::

    x_t = sum over instances covering t of  amp_i * env_t * proto[c_i]      (foreground)
        + sum over distractor bursts covering t of  amp_b * env_t * dir_b  (background that looks like something)
        + drift_t                                                           (AR(1) in a random low-dim subspace)
        + noise_t                                                           (white Gaussian, noise_sigma per dim)

Class prototypes are unit vectors; classes 2j and 2j+1 share a component so that cos(proto[2j], proto[2j+1]) equals
``pair_shared``: one snippet often cannot tell the pair apart, the mean over an instance can. The envelope ramps
linearly over ``ramp`` snippets at both ends of an instance and fluctuates per snippet. Distractor bursts run either
along a direction orthogonal to every prototype or weakly along a class prototype, so thresholding single snippets
gives false positives. Annotation segments come from the snippet grid (:mod:`gsmt_fast.data.grid`) with a small
boundary jitter. Everything derives from the seed: the same seed gives byte-identical files.
"""

from __future__ import annotations

import copy
import math
import os
import string
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from gsmt_fast.data.annotations import (
    AnnotationSet,
    VideoAnnotation,
    save_annotations_actionformer,
    save_annotations_activitynet,
)
from gsmt_fast.data.features import write_features
from gsmt_fast.data.grid import SnippetGrid
from gsmt_fast.files import atomic_write_json

TRAIN_SPLIT = "training"
VAL_SPLIT = "validation"
ANNOTATIONS_NAME = "annotations.json"
FEATURES_DIR = "features"
DATASET_NAME = "dataset.json"

# Every knob of the generator. Lengths are in native snippets unless named in seconds. Tune difficulty here.
# Window-mode profiles use fps_choices and video_snippets; resize-mode profiles use native_fps and video_seconds.
# Calibration (seed 0, full size): a per-snippet linear classifier thresholded into runs reaches an average mAP
# (tIoU 0.3:0.7) of ~0.06 (thumos-like) / ~0.04 (anet-like), a 2-layer temporal conv net ~0.78 / ~0.91.
PROFILES: dict[str, dict[str, Any]] = {
    "thumos-like": {
        # --- on-disk layout
        "annotation_format": "actionformer",  # per-video fps and label_id
        "feature_file": "{vid}.npy",
        # --- model-facing settings written to dataset.json
        "grid": {"convention": "stride", "feat_stride": 4, "num_frames": 16},
        "input_mode": "window",
        "temporal_scale": 256,
        # --- dataset size
        "num_classes": 10,
        "feature_dim": 64,
        "num_train": 200,
        "num_val": 40,
        # --- videos and instances
        "fps_choices": [30.0],  # each video draws its fps from this list
        "video_snippets": [300, 900],  # uniform
        "instances_per_video": [3, 12],  # uniform, inclusive
        "instance_snippets": [4, 40],  # log-uniform
        "coverage": None,  # [lo, hi] fraction of the video covered by instances (None: use instance_snippets)
        "min_instance_snippets": 3,  # shortest instance when coverage is used
        "min_gap": 1,  # background snippets between two instances, at least
        "close_pair_prob": 0.25,  # chance that an instance repeats the previous class right after it...
        "close_gap": [1, 3],  # ...separated by only this many background snippets
        "one_class_per_video": False,
        # --- feature model
        "amplitude": 1.0,
        "amplitude_jitter": 0.2,  # per-instance amplitude is amplitude * (1 + U(-j, j))
        "pair_shared": 0.6,  # cosine between the prototypes of the two classes of a pair
        "ramp": 2.0,  # snippets over which the envelope rises 0 -> 1 (and falls at the end)
        "envelope_fluctuation": 0.3,  # envelope *= max(0, 1 + f * N(0, 1)) per snippet
        "drift_dim": 4,
        "drift_coef": 0.98,  # AR(1) coefficient of the background drift
        "drift_sigma": 1.0,  # stationary std of each drift coordinate
        "noise_sigma": 0.25,  # white noise std per feature dimension (0.25: linear per-snippet avg mAP ~0.06)
        "distractor_rate": 0.015,  # expected bursts per background snippet
        "distractor_snippets": [2, 6],  # uniform, inclusive
        "distractor_class_prob": 0.5,  # chance that a burst runs along a (random) class prototype...
        "distractor_class_amp": 0.4,  # ...at this fraction of the amplitude
        "distractor_amp": 1.0,  # otherwise along a non-class direction at this fraction of the amplitude
        "distractor_directions": 4,
        "boundary_jitter": 0.25,  # annotation boundaries move by at most this many snippets
    },
    "anet-like": {
        "annotation_format": "activitynet",
        "feature_file": "v_{vid}.npz",
        # Native features: one 16-frame snippet every 16 frames at native_fps, variable length; the model resizes
        # each video to temporal_scale snippets.
        "grid": {"convention": "resize", "feat_stride": 16, "num_frames": 16},
        "input_mode": "resize",
        "temporal_scale": 100,
        "native_fps": 30.0,
        "num_classes": 8,
        "feature_dim": 64,
        "num_train": 240,
        "num_val": 60,
        "video_seconds": [30.0, 200.0],  # uniform
        "instances_per_video": [1, 3],
        "coverage": [0.1, 0.8],  # total instance length / video length, uniform
        "min_instance_snippets": 3,
        "min_gap": 1,
        "close_pair_prob": 0.0,
        "close_gap": [1, 3],
        "one_class_per_video": True,  # ActivityNet videos show one activity
        "amplitude": 1.0,
        "amplitude_jitter": 0.2,
        "pair_shared": 0.6,
        "ramp": 2.0,
        "envelope_fluctuation": 0.3,
        "drift_dim": 4,
        "drift_coef": 0.98,
        "drift_sigma": 1.0,
        "noise_sigma": 0.25,
        "distractor_rate": 0.015,
        "distractor_snippets": [2, 6],
        "distractor_class_prob": 0.5,
        "distractor_class_amp": 0.4,
        "distractor_amp": 1.0,
        "distractor_directions": 4,
        "boundary_jitter": 0.25,
    },
}


def class_names(num_classes: int) -> list[str]:
    """``action00a, action00b, action01a, ...``: the two classes of a confusable pair share their number."""
    return [f"action{c // 2:02d}{'ab'[c % 2]}" for c in range(num_classes)]


def _profile(name: str, overrides: dict[str, Any] | None) -> dict[str, Any]:
    if name not in PROFILES:
        raise ValueError(f"unknown synthetic profile {name!r}; available: {sorted(PROFILES)}")
    prof = copy.deepcopy(PROFILES[name])
    for key, value in (overrides or {}).items():
        if key not in prof:
            raise ValueError(f"unknown knob {key!r} for synthetic profile {name!r}; knobs: {sorted(prof)}")
        prof[key] = value
    return prof


# ------------------------------------------------------------------------------------------------------ the world


class _World:
    """What all videos of one dataset share: prototypes, distractor directions, the drift subspace."""

    def __init__(self, prof: dict[str, Any], rng: np.random.Generator):
        k, d = prof["num_classes"], prof["feature_dim"]
        num_pairs = k // 2
        needed = num_pairs + k + prof["distractor_directions"]
        if d < needed:
            raise ValueError(f"feature_dim {d} is too small for {k} classes and the distractors (needs >= {needed})")
        # An orthonormal basis: shared pair components, per-class components and distractor directions are all
        # mutually orthogonal, so the pair cosine is exactly pair_shared and distractors are truly non-class.
        basis, _ = np.linalg.qr(rng.standard_normal((d, d)))
        basis = basis.T  # rows are the basis vectors
        shared, own = basis[:num_pairs], basis[num_pairs : num_pairs + k]
        rho = prof["pair_shared"]
        self.prototypes = np.empty((k, d))
        for c in range(k):
            if c // 2 < num_pairs:
                self.prototypes[c] = math.sqrt(rho) * shared[c // 2] + math.sqrt(1.0 - rho) * own[c]
            else:  # the odd class out has no partner
                self.prototypes[c] = own[c]
        self.distractor_dirs = basis[num_pairs + k : needed]
        # The drift subspace is random with respect to the class directions, so drift leaks into them.
        drift, _ = np.linalg.qr(rng.standard_normal((d, prof["drift_dim"])))
        self.drift_basis = drift.T  # (drift_dim, d)


# ------------------------------------------------------------------------------------------------------ layouts


def _split_gaps(rng, background: int, fixed: dict[int, int], num_instances: int, min_gap: int) -> list[int] | None:
    """Background lengths before, between and after ``num_instances`` instances (``num_instances + 1`` numbers).

    ``fixed`` holds prescribed internal gaps (index i is the gap before instance i); other internal gaps get at
    least ``min_gap``; the two edges may be empty. None when the background is too short.
    """
    free_internal = [i for i in range(1, num_instances) if i not in fixed]
    excess = background - sum(fixed.values()) - min_gap * len(free_internal)
    if excess < 0:
        return None
    free = [0, *free_internal, num_instances]
    shares = rng.multinomial(excess, rng.dirichlet(np.ones(len(free))))
    gaps = [0] * (num_instances + 1)
    for i, gap in fixed.items():
        gaps[i] = gap
    for i, share in zip(free, shares):
        gaps[i] = int(share) + (min_gap if 0 < i < num_instances else 0)
    return gaps


def _layout(rng: np.random.Generator, n: int, prof: dict[str, Any]) -> list[tuple[int, int, int]]:
    """Instances ``(first_snippet, last_snippet, class)`` of one video of ``n`` native snippets, in time order."""
    k = prof["num_classes"]
    lo, hi = prof["instances_per_video"]
    m = int(rng.integers(lo, hi + 1))
    if prof["coverage"] is not None:
        min_len = prof["min_instance_snippets"]
        m = max(1, min(m, (n + prof["min_gap"]) // (min_len + prof["min_gap"])))
        foreground = int(round(rng.uniform(*prof["coverage"]) * n))
        foreground = min(max(foreground, m * min_len), n - prof["min_gap"] * (m - 1))
        extra = rng.multinomial(foreground - m * min_len, rng.dirichlet(np.full(m, 2.0)))
        lengths = [min_len + int(e) for e in extra]
    else:
        log_lo, log_hi = np.log(prof["instance_snippets"])
        lengths = [int(round(math.exp(rng.uniform(log_lo, log_hi)))) for _ in range(m)]

    if prof["one_class_per_video"]:
        classes = [int(rng.integers(k))] * m
    else:
        classes = [int(rng.integers(k)) for _ in range(m)]
    fixed: dict[int, int] = {}
    for i in range(1, m):
        if rng.random() < prof["close_pair_prob"]:
            classes[i] = classes[i - 1]
            fixed[i] = int(rng.integers(prof["close_gap"][0], prof["close_gap"][1] + 1))

    # Drop instances from the end until everything fits in the video.
    while True:
        gaps = _split_gaps(rng, n - sum(lengths), fixed, len(lengths), prof["min_gap"])
        if gaps is not None:
            break
        fixed.pop(len(lengths) - 1, None)
        lengths.pop()
        classes.pop()
        if not lengths:
            raise ValueError(f"a video of {n} snippets cannot hold one instance; check the profile's lengths")

    instances, t = [], 0
    for i, (length, c) in enumerate(zip(lengths, classes)):
        t += gaps[i]
        instances.append((t, t + length - 1, c))
        t += length
    assert t + gaps[-1] == n
    return instances


# ------------------------------------------------------------------------------------------------------ features


def _envelope(rng: np.random.Generator, length: int, prof: dict[str, Any]) -> np.ndarray:
    k = np.arange(length) + 0.5
    ramp = max(prof["ramp"], 1e-6)
    env = np.clip(np.minimum(k, length - k) / ramp, 0.0, 1.0)
    return env * np.maximum(0.0, 1.0 + prof["envelope_fluctuation"] * rng.standard_normal(length))


def _features(
    rng: np.random.Generator, n: int, instances: list[tuple[int, int, int]], world: _World, prof: dict[str, Any]
) -> np.ndarray:
    d = prof["feature_dim"]
    x = prof["noise_sigma"] * rng.standard_normal((n, d))

    coef, sigma = prof["drift_coef"], prof["drift_sigma"]
    innovations = sigma * math.sqrt(1.0 - coef**2) * rng.standard_normal((n, prof["drift_dim"]))
    drift = np.empty_like(innovations)
    state = sigma * rng.standard_normal(prof["drift_dim"])  # start in the stationary distribution
    for t in range(n):
        state = coef * state + innovations[t]
        drift[t] = state
    x += drift @ world.drift_basis

    amp = prof["amplitude"]
    background = np.ones(n, dtype=bool)
    for a, b, c in instances:
        scale = amp * (1.0 + prof["amplitude_jitter"] * rng.uniform(-1.0, 1.0))
        x[a : b + 1] += scale * _envelope(rng, b - a + 1, prof)[:, None] * world.prototypes[c]
        background[max(0, a - 1) : b + 2] = False  # keep bursts one snippet away from instances

    num_bursts = rng.poisson(prof["distractor_rate"] * background.sum())
    lo, hi = prof["distractor_snippets"]
    for _ in range(num_bursts):
        length = int(rng.integers(lo, hi + 1))
        starts = np.flatnonzero(np.convolve(background, np.ones(length), mode="valid") == length)
        if starts.size == 0:
            continue
        start = int(rng.choice(starts))
        if rng.random() < prof["distractor_class_prob"]:
            direction = world.prototypes[rng.integers(len(world.prototypes))] * prof["distractor_class_amp"]
        else:
            direction = world.distractor_dirs[rng.integers(len(world.distractor_dirs))] * prof["distractor_amp"]
        x[start : start + length] += amp * _envelope(rng, length, prof)[:, None] * direction
        background[start : start + length] = False
    return x.astype(np.float32)


def _segments_seconds(rng, grid: SnippetGrid, instances, duration: float, jitter: float) -> np.ndarray:
    if not instances:
        return np.zeros((0, 2))
    first = np.array([a for a, _, _ in instances])
    last = np.array([b for _, b, _ in instances])
    segments = grid.runs_to_seconds(first, last)
    segments = segments + rng.uniform(-jitter, jitter, size=segments.shape) * grid.scale
    segments = np.clip(np.round(segments, 4), 0.0, duration)
    return segments


# ------------------------------------------------------------------------------------------------------ driver


def _video_ids(rng: np.random.Generator, profile: str, subsets: list[str]) -> list[str]:
    if profile == "anet-like":
        # YouTube-like 11-character ids; no "_" so that none can start with "v_".
        alphabet = np.array(list(string.ascii_letters + string.digits + "-"))
        ids: list[str] = []
        seen: set[str] = set()
        while len(ids) < len(subsets):
            vid = "".join(rng.choice(alphabet, size=11))
            if vid not in seen:
                seen.add(vid)
                ids.append(vid)
        return ids
    counters: dict[str, int] = {}
    ids = []
    for subset in subsets:
        counters[subset] = counters.get(subset, 0) + 1
        ids.append(f"video_{subset}_{counters[subset]:07d}")
    return ids


def _split_counts(prof: dict[str, Any], num_videos: int | None) -> tuple[int, int]:
    num_train, num_val = prof["num_train"], prof["num_val"]
    if num_videos is None:
        return num_train, num_val
    if num_videos < 2:
        raise ValueError(f"num_videos must be >= 2 (one training and one validation video), got {num_videos}")
    train = int(round(num_videos * num_train / (num_train + num_val)))
    train = min(max(train, 1), num_videos - 1)
    return train, num_videos - train


def _prepare_output(out_dir: Path) -> Path:
    """Create ``out_dir/features``; stale feature files of an earlier synthetic dataset there are removed."""
    features_dir = out_dir / FEATURES_DIR
    if features_dir.is_dir() and any(features_dir.iterdir()):
        if not (out_dir / DATASET_NAME).is_file():
            raise FileExistsError(
                f"{features_dir} already holds files that were not written by the synthetic generator; "
                "choose an empty output folder"
            )
        for old in features_dir.iterdir():
            if old.is_file() and old.suffix in (".npy", ".npz"):
                old.unlink()
    features_dir.mkdir(parents=True, exist_ok=True)
    return features_dir


def generate(
    profile: str,
    out_dir: str | os.PathLike,
    seed: int = 0,
    num_videos: int | None = None,
    progress: bool = True,
    overrides: dict[str, Any] | None = None,
) -> Path:
    """Write the synthetic dataset ``profile`` to ``out_dir`` and return ``out_dir``.

    ``num_videos`` replaces the profile's video count (split in the profile's train/validation proportion);
    ``overrides`` replaces profile knobs (see :data:`PROFILES`). The same arguments give byte-identical files.
    """
    prof = _profile(profile, overrides)
    out_dir = Path(out_dir)
    num_train, num_val = _split_counts(prof, num_videos)
    subsets = [TRAIN_SPLIT] * num_train + [VAL_SPLIT] * num_val
    names = class_names(prof["num_classes"])

    world_rng = np.random.default_rng([seed, 0])
    world = _World(prof, world_rng)
    video_ids = _video_ids(world_rng, profile, subsets)
    features_dir = _prepare_output(out_dir)

    videos: dict[str, VideoAnnotation] = {}
    for index in tqdm(range(len(subsets)), desc=f"synth {profile}", unit="video", disable=not progress):
        rng = np.random.default_rng([seed, 1, index])  # one stream per video: video i does not depend on others
        vid = video_ids[index]
        if prof["input_mode"] == "window":
            fps = float(prof["fps_choices"][rng.integers(len(prof["fps_choices"]))])
            grid_cfg = prof["grid"]
            n = int(rng.integers(prof["video_snippets"][0], prof["video_snippets"][1] + 1))
            native_grid = SnippetGrid.stride(fps, grid_cfg["feat_stride"], grid_cfg["num_frames"])
            fps_written: float | None = fps
        else:
            fps = prof["native_fps"]
            stride = prof["grid"]["feat_stride"]
            seconds = rng.uniform(*prof["video_seconds"])
            n = max(1, int(round(seconds * fps / stride)))
            native_grid = SnippetGrid.stride(fps, stride, prof["grid"]["num_frames"])
            fps_written = None  # the official ActivityNet format has no fps
        duration = round(float(native_grid.to_seconds(n)), 4)  # end of the last native snippet

        instances = _layout(rng, n, prof)
        features = _features(rng, n, instances, world, prof)
        segments = _segments_seconds(rng, native_grid, instances, duration, prof["boundary_jitter"])
        labels = [names[c] for _, _, c in instances]
        videos[vid] = VideoAnnotation(vid, subsets[index], duration, fps_written, segments, labels)
        write_features(features_dir / prof["feature_file"].format(vid=vid), features)

    annotations = AnnotationSet(videos, names)
    if prof["annotation_format"] == "actionformer":
        save_annotations_actionformer(annotations, out_dir / ANNOTATIONS_NAME)
    else:
        save_annotations_activitynet(annotations, out_dir / ANNOTATIONS_NAME)

    # Written last: its presence marks a complete dataset.
    atomic_write_json(
        out_dir / DATASET_NAME,
        {
            "name": f"synthetic-{profile}-seed{seed}",
            "profile": profile,
            "seed": seed,
            "annotations": ANNOTATIONS_NAME,
            "features": FEATURES_DIR,
            "train_split": TRAIN_SPLIT,
            "val_split": VAL_SPLIT,
            "grid": dict(prof["grid"]),
            "input_mode": prof["input_mode"],
            "temporal_scale": prof["temporal_scale"],
            "feature_dim": prof["feature_dim"],
            "classes": names,
        },
    )
    return out_dir


def synth_main(profile: str, out: str | os.PathLike, seed: int = 0, videos: int | None = None) -> Path:
    """CLI helper: generate with a progress bar and print a one-paragraph summary."""
    out_dir = generate(profile, out, seed=seed, num_videos=videos, progress=True)
    num_train, num_val = _split_counts(_profile(profile, None), videos)
    print(
        f"wrote synthetic {profile} dataset (seed {seed}) to {out_dir}: {num_train} {TRAIN_SPLIT} + {num_val} "
        f"{VAL_SPLIT} videos; description in {out_dir / DATASET_NAME}"
    )
    return out_dir


__all__ = ["PROFILES", "generate", "synth_main", "class_names", "TRAIN_SPLIT", "VAL_SPLIT"]
