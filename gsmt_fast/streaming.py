"""Real-time streaming localization: :class:`StreamSession` (one live stream) and :class:`StreamPool` (many streams
batched into one model call per tick). Usage and the emission rule in docs/STREAMING.md.

A stream is a sequence of native snippet features (window mode). The session keeps the last T snippets and runs the
model every ``hop`` snippets, at the fixed stream positions ``hop, 2·hop, …`` (position p: the window of snippets
``[max(0, p − T), p)``), through the backend's one call path (``backend.run_windows`` with ``final=True``: the
window's detections after its own SoftNMS). An :class:`EmissionPolicy` turns the detections of consecutive windows
into final detections; each one is reported once, with its ``gentime``, and never changed.

Decisions (one line each; the measurements are in bench/RESULTS.md, "Streaming"):

- The model runs at fixed stream positions, every ``hop`` snippets, whatever the chunking of the pushes.
- Default hop 8: the knee of the measured delay/cost curve (hop 4 doubles the model work for a little less delay).
- ``gentime`` is the last frame of the newest snippet's clip (``((p − 1)·feat_stride + num_frames) / fps``): a
  feature cannot exist before that frame was captured.
- Each end time is decided within ``horizon`` snippets after it became old enough, never later: later windows
  re-emit shifted copies of long-gone instances, which cost most of the naive rule's accuracy.
- Confident detections (score ≥ ``confident_score``) are final once their end is ``margin`` snippets old: waiting does
  not improve them, it only adds delay.
- Other detections wait ``low_score_extra_margin`` more snippets and must persist over ``stable_hops`` consecutive
  windows: premature and spurious hypotheses are mostly among them.
- Default margin 2, not 0: a detection ending at the newest snippet is usually a still-running action cut at the
  window's edge.
- An emitted detection keeps the score of the window that emitted it.
- Suppression: the earlier emission of a class wins above tIoU ``suppress_iou`` (0.7); lower overlaps survive, as
  offline gaussian SoftNMS keeps alternative hypotheses.
- ``close()`` runs the window at the stream's end and emits everything still undecided: the stream is over.
- Segments are clamped at 0 only: the stream's duration is unknown while it runs.
- A batch of windows may sum in another float32 order than a window alone, so scores can differ in their last bits
  between two chunkings of one stream (bit-identical with ``batch_size=1``); segments and decisions are the same
  except for a score within that rounding of a threshold.
"""

from __future__ import annotations

import itertools
import json
import os
import time
from collections import deque
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from typing import NamedTuple

import numpy as np

from .backends.base import WindowDetections
from .data.grid import SnippetGrid
from .data.windows import Window
from .detector import DetectionResult, _as_array
from .postprocess.reference import segment_iou

DEFAULT_HOP = 8
DEFAULT_MARGIN = 2
_EPS = 1e-6


@dataclass(frozen=True)
class EmissionPolicy:
    """When a streamed detection becomes final (module docstring). Lengths are in native snippets.

    ``hop``: the model runs every ``hop`` snippets. A detection scoring at least ``confident_score`` is emitted by the
    first window in which its end lies ``margin`` snippets before the newest snippet; any other detection needs
    ``margin + low_score_extra_margin`` snippets and ``stable_hops`` consecutive windows predicting it (same class,
    tIoU ≥ ``match_iou``). Each end is decided within ``horizon`` snippets after that (default ``2·hop``), never
    later. An emitted detection drops a later one of the same class above tIoU ``suppress_iou``.
    """

    hop: int = DEFAULT_HOP
    margin: int = DEFAULT_MARGIN
    confident_score: float = 0.95
    low_score_extra_margin: int = 6
    stable_hops: int = 2
    horizon: int | None = None
    match_iou: float = 0.7
    suppress_iou: float = 0.7

    def __post_init__(self):
        for name in ("hop", "margin", "low_score_extra_margin", "stable_hops", "horizon"):
            value = getattr(self, name)
            if value is None and name == "horizon":
                continue
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise TypeError(f"{name} must be an integer number of snippets, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.hop < 1:
            raise ValueError(f"hop must be >= 1 snippet, got {self.hop}")
        if self.margin < 0 or self.low_score_extra_margin < 0:
            raise ValueError(f"margin and low_score_extra_margin must be >= 0 snippets, got {self.margin} and "
                             f"{self.low_score_extra_margin}")
        if self.horizon is not None and self.horizon < self.hop:
            raise ValueError(f"horizon ({self.horizon}) must be >= hop ({self.hop}): otherwise some end times are "
                             "never looked at")
        if self.stable_hops < 1:
            raise ValueError(f"stable_hops must be >= 1, got {self.stable_hops}")
        for name in ("match_iou", "suppress_iou"):
            value = float(getattr(self, name))
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must lie in [0, 1], got {value}")
            object.__setattr__(self, name, value)
        score = float(self.confident_score)
        if not score >= 0.0:
            raise ValueError(f"confident_score must be >= 0 (above 1: no detection counts as confident), got {score}")
        object.__setattr__(self, "confident_score", score)

    @property
    def decision_span(self) -> int:
        """Snippets during which an end time can be decided: ``horizon``, or ``2·hop`` when it is None."""
        return self.horizon if self.horizon is not None else 2 * self.hop

    def replace(self, **changes) -> EmissionPolicy:
        names = [f.name for f in fields(self)]
        unknown = sorted(set(changes) - set(names))
        if unknown:
            raise TypeError(f"unknown emission policy setting(s) {unknown}; known: {names}")
        return EmissionPolicy(**{**{name: getattr(self, name) for name in names}, **changes})


def make_policy(hop=None, margin=None, policy: EmissionPolicy | dict | None = None) -> EmissionPolicy:
    """The policy of ``policy`` (an :class:`EmissionPolicy`, a dict of its fields or None: the defaults) with ``hop``
    and ``margin`` overriding it when given."""
    if policy is None:
        base = EmissionPolicy()
    elif isinstance(policy, EmissionPolicy):
        base = policy
    elif isinstance(policy, dict):
        base = EmissionPolicy().replace(**policy)
    else:
        raise TypeError(f"policy must be an EmissionPolicy, a dict or None, got {type(policy).__name__}")
    changes = {k: v for k, v in (("hop", hop), ("margin", margin)) if v is not None}
    return base.replace(**changes) if changes else base


class StreamDetection(NamedTuple):
    """One streamed detection: seconds, class name, score, and the stream time at which it was emitted."""

    start: float
    end: float
    label: str
    score: float
    gentime: float


@dataclass
class StreamDetections(DetectionResult):
    """Detections that became final, in emission order, with ``gentime (N,)``: the stream time (seconds) at which
    each was emitted (see the module docstring). Iterating gives one :class:`StreamDetection` per row."""

    gentime: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def __iter__(self):
        for d, t in zip(super().__iter__(), self.gentime):
            yield StreamDetection(*d, float(t))

    def to_records(self, with_gentime: bool = False) -> list[dict]:
        """Official results-JSON records ``{"label", "score", "segment"}``; ``with_gentime`` adds ``"gentime"``."""
        records = super().to_records()
        if with_gentime:
            for record, t in zip(records, self.gentime):
                record["gentime"] = float(t)
        return records

    @classmethod
    def concatenate(cls, parts: Sequence[StreamDetections], class_names=None, video_id=None) -> StreamDetections:
        """One result from consecutive parts of a stream (e.g. every push's and the close's), in order."""
        parts = list(parts)
        names = class_names if class_names is not None else (parts[0].class_names if parts else [])
        return cls(np.concatenate([p.segments for p in parts]).reshape(-1, 2) if parts else np.zeros((0, 2)),
                   np.concatenate([p.scores for p in parts]) if parts else np.zeros(0),
                   np.concatenate([p.labels for p in parts]) if parts else np.zeros(0, np.int64),
                   list(names), video_id,
                   np.concatenate([p.gentime for p in parts]) if parts else np.zeros(0))


class Emitter:
    """The online decision of one stream: the detections of its windows, in stream order, in; final detections out.

    :meth:`step` takes the output of the window at position ``p`` (segments in seconds, scores, labels as
    ``backend.run_windows`` returns them with ``final=True``); ``last=True`` marks the window at the stream's end.
    State kept: the previous window's hypotheses near the end of the stream and the emitted detections that a future
    window can still overlap, so memory is bounded however long the stream runs.
    """

    def __init__(self, policy: EmissionPolicy, grid: SnippetGrid, temporal_scale: int):
        self.policy = policy
        self.grid = grid  # the stream's grid (first snippet 0): seconds <-> stream snippet units
        self.temporal_scale = temporal_scale
        # Hypotheses of the previous window that may still be matched: ends within this many snippets of its end.
        self._track_span = policy.margin + policy.low_score_extra_margin + policy.decision_span + policy.hop
        self._previous = (np.zeros((0, 2)), np.zeros(0, np.int64), np.zeros(0, np.int64))  # segments, labels, runs
        self._emitted_segments = np.zeros((0, 2))
        self._emitted_labels = np.zeros(0, np.int64)

    def step(self, p: int, segments, scores, labels, last: bool = False):
        """Final detections decided at position ``p``: ``(segments (N, 2), scores (N,), labels (N,))`` in emission
        order (score descending, then start, end, label)."""
        pol = self.policy
        segments = np.asarray(segments, dtype=np.float64).reshape(-1, 2)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        # Candidate ends are whole snippet units; _EPS absorbs the rounding of the seconds <-> units round trip.
        end_units = self.grid.to_units(segments[:, 1])
        near = end_units > p - self._track_span - _EPS
        segments, scores, labels, end_units = segments[near], scores[near], labels[near], end_units[near]

        runs = np.ones(len(scores), dtype=np.int64)  # consecutive windows that predicted this hypothesis
        prev_segments, prev_labels, prev_runs = self._previous
        if len(scores) and len(prev_labels):
            same = (_iou_matrix(segments, prev_segments) >= pol.match_iou) & (labels[:, None] == prev_labels[None, :])
            runs = np.where(same, prev_runs[None, :], 0).max(axis=1, initial=0) + 1
        self._previous = (segments, labels, runs)

        rows = np.flatnonzero(self.decided(p, end_units, scores, runs, last))
        rows = rows[np.lexsort((labels[rows], segments[rows, 1], segments[rows, 0], -scores[rows]))]
        keep = []
        for r in rows:
            if not self._suppressed(segments[r], labels[r]):
                keep.append(r)
                self._emitted_segments = np.concatenate([self._emitted_segments, segments[r][None]])
                self._emitted_labels = np.concatenate([self._emitted_labels, labels[r:r + 1]])
        # Emitted detections that no future window can overlap are forgotten (future windows start after p - T).
        alive = self.grid.to_units(self._emitted_segments[:, 1]) > p + 1 - self.temporal_scale + _EPS
        self._emitted_segments, self._emitted_labels = self._emitted_segments[alive], self._emitted_labels[alive]
        keep = np.array(keep, dtype=np.int64)
        return segments[keep].reshape(-1, 2), scores[keep], labels[keep]

    def decided(self, p: int, end_units: np.ndarray, scores: np.ndarray, runs: np.ndarray, last: bool) -> np.ndarray:
        """Which hypotheses become final at position ``p`` (before suppression): ends in ``(p − margin − horizon,
        p − margin]`` with the margin of their score, confident or predicted by ``stable_hops`` windows; at the
        stream's end every end not yet past its horizon."""
        pol = self.policy
        confident = scores >= pol.confident_score
        margin = np.where(confident, pol.margin, pol.margin + pol.low_score_extra_margin)
        decided = end_units > p - margin - pol.decision_span + _EPS
        if not last:
            decided &= (end_units <= p - margin + _EPS) & (confident | (runs >= pol.stable_hops))
        return decided

    def _suppressed(self, segment, label) -> bool:
        same = self._emitted_labels == label
        if not same.any():
            return False
        return bool((segment_iou(segment, self._emitted_segments[same]) > self.policy.suppress_iou).any())


def _iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """tIoU of every row of ``a (N, 2)`` with every row of ``b (M, 2)`` (the rule of ``segment_iou``, vectorised)."""
    inter = np.maximum(0.0, np.minimum(a[:, None, 1], b[None, :, 1]) - np.maximum(a[:, None, 0], b[None, :, 0]))
    union = (a[:, 1] - a[:, 0])[:, None] + (b[:, 1] - b[:, 0])[None, :] - inter
    positive = union > 0
    iou = np.where(positive, inter / np.where(positive, union, 1.0), 0.0)
    both_points = ~positive
    return np.where(both_points, (a[:, None, 0] == b[None, :, 0]).astype(np.float64), iou)


def stream_time(p: int, fps: float, feat_stride: float, num_frames: float) -> float:
    """Stream time (seconds) once ``p`` snippets have arrived: the last frame of snippet p − 1's clip, i.e. its
    centre on the stride grid plus half a clip."""
    return _time_on_grid(SnippetGrid.stride(fps, feat_stride, num_frames), p, num_frames / (2.0 * fps))


def _time_on_grid(grid: SnippetGrid, p: int, half_clip_s: float) -> float:
    return 0.0 if p <= 0 else float(grid.to_seconds(p - 0.5)) + half_clip_s


def check_chunk(chunk, input_dim: int, what: str = "stream chunk") -> np.ndarray:
    """A pushed chunk as float32 ``(n, input_dim)`` (n ≥ 0), or a clear error (rank, feature dimension, dtype,
    NaN/inf) that leaves the caller's state untouched."""
    shape = getattr(chunk, "shape", None)
    if shape is not None and len(shape) == 2 and shape[0] == 0:
        if shape[1] != input_dim:
            raise ValueError(f"{what}: wrong feature dimension {shape[1]}; this model expects {input_dim}")
        return np.zeros((0, input_dim), dtype=np.float32)
    if shape is not None and len(shape) != 2:
        raise ValueError(f"{what}: features must have shape (num_snippets, {input_dim}), got {tuple(shape)} "
                         f"(one snippet is a (1, {input_dim}) array: x[None])")
    return _as_array(chunk, what, input_dim)


class _StreamState:
    """One stream's buffer, model schedule and emitter (shared by :class:`StreamSession` and :class:`StreamPool`).

    Pushed snippets wait in ``_pending`` until they are absorbed into ``_buffer`` (``2T`` rows, holding the newest
    snippets of the stream; the last T are shifted to the front when it is full, so each snippet is copied O(1)
    times). Absorption stops at each model position p, where the window ``[p − T, p)`` is cut (a copy: it must outlive
    later pushes until the model runs)."""

    def __init__(self, detector, fps, feat_stride, num_frames, policy: EmissionPolicy, stream_id=None):
        self.detector = detector
        grid_cfg = detector.grid_config
        fps = fps if fps is not None else grid_cfg.default_fps
        if fps is None:
            raise ValueError("a stream needs fps= (frames per second of the video the features come from)")
        self.fps = float(fps)
        self.feat_stride = float(feat_stride if feat_stride is not None else grid_cfg.feat_stride)
        self.num_frames = float(num_frames if num_frames is not None else grid_cfg.num_frames)
        self.grid = SnippetGrid.stride(self.fps, self.feat_stride, self.num_frames)
        if not self.num_frames > 0:
            raise ValueError(f"num_frames must be > 0, got {num_frames}")
        self.policy = policy
        self.stream_id = stream_id
        self.temporal_scale = detector.model_config.temporal_scale
        self.input_dim = detector.model_config.input_dim
        self.emitter = Emitter(policy, self.grid, self.temporal_scale)
        self._buffer = np.zeros((2 * self.temporal_scale, self.input_dim), dtype=np.float32)
        self._buffered = 0  # valid rows of _buffer: the snippets [absorbed - _buffered, absorbed)
        self._pending: deque[np.ndarray] = deque()
        self.received = 0  # snippets pushed
        self.absorbed = 0  # snippets moved into the buffer
        self.last_run = 0  # position of the last window cut (0: none)
        self._last_output = None  # (position, WindowDetections) of the last window run
        self.closing = False
        self.closed = False

    def time_at(self, p: int) -> float:
        return _time_on_grid(self.grid, p, self.num_frames / (2.0 * self.fps))

    def add(self, chunk, keep_copy: bool) -> None:
        """Queue a checked chunk; ``keep_copy``: it waits beyond this call (a pool's tick), so it must not share
        memory with the caller's array, which the caller may reuse."""
        if self.closing or self.closed:
            raise RuntimeError(f"stream {self._name()} is closed: push to a new stream")
        a = check_chunk(chunk, self.input_dim, f"stream {self._name()}: chunk")
        if len(a):
            self._pending.append(a.copy() if keep_copy else a)
            self.received += len(a)

    def _name(self) -> str:
        return "session" if self.stream_id is None else repr(self.stream_id)

    def _absorb(self, k: int) -> None:
        t = self.temporal_scale
        while k > 0:
            head = self._pending[0]
            take = min(k, len(head))
            piece = head[:take]
            if take == len(head):
                self._pending.popleft()
            else:
                self._pending[0] = head[take:]
            if take >= t:
                self._buffer[:t] = piece[-t:]
                self._buffered = t
            else:
                if self._buffered + take > len(self._buffer):
                    keep = t - take
                    self._buffer[:keep] = self._buffer[self._buffered - keep:self._buffered]
                    self._buffered = keep
                self._buffer[self._buffered:self._buffered + take] = piece
                self._buffered += take
            self.absorbed += take
            k -= take

    def _window(self) -> Window:
        n = min(self._buffered, self.temporal_scale)
        first = self.absorbed - n
        return Window(first, self._buffer[self._buffered - n:self._buffered].copy(),
                      SnippetGrid.stride(self.fps, self.feat_stride, self.num_frames, first_snippet=first))

    def due_windows(self, limit: int | None = None) -> list[tuple[int, Window, bool]]:
        """The windows due since the last call, ``(position, window, last)``, at most ``limit``; a closing stream
        ends with its window at the stream's end (``last=True``) once every pushed snippet is in."""
        hop = self.policy.hop
        out = []
        while limit is None or len(out) < limit:
            p = (self.absorbed // hop + 1) * hop
            if p > self.received:
                self._absorb(self.received - self.absorbed)
                if self.closing and self.received > self.last_run:
                    out.append((self.received, self._window(), True))
                    self.last_run = self.received
                break
            self._absorb(p - self.absorbed)
            out.append((p, self._window(), False))
            self.last_run = p
        return out

    def consume(self, p: int, detections: WindowDetections, last: bool):
        """Emit what the window at ``p`` decides; returns ``(segments, scores, labels, gentime)``."""
        self._last_output = (p, detections)
        segments, scores, labels = self.emitter.step(p, detections.segments, detections.scores, detections.labels,
                                                     last=last)
        if last:
            self.closed = True
        return segments, scores, labels, np.full(len(scores), self.time_at(p))

    def flush_without_window(self):
        """Close a stream whose last window already ran (its length is a multiple of hop, or it is empty): the last
        output is decided again as the stream's end."""
        if self._last_output is None:
            self.closed = True
            return np.zeros((0, 2)), np.zeros(0), np.zeros(0, np.int64), np.zeros(0)
        return self.consume(*self._last_output, last=True)

    def result(self, parts) -> StreamDetections:
        parts = [part for part in parts if len(part[1])]
        if parts:
            segments = np.maximum(np.concatenate([q[0] for q in parts]).reshape(-1, 2), 0.0)
            scores = np.concatenate([q[1] for q in parts])
            labels = np.concatenate([q[2] for q in parts])
            gentime = np.concatenate([q[3] for q in parts])
        else:
            segments, scores, labels, gentime = np.zeros((0, 2)), np.zeros(0), np.zeros(0, np.int64), np.zeros(0)
        return StreamDetections(segments, scores, labels, self.detector.class_names,
                                None if self.stream_id is None else str(self.stream_id), gentime)


class StreamSession:
    """One live stream over a :class:`gsmt_fast.Detector` (``detector.stream(...)``).

    ``push(chunk)`` takes the next ``(n, d_in)`` snippet features (any n ≥ 0) and returns the detections that became
    final (a :class:`StreamDetections`); ``close()`` runs the last window and returns the rest. The model runs every
    ``hop`` snippets at fixed stream positions, in batches of the detector's ``batch_size`` windows when one push
    makes several due. A bad chunk raises ``ValueError``/``TypeError`` and changes nothing.
    """

    def __init__(self, detector, fps=None, feat_stride=None, num_frames=None, hop=None, margin=None,
                 policy: EmissionPolicy | dict | None = None, stream_id=None):
        if detector.input_mode != "window":
            raise ValueError("streaming needs a window-mode checkpoint (native snippets); this one resizes whole "
                             "videos to T snippets")
        self._state = _StreamState(detector, fps, feat_stride, num_frames, make_policy(hop, margin, policy),
                                   stream_id)

    @property
    def policy(self) -> EmissionPolicy:
        return self._state.policy

    @property
    def snippets(self) -> int:
        """Snippets pushed so far."""
        return self._state.received

    @property
    def time(self) -> float:
        """Stream time (seconds) of everything pushed so far (see :meth:`_StreamState.time_at`)."""
        return self._state.time_at(self._state.received)

    @property
    def closed(self) -> bool:
        return self._state.closed

    def push(self, chunk) -> StreamDetections:
        state = self._state
        state.add(chunk, keep_copy=False)  # absorbed into the buffer before push returns
        return state.result(self._run(state.detector.batch_size))

    def close(self) -> StreamDetections:
        """Run the window at the stream's end and emit every detection still undecided; a second call returns
        nothing new."""
        state = self._state
        if state.closed:
            return state.result([])
        state.closing = True
        parts = self._run(state.detector.batch_size)
        if not state.closed:
            parts.append(state.flush_without_window())
        return state.result(parts)

    def _run(self, batch_size: int) -> list:
        state, parts = self._state, []
        while True:
            due = state.due_windows(batch_size)
            if not due:
                return parts
            outputs = state.detector.run_windows([w for _, w, _ in due], [True] * len(due))
            parts += [state.consume(p, out, last) for (p, _, last), out in zip(due, outputs)]


class StreamPool:
    """Many independent streams over one :class:`gsmt_fast.Detector` (``detector.stream_pool(...)``): what a server
    that watches many cameras runs.

    ``open(stream_id, ...)`` adds a stream (settings default to the pool's), ``push(stream_id, chunk)`` queues its
    features (checked at once; nothing runs), ``tick()`` runs every window due in every stream as ONE
    ``backend.run_windows`` call and returns ``{stream_id: StreamDetections}`` for the streams that emitted something
    or finished, and ``close(stream_id)`` marks a stream to be flushed and removed at the next tick. Each stream's
    detections equal those of the same stream run alone as a :class:`StreamSession`.
    """

    def __init__(self, detector, fps=None, feat_stride=None, num_frames=None, hop=None, margin=None,
                 policy: EmissionPolicy | dict | None = None):
        if detector.input_mode != "window":
            raise ValueError("streaming needs a window-mode checkpoint (native snippets); this one resizes whole "
                             "videos to T snippets")
        self.detector = detector
        self._defaults = {"fps": fps, "feat_stride": feat_stride, "num_frames": num_frames}
        self.policy = make_policy(hop, margin, policy)
        self._streams: dict[Hashable, _StreamState] = {}
        self._ids = itertools.count()
        self.last_tick_windows = 0  # windows the last tick ran (for monitoring)

    def __len__(self) -> int:
        return len(self._streams)

    def __contains__(self, stream_id) -> bool:
        return stream_id in self._streams

    @property
    def stream_ids(self) -> list:
        return list(self._streams)

    def open(self, stream_id: Hashable | None = None, fps=None, feat_stride=None, num_frames=None, hop=None,
             margin=None, policy: EmissionPolicy | dict | None = None) -> Hashable:
        """Add a stream and return its id (a new integer when ``stream_id`` is None)."""
        if stream_id is None:
            stream_id = next(i for i in self._ids if i not in self._streams)
        if stream_id in self._streams:
            raise ValueError(f"stream {stream_id!r} is already open")
        own = {"fps": fps, "feat_stride": feat_stride, "num_frames": num_frames}
        settings = {k: own[k] if own[k] is not None else self._defaults[k] for k in own}
        chosen = make_policy(hop, margin, policy if policy is not None else self.policy)
        self._streams[stream_id] = _StreamState(self.detector, policy=chosen, stream_id=stream_id, **settings)
        return stream_id

    def _get(self, stream_id) -> _StreamState:
        try:
            return self._streams[stream_id]
        except KeyError:
            raise KeyError(f"no open stream {stream_id!r}") from None

    def push(self, stream_id, chunk) -> None:
        """Queue the next ``(n, d_in)`` features of a stream; they are processed at the next :meth:`tick`."""
        self._get(stream_id).add(chunk, keep_copy=True)

    def close(self, stream_id) -> None:
        """Mark a stream finished: the next :meth:`tick` runs its last window, returns its remaining detections and
        removes it."""
        self._get(stream_id).closing = True

    def close_all(self) -> dict:
        """Close every stream and return their remaining detections (one tick)."""
        for state in self._streams.values():
            state.closing = True
        return self.tick()

    def tick(self) -> dict:
        """Run every due window of every stream in one ``run_windows`` call; emit; drop finished streams."""
        due = [(state, p, w, last) for state in self._streams.values() for p, w, last in state.due_windows()]
        self.last_tick_windows = len(due)
        parts: dict[Hashable, list] = {}
        if due:
            outputs = self.detector.run_windows([w for _, _, w, _ in due], [True] * len(due))
            for (state, p, _, last), out in zip(due, outputs):
                parts.setdefault(state.stream_id, []).append(state.consume(p, out, last))
        results = {}
        for stream_id, state in list(self._streams.items()):
            if state.closing and not state.closed:
                parts.setdefault(stream_id, []).append(state.flush_without_window())
            if state.closed:
                del self._streams[stream_id]
            if stream_id in parts:
                result = state.result(parts[stream_id])
                if len(result) or state.closed:
                    results[stream_id] = result
        return results


def read_npy_chunks(stream) -> Iterable[np.ndarray]:
    """The arrays of a binary stream of concatenated ``.npy`` files (what ``np.save(pipe, chunk)`` writes once per
    chunk), each yielded as soon as it is complete; ends at end of file. Object arrays are refused (nothing is ever
    unpickled); a truncated array is an error."""
    fmt = np.lib.format
    index = 0
    while True:
        head = _read_exactly(stream, 8)
        if not head:
            return
        if len(head) < 8 or head[:6] != b"\x93NUMPY":
            raise ValueError(f"chunk {index}: not a .npy array (expected the .npy magic bytes \\x93NUMPY; write each "
                             "chunk with numpy.save(stream, chunk))")
        major = head[6]
        reader = {1: fmt.read_array_header_1_0, 2: fmt.read_array_header_2_0}.get(major)
        if reader is None:
            raise ValueError(f"chunk {index}: unsupported .npy format version {major}.{head[7]}")
        try:
            shape, fortran_order, dtype = reader(stream)
        except ValueError as error:
            raise ValueError(f"chunk {index}: bad .npy header ({error})") from error
        if dtype.hasobject:
            raise ValueError(f"chunk {index}: object arrays are not accepted (features are numbers)")
        count = int(np.prod(shape, dtype=np.int64))
        data = _read_exactly(stream, count * dtype.itemsize)
        if len(data) < count * dtype.itemsize:
            raise ValueError(f"chunk {index}: truncated .npy array ({len(data)} of {count * dtype.itemsize} bytes)")
        array = np.frombuffer(data, dtype=dtype, count=count)
        yield array.reshape(shape[::-1]).T if fortran_order else array.reshape(shape)
        index += 1


def _read_exactly(stream, n: int) -> bytes:
    """Up to ``n`` bytes: fewer only at end of file (a pipe may deliver a chunk in several reads)."""
    parts, got = [], 0
    while got < n:
        part = stream.read(n - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


def stream_metrics(ground_truth, streamed: Sequence[StreamDetections], tiou_thresholds=None,
                   subset: str | None = None) -> dict:
    """Accuracy and delay of streamed detections (each result's ``video_id`` names its video in the ground truth):
    ``average_mAP`` and ``mAP`` per threshold (:func:`gsmt_fast.evaluate`), ``end_delay_s`` per threshold (mean
    ``gentime − gt_end`` over the true positives of that threshold, matched exactly as the mAP matches them; NaN
    without any), ``mean_end_delay_s`` (their mean over thresholds, as the average mAP averages), ``true_positives``
    per threshold and ``detections``."""
    from .data.annotations import canonical_video_id
    from .detector import results_to_json
    from .evaluation import THUMOS_THRESHOLDS, evaluate, load_ground_truth, normalize_thresholds, true_positives

    thresholds = normalize_thresholds(THUMOS_THRESHOLDS if tiou_thresholds is None else tiou_thresholds)
    payload = results_to_json(streamed)
    result = evaluate(ground_truth, payload, tiou_thresholds=thresholds, subset=subset)
    gt = load_ground_truth(ground_truth, subset)
    gentime = {canonical_video_id(r.video_id): r.gentime for r in streamed}
    matches = true_positives(ground_truth, payload, tiou_thresholds=thresholds, subset=subset)
    delays = [float(np.mean([gentime[video][r] - gt[video][g][1] for video, r, g in found])) if found
              else float("nan") for found in matches]
    return {"tiou_thresholds": list(thresholds), "average_mAP": float(result.average_mAP),
            "mAP": [float(m) for m in result.mAP], "end_delay_s": delays,
            "mean_end_delay_s": float(np.nanmean(delays)) if not np.isnan(delays).all() else float("nan"),
            "true_positives": [len(found) for found in matches], "detections": int(sum(len(r) for r in streamed))}


def replay(ckpt, source, out, fps=None, feat_stride=None, num_frames=None, hop=None, margin=None, chunk: int = 1,
           realtime: bool = False, backend: str = "auto", device=None, precision=None, stream_id=None,
           clock=time.perf_counter, sleep=time.sleep) -> int:
    """``gsmt-fast stream``: push a feature file (``source`` a path, ``chunk`` snippets per push, at the real rate
    with ``realtime``) or the ``.npy`` chunks of a binary stream (:func:`read_npy_chunks`) through one
    :class:`StreamSession`; write one JSON line per final detection to ``out`` as it is emitted, then a summary line
    ``{"summary": {...}}`` (detections, mean delay ``gentime − end``, per-push latency p50/p99)."""
    from .detector import Detector

    if chunk < 1:
        raise ValueError(f"--chunk must be >= 1 snippet, got {chunk}")
    det = Detector(ckpt, backend=backend, device=device, precision=precision)
    session = det.stream(fps=fps, feat_stride=feat_stride, num_frames=num_frames, hop=hop, margin=margin,
                         stream_id=stream_id)
    if isinstance(source, (str, os.PathLike)):
        from .data.features import read_feature_file

        features = check_chunk(read_feature_file(source), det.model_config.input_dim, str(source))
        chunks = (features[i:i + chunk] for i in range(0, len(features), chunk))
    else:
        chunks = read_npy_chunks(source)

    def write(result: StreamDetections) -> None:
        for record in result.to_records(with_gentime=True):
            line = {"stream": stream_id, **record} if stream_id is not None else record
            out.write(json.dumps(line) + "\n")
        if len(result):
            out.flush()

    latencies, delays = [], []
    started = clock()
    for piece in chunks:
        if realtime:
            due = started + session._state.time_at(session.snippets + len(piece))
            wait = due - clock()
            if wait > 0:
                sleep(wait)
        t0 = clock()
        new = session.push(piece)
        latencies.append(clock() - t0)
        delays += list(new.gentime - new.segments[:, 1])
        write(new)
    t0 = clock()
    rest = session.close()
    close_s = clock() - t0
    delays += list(rest.gentime - rest.segments[:, 1])
    write(rest)
    wall = clock() - started
    ms = np.array(latencies) * 1e3
    summary = {"snippets": session.snippets, "stream_s": round(session.time, 6), "detections": len(delays),
               "mean_delay_s": float(np.mean(delays)) if delays else None, "pushes": len(latencies),
               "push_latency_ms": {"p50": float(np.percentile(ms, 50)) if len(ms) else None,
                                   "p99": float(np.percentile(ms, 99)) if len(ms) else None,
                                   "max": float(ms.max()) if len(ms) else None},
               "close_latency_ms": close_s * 1e3, "wall_s": wall,
               "realtime_factor": session.time / wall if wall > 0 else None,
               "backend": det.backend.name, "precision": getattr(det.backend, "precision", None),
               "hop": session.policy.hop, "margin": session.policy.margin}
    if stream_id is not None:
        summary = {"stream": stream_id, **summary}
    out.write(json.dumps({"summary": summary}) + "\n")
    out.flush()
    return 0
