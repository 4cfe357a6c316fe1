"""Sharded, resumable batch detection over a feature store (``gsmt-fast detect`` under torchrun or ``--shard i/n``).

Work units. The videos are sorted by length (snippets, longest first; ties in input order) and cut into *chunks* of
``chunk_size`` consecutive videos. A chunk is the unit of everything: one ``Detector.detect`` call, one record in a
part file, one unit of resume. The chunks depend only on the video list, the lengths and the chunk size, never on
the number of ranks, so every video is detected in the same batch whatever the world size: results are identical
with 1, 2 or N ranks, whatever the backend's batching does to the last bits.

Balance. Chunks go to ranks by longest-processing-time-first (the largest remaining chunk to the least loaded rank,
cost = snippets); the loads then differ by at most one chunk. Under torchrun, rank 0 plans and broadcasts, and a
rerun spreads only the unfinished chunks over the ranks. With ``--shard i/n`` (independent processes, e.g. a cluster
array job) nothing is exchanged, so each shard takes a fixed share of all chunks and skips those already done.

Part files. ``OUT.parts/part-RRRRR-of-WWWWW.jsonl`` (one per rank or shard): a header line naming the job, then one
JSON line per finished chunk holding its detections and a SHA-256 of its content, written with one ``write`` and
fsync'd before the next chunk starts. A reader takes a line only when it is complete (newline-terminated), parses
and its checksum matches; an incomplete or garbled tail (a process killed mid-write, a crash) is discarded and the
writer truncates it before appending, so a partial part file is never read as complete. Invalid content followed by
valid lines is corruption and is reported, never skipped silently. A part file whose header names another job
(other checkpoint, backend, precision, device type, batch size, videos, time metadata or chunking) is an error: the
folder must be removed or another ``--out`` chosen.

Resume. A rerun (after a crash, a kill, a pre-emption) reads every part file of the folder, whatever world size
wrote it, skips the chunks they hold and detects only the others. Merging (rank 0 under torchrun; with ``--shard``,
whichever shard finds every chunk done when it finishes) writes the official results JSON atomically, with the
videos in input order, through :func:`gsmt_fast.results.write_results`: byte for byte what a one-process
``gsmt-fast detect`` writes when the backend's results do not depend on the batch (the CPU backends in fp32).
Part files are kept after the merge (a rerun then only merges again); delete the folder when done.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import json
import math
import os
import re
import signal
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .detector import _per_video
from .distributed import WorldInfo, barrier, broadcast_object, gather_objects
from .results import write_results

PARTS_FORMAT = "gsmt_fast.detect-parts/1"
PART_GLOB = "part-*-of-*.jsonl"
# Fault injection for the resume tests: "RANK:K" makes rank (or shard) RANK SIGKILL itself right after writing
# its K-th chunk, exactly as an external kill between two chunks would.
KILL_AFTER_CHUNKS_ENV = "GSMT_FAST_KILL_AFTER_CHUNKS"

# Default chunk size: about TARGET_CHUNKS chunks (enough for ranks to balance within a few per cent up to ~16
# ranks), at least MIN_CHUNK_SIZE videos per detect call (whole batches for the backend), at most MAX_CHUNK_SIZE
# (what a kill can cost per rank).
TARGET_CHUNKS = 64
MIN_CHUNK_SIZE = 8
MAX_CHUNK_SIZE = 256


class PartFileError(ValueError):
    """A part file that cannot be used: corrupt, locked by another writer, or written by another job."""


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/n"`` → ``(i, n)`` with ``0 <= i < n`` (shards are numbered from 0, like torchrun's ranks)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", str(text))
    if not m:
        raise ValueError(f"--shard expects i/n (e.g. 0/4: the first of 4 shards), got {text!r}")
    index, count = int(m.group(1)), int(m.group(2))
    if count < 1 or index >= count:
        raise ValueError(f"--shard {text}: need n >= 1 and 0 <= i < n (shards are numbered 0 … n-1)")
    return index, count


def default_chunk_size(num_videos: int) -> int:
    """Videos per chunk when none is given: ``clamp(ceil(N / 64), 8, 256)`` (see the module constants)."""
    return min(MAX_CHUNK_SIZE, max(MIN_CHUNK_SIZE, math.ceil(num_videos / TARGET_CHUNKS)))


@dataclass(frozen=True)
class Chunk:
    """Videos ``positions`` (indices into the job's video list, in detection order) and their total length."""

    index: int
    positions: tuple[int, ...]
    cost: int


def plan_chunks(lengths: Sequence[int], chunk_size: int) -> list[Chunk]:
    """Chunks of ``chunk_size`` videos in order of decreasing length (ties: input order); see the module docstring."""
    if chunk_size < 1:
        raise ValueError(f"chunk size must be >= 1, got {chunk_size}")
    lengths = [int(n) for n in lengths]
    if any(n < 1 for n in lengths):
        raise ValueError("every video needs at least one snippet")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return [Chunk(k, tuple(order[s:s + chunk_size]), sum(lengths[i] for i in order[s:s + chunk_size]))
            for k, s in enumerate(range(0, len(order), chunk_size))]


def assign_chunks(chunks: Sequence[Chunk], world_size: int, exclude: frozenset[int] | set[int] = frozenset()
                  ) -> list[list[int]]:
    """Chunk indices per rank: longest processing time first (largest cost to the least loaded rank; ties: the
    smaller chunk index, the lower rank); each rank's list in chunk order. ``exclude``: chunks already done."""
    if world_size < 1:
        raise ValueError(f"world size must be >= 1, got {world_size}")
    todo = sorted((c for c in chunks if c.index not in exclude), key=lambda c: (-c.cost, c.index))
    loads = [(0, rank) for rank in range(world_size)]
    out: list[list[int]] = [[] for _ in range(world_size)]
    for c in todo:
        load, rank = heapq.heappop(loads)
        out[rank].append(c.index)
        heapq.heappush(loads, (load + c.cost, rank))
    return [sorted(ids) for ids in out]


def _sha256_json(obj: Any) -> str:
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def detector_identity(detector, checkpoint: str | os.PathLike | None = None) -> dict[str, Any]:
    """What, besides the videos, decides a detector's results: the checkpoint's bytes, the backend, its precision
    and device type, the batch size (a backend's batching may change the last bits)."""
    backend = detector.backend
    device = getattr(backend, "device", None)
    return {"checkpoint_sha256": file_sha256(checkpoint) if checkpoint is not None else None,
            "backend": getattr(backend, "name", type(backend).__name__),
            "precision": getattr(backend, "precision", None),
            "device_type": getattr(device, "type", str(device) if device is not None else "cpu"),
            "batch_size": getattr(detector, "batch_size", None)}


def job_description(identity: Mapping[str, Any], video_ids: Sequence[str], fps: Sequence, duration: Sequence,
                    feat_stride, num_frames, chunks: Sequence[Chunk], chunk_size: int) -> dict[str, Any]:
    """The header every part file of a job carries; two runs may share part files only when these are equal."""
    return {"format": PARTS_FORMAT, "detector": dict(identity), "num_videos": len(video_ids),
            "videos_sha256": _sha256_json([list(video_ids), list(fps), list(duration), feat_stride, num_frames]),
            "chunk_size": int(chunk_size), "num_chunks": len(chunks),
            "plan_sha256": _sha256_json([list(c.positions) for c in chunks])}


def _differences(a: Mapping, b: Mapping, prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(a) | set(b)):
        va, vb = a.get(key), b.get(key)
        if isinstance(va, Mapping) and isinstance(vb, Mapping):
            out += _differences(va, vb, f"{prefix}{key}.")
        elif va != vb:
            out.append(f"{prefix}{key}")
    return out


# --------------------------------------------------------------------------------------------------- part files
def _chunk_digest(chunk: int, videos: Sequence[str], results: Mapping) -> str:
    return _sha256_json([chunk, list(videos), results])


def _encode_line(obj: Mapping) -> bytes:
    return (json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")


class _BadLine(Exception):
    pass


def _decode_line(line: bytes, header: bool) -> dict:
    try:
        obj = json.loads(line.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise _BadLine(f"not JSON ({e})") from None
    if not isinstance(obj, dict):
        raise _BadLine("not a JSON object")
    if header:
        if obj.get("kind") != "header" or obj.get("format") != PARTS_FORMAT or not isinstance(obj.get("job"), dict):
            raise _BadLine(f"not a {PARTS_FORMAT} header")
        return obj
    if obj.get("kind") != "chunk":
        raise _BadLine("not a chunk record")
    chunk, videos, results = obj.get("chunk"), obj.get("videos"), obj.get("results")
    if not isinstance(chunk, int) or not isinstance(videos, list) or not isinstance(results, dict):
        raise _BadLine("chunk record without chunk/videos/results")
    if obj.get("sha256") != _chunk_digest(chunk, videos, results):
        raise _BadLine("checksum mismatch")
    return obj


@dataclass
class PartContent:
    """The usable content of one part file: its header (None when empty) and its chunk records, and where the
    valid content ends (anything after it is a torn or garbled tail)."""

    header: dict | None
    chunks: list[dict]
    valid_end: int
    discarded_bytes: int


def parse_part(data: bytes, source: str) -> PartContent:
    """Parse a part file's bytes (see the module docstring for what is accepted, discarded or an error)."""
    lines: list[tuple[int, bytes]] = []
    pos = 0
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            break  # bytes after the last newline: an unfinished line
        lines.append((nl + 1, data[pos:nl]))
        pos = nl + 1
    header, chunks, valid_end = None, [], 0
    first_bad: tuple[int, str] | None = None
    for i, (end, line) in enumerate(lines):
        try:
            obj = _decode_line(line, header=(i == 0))
        except _BadLine as e:
            if first_bad is None:
                first_bad = (i, str(e))
            continue
        if first_bad is not None:
            raise PartFileError(f"{source}: line {first_bad[0] + 1} is corrupt ({first_bad[1]}) but valid lines "
                                "follow it; this is not an interrupted write: remove the file to redo its chunks")
        if i == 0:
            header = obj
        else:
            chunks.append(obj)
        valid_end = end
    return PartContent(header, chunks, valid_end, len(data) - valid_end)


def _check_header(header: dict, job: Mapping, source: str) -> None:
    if header["job"] != job:
        diff = ", ".join(_differences(header["job"], job)) or "format"
        raise PartFileError(f"{source} was written by another detection job (differs in: {diff}); remove "
                            f"{Path(source).parent} or choose another --out to start over")


def read_part(path: str | os.PathLike, job: Mapping) -> PartContent:
    path = Path(path)
    content = parse_part(path.read_bytes(), str(path))
    if content.header is not None:
        _check_header(content.header, job, str(path))
    return content


def part_path(parts_dir: str | os.PathLike, rank: int, world_size: int) -> Path:
    return Path(parts_dir) / f"part-{rank:05d}-of-{world_size:05d}.jsonl"


def default_parts_dir(out: str | os.PathLike) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".parts")


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not every filesystem lets a directory be opened or synced
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class PartWriter:
    """Appends chunk records to one part file; holds an exclusive lock on it while open (a second process on the
    same shard is an error, not an interleaving)."""

    def __init__(self, path: str | os.PathLike, job: Mapping):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            self._lock()
            data = b""
            while block := os.read(self._fd, 1 << 20):
                data += block
            content = parse_part(data, str(self.path))
            if content.header is not None:
                _check_header(content.header, job, str(self.path))
            self.discarded_bytes = content.discarded_bytes
            os.ftruncate(self._fd, content.valid_end)
            os.lseek(self._fd, content.valid_end, os.SEEK_SET)
            if content.header is None:
                self._append(_encode_line({"kind": "header", "format": PARTS_FORMAT, "job": dict(job)}))
                _fsync_dir(self.path.parent)
        except BaseException:
            os.close(self._fd)
            raise

    def _lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no advisory locks
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PartFileError(f"{self.path} is being written by another process: the same rank or shard runs "
                                "twice") from None

    def _append(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        os.fsync(self._fd)

    def append(self, chunk: int, video_ids: Sequence[str], results: Mapping[str, list]) -> None:
        """Write one finished chunk (durable when this returns)."""
        videos = list(video_ids)
        self._append(_encode_line({"kind": "chunk", "chunk": int(chunk), "videos": videos, "results": results,
                                   "sha256": _chunk_digest(int(chunk), videos, results)}))

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)  # also releases the lock
            self._fd = -1

    def __enter__(self) -> PartWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_completed(parts_dir: str | os.PathLike, job: Mapping, chunks: Sequence[Chunk],
                   video_ids: Sequence[str]) -> dict[int, dict]:
    """``{chunk index: {video_id: records}}`` of every chunk finished in any part file of ``parts_dir``.

    A chunk found in several files (a rerun with another world size can redo nothing twice, but a user may copy
    files around) is taken from the first file in name order."""
    done: dict[int, dict] = {}
    directory = Path(parts_dir)
    if not directory.is_dir():
        return done
    for path in sorted(directory.glob(PART_GLOB)):
        for rec in read_part(path, job).chunks:
            k = rec["chunk"]
            if not 0 <= k < len(chunks) or rec["videos"] != [video_ids[p] for p in chunks[k].positions]:
                raise PartFileError(f"{path}: chunk {k} does not match this job's plan")
            done.setdefault(k, rec["results"])
    return done


def merge_parts(done: Mapping[int, Mapping], chunks: Sequence[Chunk], video_ids: Sequence[str]) -> dict[str, list]:
    """The results of every video, in input order, from the finished chunks (all must be there)."""
    missing = [c.index for c in chunks if c.index not in done]
    if missing:
        raise PartFileError(f"cannot merge: {len(missing)} of {len(chunks)} chunks are not finished ({missing[:10]}"
                            f"{' …' if len(missing) > 10 else ''})")
    chunk_of = {p: c.index for c in chunks for p in c.positions}
    merged = {}
    for p, vid in enumerate(video_ids):
        records = done[chunk_of[p]]
        if vid not in records:
            raise PartFileError(f"chunk {chunk_of[p]} has no results for video {vid!r}")
        merged[vid] = records[vid]
    return merged


# --------------------------------------------------------------------------------------------------- the runner
def _kill_after() -> tuple[int, int] | None:
    raw = os.environ.get(KILL_AFTER_CHUNKS_ENV)
    if not raw:
        return None
    try:
        rank, count = (int(x) for x in raw.split(":"))
    except ValueError:
        raise ValueError(f"{KILL_AFTER_CHUNKS_ENV}={raw!r}: expected RANK:K") from None
    return rank, count


@dataclass
class ShardedDetectionReport:
    """What one rank (or shard) did: the chunks it detected (with their videos) and skipped, and whether it wrote
    the merged results."""

    rank: int
    world_size: int
    processed_chunks: list[int]
    processed_videos: list[str]
    skipped_chunks: int  # already done at the start: of this shard's share (--shard), of the whole job (torchrun)
    num_chunks: int
    seconds: float  # the whole run: planning, detection, part files, merge
    detect_seconds: float  # loading features and Detector.detect calls only
    merged: bool
    remaining_chunks: int  # unfinished chunks seen by the merging check (shards still running or not yet run)
    num_detections: int | None = None


def run_sharded_detection(detector, video_ids: Sequence[str], load: Callable[[str], Any],
                          length: Callable[[str], int], out: str | os.PathLike, *, world: WorldInfo,
                          static_shards: bool, fps=None, duration=None, feat_stride=None, num_frames=None,
                          chunk_size: int | None = None, parts_dir: str | os.PathLike | None = None,
                          identity: Mapping[str, Any] | None = None, progress: bool = False,
                          log: Callable[[str], None] = print) -> ShardedDetectionReport:
    """Detect this rank's chunks through ``detector.detect``, append them to its part file, and merge when all are
    done (see the module docstring).

    ``world``: this process's rank and world size; ``static_shards`` True for ``--shard i/n`` (no communication:
    fixed share of all chunks) and False under torchrun (rank 0 plans and spreads the unfinished chunks).
    ``load(video_id)`` returns a video's features, ``length(video_id)`` its snippet count (for balancing).
    ``fps`` / ``duration``: scalars or per-video lists, as ``Detector.detect`` takes them. ``identity``: see
    :func:`detector_identity` (default: from ``detector``, without a checkpoint hash)."""
    t0 = time.perf_counter()
    video_ids = [str(v) for v in video_ids]
    n = len(video_ids)
    if n == 0:
        raise ValueError("no videos to detect")
    if len(set(video_ids)) != n:
        raise ValueError("duplicate video ids in the input")
    fps_l, dur_l = _per_video(fps, n, "fps"), _per_video(duration, n, "duration")
    chunk_size = default_chunk_size(n) if chunk_size is None else int(chunk_size)
    parts_dir = Path(parts_dir) if parts_dir is not None else default_parts_dir(out)
    identity = dict(identity) if identity is not None else detector_identity(detector)

    # Every rank must run the same detector; a node with another default precision would mix results.
    identities = gather_objects(world, identity)
    for r, other in enumerate(identities):
        if other != identity:
            raise ValueError(f"rank {r} would detect with {other} but rank {world.rank} with {identity} "
                             f"(differs in: {', '.join(_differences(other, identity))}); pass --backend/--precision")

    plan = None
    if static_shards or world.rank == 0:
        lengths = [length(v) for v in video_ids]
        chunks = plan_chunks(lengths, chunk_size)
        job = job_description(identity, video_ids, fps_l, dur_l, feat_stride, num_frames, chunks, chunk_size)
        done = read_completed(parts_dir, job, chunks, video_ids)
        if static_shards:  # a fixed share of all chunks, minus those already done
            share = assign_chunks(chunks, world.world_size)[world.rank]
            mine = [k for k in share if k not in done]
            skipped = len(share) - len(mine)
        else:  # rank 0 spreads the unfinished chunks over the ranks
            plan = (chunks, job, assign_chunks(chunks, world.world_size, exclude=set(done)), len(done))
    if not static_shards:
        chunks, job, shares, skipped = broadcast_object(world, plan)
        mine = shares[world.rank]

    kill = _kill_after()
    processed_videos: list[str] = []
    detect_seconds = 0.0
    with PartWriter(part_path(parts_dir, world.rank, world.world_size), job) as writer:
        if writer.discarded_bytes:
            log(f"rank {world.rank}: discarded {writer.discarded_bytes} bytes of an interrupted write in "
                f"{writer.path.name}")
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(mine), desc=f"detect rank {world.rank}/{world.world_size}", unit="chunk")
        from .detector import results_to_json

        for count, k in enumerate(mine, start=1):
            positions = chunks[k].positions
            ids = [video_ids[p] for p in positions]
            t_detect = time.perf_counter()
            results = detector.detect([load(v) for v in ids], fps=[fps_l[p] for p in positions],
                                      duration=[dur_l[p] for p in positions], feat_stride=feat_stride,
                                      num_frames=num_frames, video_id=ids)
            detect_seconds += time.perf_counter() - t_detect
            writer.append(k, ids, results_to_json(results)["results"])
            processed_videos += ids
            if bar is not None:
                bar.update(1)
            if kill is not None and kill == (world.rank, count):
                os.kill(os.getpid(), signal.SIGKILL)
        if bar is not None:
            bar.close()

    barrier(world)
    report = ShardedDetectionReport(world.rank, world.world_size, list(mine), processed_videos, skipped,
                                    len(chunks), 0.0, detect_seconds, merged=False, remaining_chunks=0)
    if static_shards or world.rank == 0:
        done = read_completed(parts_dir, job, chunks, video_ids)
        report.remaining_chunks = len(chunks) - len(done)
        if report.remaining_chunks == 0:
            merged = merge_parts(done, chunks, video_ids)
            write_results(out, merged)
            report.merged = True
            report.num_detections = sum(len(v) for v in merged.values())
    report.seconds = time.perf_counter() - t0
    return report


__all__ = ["PARTS_FORMAT", "KILL_AFTER_CHUNKS_ENV", "PartFileError", "Chunk", "parse_shard", "default_chunk_size",
           "plan_chunks", "assign_chunks", "detector_identity", "job_description", "parse_part", "read_part",
           "part_path", "default_parts_dir", "PartWriter", "read_completed", "merge_parts", "ShardedDetectionReport",
           "run_sharded_detection"]
