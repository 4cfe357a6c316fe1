"""Streaming localization: sessions, the multi-stream pool, the emission rule, chunk framing, metrics, CLI."""

import io
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import gsmt_fast
from gsmt_fast.data.grid import SnippetGrid
from gsmt_fast.streaming import EmissionPolicy, Emitter, StreamDetections, read_npy_chunks, stream_metrics

T, D, FPS, STRIDE, FRAMES = 32, 8, 30.0, 4, 16


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """These tests run many tiny forward passes: on a shared 2-core machine a second OpenMP thread only spins."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    """A random tiny window-mode model; score_threshold 0 so that it yields many detections of every kind."""
    torch.manual_seed(3)
    model = gsmt_fast.GSMT(gsmt_fast.GSMTConfig.preset("tiny", num_classes=3, temporal_scale=T, input_dim=D))
    path = tmp_path_factory.mktemp("stream") / "tiny.safetensors"
    gsmt_fast.save_checkpoint(model, path, class_names=["a", "b", "c"], grid={"convention": "stride"},
                              inference={"score_threshold": 0.0, "nms_min_score": 0.0, "max_detections": 40})
    return path


# Scores of a random tiny model sit far below the default confident score: these settings exercise both paths.
POLICY = {"hop": 4, "margin": 1, "confident_score": 0.04, "low_score_extra_margin": 2, "stable_hops": 2}


@pytest.fixture(scope="module")
def det(tiny_ckpt):
    return gsmt_fast.Detector(tiny_ckpt, backend="torch", precision="fp32")


def _features(n, seed=0):
    return np.random.default_rng(seed).standard_normal((n, D)).astype(np.float32)


def _run(det, x, chunks, **kw):
    session = det.stream(fps=FPS, policy=POLICY, **kw)
    parts, start = [], 0
    for size in chunks:
        parts.append(session.push(x[start:start + size]))
        start += size
    assert start == len(x)
    parts.append(session.close())
    return StreamDetections.concatenate(parts), parts


def _same(a: StreamDetections, b: StreamDetections, exact_scores: bool = False):
    """Same detections and gentimes. Scores: a forward pass over a batch of windows may sum in another order than
    over one window (float32), so they are compared to 1e-5 unless both sides ran the same batches."""
    assert len(a) == len(b)
    np.testing.assert_array_equal(a.segments, b.segments)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.gentime, b.gentime)
    if exact_scores:
        np.testing.assert_array_equal(a.scores, b.scores)
    else:
        np.testing.assert_allclose(a.scores, b.scores, rtol=1e-5, atol=0)


def _random_chunks(n, rng, largest=23):
    sizes = []
    while sum(sizes) < n:
        sizes.append(int(min(rng.integers(0, largest), n - sum(sizes))))
    return sizes


def test_push_granularity_does_not_change_detections_or_gentimes(det, tiny_ckpt):
    x = _features(150)
    one_by_one, _ = _run(det, x, [1] * len(x))
    all_at_once, _ = _run(det, x, [len(x)])
    random_chunks, _ = _run(det, x, _random_chunks(len(x), np.random.default_rng(1)))
    assert len(one_by_one) > 10
    _same(one_by_one, all_at_once)
    _same(one_by_one, random_chunks)
    # With a batch size of 1 every window runs alone however the pushes are cut: bit-identical results.
    det_b1 = gsmt_fast.Detector(tiny_ckpt, backend="torch", precision="fp32", batch_size=1)
    single, _ = _run(det_b1, x, [len(x)])
    _same(one_by_one, single, exact_scores=True)


def test_detections_are_final_only_after_their_end_plus_margin(det):
    x = _features(140, seed=2)
    session = det.stream(fps=FPS, policy=POLICY)
    grid = SnippetGrid.stride(FPS, STRIDE, FRAMES)
    emitted = []
    for n in range(1, len(x) + 1):
        new = session.push(x[n - 1:n])
        for segment, score, t in zip(new.segments, new.scores, new.gentime):
            emitted.append((segment.copy(), score, t))
            end = grid.to_units(segment[1])
            margin = POLICY["margin"] + (0 if score >= POLICY["confident_score"] else POLICY["low_score_extra_margin"])
            assert end <= n - margin + 1e-6, (end, n, margin)
            # gentime: the last frame of the newest snippet's clip, at a model position (a multiple of hop)
            assert n % POLICY["hop"] == 0
            assert t == pytest.approx(((n - 1) * STRIDE + FRAMES) / FPS, abs=1e-9)
    assert emitted and len({round(t, 9) for _, _, t in emitted}) > 3
    rest = session.close()
    np.testing.assert_allclose(rest.gentime, ((len(x) - 1) * STRIDE + FRAMES) / FPS)


def test_emitted_detections_are_never_repeated_or_changed(det):
    x = _features(200, seed=4)
    total, parts = _run(det, x, _random_chunks(len(x), np.random.default_rng(5)))
    snapshot = [(p.segments.copy(), p.scores.copy(), p.labels.copy()) for p in parts]
    # the parts returned earlier are untouched by later pushes, and the concatenation is exactly them, in order
    for p, (segments, scores, _) in zip(parts, snapshot):
        np.testing.assert_array_equal(p.segments, segments)
        np.testing.assert_array_equal(p.scores, scores)
    np.testing.assert_array_equal(total.segments, np.concatenate([s for s, _, _ in snapshot]))
    # no two emitted detections of a class overlap above the suppression tIoU (so none is repeated)
    from gsmt_fast.postprocess.reference import segment_iou

    for k in np.unique(total.labels):
        segs = total.segments[total.labels == k]
        for i in range(len(segs)):
            assert (segment_iou(segs[i], np.delete(segs, i, axis=0)) <= EmissionPolicy().suppress_iou).all()
    assert (np.diff(total.gentime) >= 0).all()


def test_pool_equals_each_stream_run_alone(det):
    rng = np.random.default_rng(7)
    streams = {"cam0": (_features(130, 10), 30.0), "cam1": (_features(75, 11), 25.0), 7: (_features(3, 12), 30.0),
               "empty": (_features(0, 13), 30.0), "long": (_features(260, 14), 24.0)}
    pool = det.stream_pool(fps=30.0, policy=POLICY)
    for sid, (_, fps) in streams.items():
        assert pool.open(sid, fps=fps) == sid
    sent = {sid: 0 for sid in streams}
    got = {sid: [] for sid in streams}
    closed = set()
    while len(closed) < len(streams):
        for sid, (x, _) in streams.items():
            if sid in closed:
                continue
            k = int(rng.integers(0, 12))
            pool.push(sid, x[sent[sid]:sent[sid] + k])
            sent[sid] = min(len(x), sent[sid] + k)
            if sent[sid] == len(x) and (rng.random() < 0.5 or sid == "long"):
                pool.close(sid)  # some streams finish in a tick, the others by close_all below
                closed.add(sid)
        if rng.random() < 0.6:
            for sid, result in pool.tick().items():
                got[sid].append(result)
    assert len(pool) > 0
    for sid, result in pool.close_all().items():
        got[sid].append(result)
    assert len(pool) == 0
    for sid, (x, fps) in streams.items():
        session = det.stream(fps=fps, policy=POLICY, stream_id=sid)
        alone = StreamDetections.concatenate([session.push(x), session.close()])
        pooled = StreamDetections.concatenate(got[sid], class_names=det.class_names)
        _same(pooled, alone)
        assert all(r.video_id == str(sid) for r in got[sid])
    assert sum(len(r) for rs in got.values() for r in rs) > 20


def test_pool_runs_one_backend_call_per_tick(det, monkeypatch):
    pool = det.stream_pool(fps=FPS, policy=POLICY)
    for sid in range(5):
        pool.open(sid)
        pool.push(sid, _features(9, sid))  # two windows due per stream (positions 4 and 8)
    calls = []
    original = det.backend.run_windows
    monkeypatch.setattr(det.backend, "run_windows", lambda w, f, c: calls.append(len(w)) or original(w, f, c))
    pool.tick()
    assert calls == [10] and pool.last_tick_windows == 10
    pool.tick()  # nothing new is due
    assert calls == [10]


def test_close_on_an_empty_session_and_twice(det):
    session = det.stream(fps=FPS)
    empty = session.close()
    assert len(empty) == 0 and empty.segments.shape == (0, 2) and empty.gentime.shape == (0,)
    assert len(session.close()) == 0
    with pytest.raises(RuntimeError, match="closed"):
        session.push(_features(2))
    s2 = det.stream(fps=FPS, policy=POLICY)
    assert len(s2.push(np.zeros((0, D), np.float32))) == 0
    assert s2.snippets == 0 and len(s2.close()) == 0


@pytest.mark.parametrize("bad, error, message", [
    (np.zeros((5, D + 1), np.float32), ValueError, "wrong feature dimension 9"),
    (np.zeros((0, D + 1), np.float32), ValueError, "wrong feature dimension 9"),
    (np.zeros(D, np.float32), ValueError, r"shape \(num_snippets, 8\)"),
    (np.zeros((2, 3, D), np.float32), ValueError, r"shape \(num_snippets, 8\)"),
    (np.full((3, D), np.nan, np.float32), ValueError, "NaN or inf"),
    (np.full((3, D), np.inf, np.float32), ValueError, "NaN or inf"),
    (np.array([["x"] * D]), TypeError, "numeric"),
])
def test_bad_chunks_raise_a_clear_error_and_leave_the_session_usable(det, bad, error, message):
    x = _features(90, seed=8)
    session = det.stream(fps=FPS, policy=POLICY)
    parts = [session.push(x[:37])]
    with pytest.raises(error, match=message):
        session.push(bad)
    assert session.snippets == 37
    parts += [session.push(x[37:]), session.close()]
    clean, _ = _run(det, x, [len(x)])
    _same(StreamDetections.concatenate(parts), clean)


def test_torch_tensor_chunks_and_stream_settings(det):
    x = _features(40, seed=9)
    a, _ = _run(det, x, [40])
    session = det.stream(fps=FPS, policy=POLICY)
    b = StreamDetections.concatenate([session.push(torch.from_numpy(x)), session.close()])
    _same(a, b)
    with pytest.raises(ValueError, match="horizon"):
        det.stream(fps=FPS, hop=8, policy={"horizon": 4})
    with pytest.raises(TypeError, match="unknown emission policy"):
        det.stream(fps=FPS, policy={"hopp": 3})
    with pytest.raises(ValueError, match="fps"):
        det.stream()
    assert det.stream(fps=FPS, hop=12).policy.decision_span == 24


def _emit(policy, steps):
    """Drive an Emitter with hand-made window outputs; a grid with scale 1, offset 0 makes seconds == units."""
    emitter = Emitter(policy, SnippetGrid(1.0, 0.0), temporal_scale=64)
    out = []
    for p, dets, last in steps:
        segments = np.array([d[0] for d in dets], dtype=np.float64).reshape(-1, 2)
        scores = np.array([d[1] for d in dets], dtype=np.float64)
        labels = np.array([d[2] for d in dets], dtype=np.int64)
        s, sc, lb = emitter.step(p, segments, scores, labels, last=last)
        out.append([(tuple(x), float(y), int(z)) for x, y, z in zip(s, sc, lb)])
    return out


def test_emitter_rules_by_hand():
    pol = EmissionPolicy(hop=4, margin=2, confident_score=0.9, low_score_extra_margin=3, stable_hops=2, horizon=8)
    # A confident detection ending at 10 is final at the first position p with 10 <= p - 2: p = 12.
    assert _emit(pol, [(8, [((3, 10), 0.95, 0)], False), (12, [((3, 10), 0.95, 0)], False)]) == \
        [[], [((3.0, 10.0), 0.95, 0)]]
    # A low-score one needs end <= p - 5 and two consecutive windows: seen at 12 (not ready), ready at 16.
    assert _emit(pol, [(12, [((3, 10), 0.5, 1)], False), (16, [((3, 10), 0.5, 1)], False)])[1] == \
        [((3.0, 10.0), 0.5, 1)]
    # ... but not when the previous window predicted a different segment (tIoU 3/7 < match_iou).
    assert _emit(pol, [(12, [((3, 6), 0.5, 1)], False), (16, [((3, 10), 0.5, 1)], False)])[1] == []
    # Horizon: an end older than margin + horizon is never decided (here 10 <= 22 - 2 - 8).
    assert _emit(pol, [(22, [((3, 10), 0.95, 0)], False)]) == [[]]
    # Suppression: the earlier emission wins above tIoU 0.7 (9/10), a lower overlap (5/9) survives; other classes
    # are independent; within a window the higher score goes first.
    steps = [(12, [((0, 10), 0.92, 0), ((1, 10), 0.97, 0), ((5, 10), 0.91, 0), ((1, 10), 0.93, 2)], False)]
    assert _emit(pol, steps) == [[((1.0, 10.0), 0.97, 0), ((1.0, 10.0), 0.93, 2), ((5.0, 10.0), 0.91, 0)]]
    # At the stream's end every undecided detection is final, without margin or stability.
    assert _emit(pol, [(13, [((3, 13), 0.2, 0)], True)]) == [[((3.0, 13.0), 0.2, 0)]]
    # Emitted detections are remembered only while a future window can overlap them (T = 64 here).
    emitter = Emitter(pol, SnippetGrid(1.0, 0.0), temporal_scale=64)
    for p in range(4, 4000, 4):
        emitter.step(p, np.array([[p - 4.0, p - 2.0]]), np.array([0.99]), np.array([0]))
    assert len(emitter._emitted_labels) <= 64 // 4 + 1


def test_memory_stays_bounded_on_a_long_stream(det):
    session = det.stream(fps=FPS, policy={**POLICY, "hop": 16})
    x = _features(61, seed=15)
    grid = SnippetGrid.stride(FPS, STRIDE, FRAMES)
    remembered = []
    for _ in range(40):  # 2440 snippets, 76 windows of T = 32
        session.push(x)
        state = session._state
        assert state._buffer.shape == (2 * T, D) and not state._pending and state._buffered <= 2 * T
        # one window's hypotheses, and only the emitted detections a future window can still overlap
        assert len(state.emitter._previous[1]) <= 40  # max_detections of one window
        ends = grid.to_units(state.emitter._emitted_segments[:, 1])
        assert (ends > state.last_run + 1 - T).all()
        remembered.append(len(ends))
    assert max(remembered) > 0
    assert session.snippets == 2440


def test_read_npy_chunks_roundtrip_and_errors():
    chunks = [_features(3), _features(0), np.asfortranarray(_features(5, 1)), np.arange(16, dtype=np.int64)
              .reshape(2, 8)]
    buffer = io.BytesIO()
    for c in chunks:
        np.save(buffer, c)
    buffer.seek(0)
    read = list(read_npy_chunks(buffer))
    assert len(read) == len(chunks)
    for a, b in zip(read, chunks):
        np.testing.assert_array_equal(a, b)
    data = buffer.getvalue()
    with pytest.raises(ValueError, match="truncated"):
        list(read_npy_chunks(io.BytesIO(data[:-5])))
    with pytest.raises(ValueError, match="magic"):
        list(read_npy_chunks(io.BytesIO(b"not an npy file at all")))
    obj = io.BytesIO()
    np.save(obj, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="object"):
        list(read_npy_chunks(io.BytesIO(obj.getvalue())))


def test_stream_metrics_by_hand():
    gt = {"database": {"v1": {"subset": "val", "annotations": [{"segment": [1.0, 3.0], "label": "a"},
                                                               {"segment": [5.0, 9.0], "label": "b"}]}}}
    streamed = StreamDetections(np.array([[1.0, 3.0], [5.0, 8.0], [20.0, 21.0]]), np.array([0.9, 0.8, 0.7]),
                                np.array([0, 1, 0]), ["a", "b"], "v1", np.array([3.5, 9.25, 21.5]))
    m = stream_metrics(gt, [streamed], tiou_thresholds=(0.5, 0.8), subset="val")
    ev = gsmt_fast.evaluate(gt, {"results": {"v1": streamed.to_records()}}, tiou_thresholds=(0.5, 0.8), subset="val")
    assert m["average_mAP"] == pytest.approx(ev.average_mAP)
    # tIoU 0.5: both true positives, delays 3.5 - 3 and 9.25 - 9; tIoU 0.8: only the first ([5, 8] vs [5, 9]: 0.75)
    assert m["end_delay_s"] == pytest.approx([0.375, 0.5])
    assert m["mean_end_delay_s"] == pytest.approx(0.4375)
    assert m["true_positives"] == [2, 1] and m["detections"] == 3


def _cli_in_process(args, capsys, monkeypatch, stdin: bytes | None = None):
    from gsmt_fast import cli

    if stdin is not None:
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin)))
    code = cli.main(["stream", *args])
    out, err = capsys.readouterr()
    return code, out, err


def _check_stream_output(out: str, expected: StreamDetections, stream_id):
    lines = [json.loads(line) for line in out.splitlines()]  # every line of standard output is JSON
    *detections, summary = lines
    summary = summary["summary"]
    assert len(detections) == len(expected) == summary["detections"] > 0
    assert [d["label"] for d in detections] == expected.label_names
    np.testing.assert_allclose([d["segment"] for d in detections], expected.segments, rtol=0, atol=1e-12)
    np.testing.assert_allclose([d["gentime"] for d in detections], expected.gentime, rtol=0, atol=1e-12)
    assert all(d.get("stream") == stream_id for d in detections)
    assert summary["snippets"] == 100 and summary["hop"] == 4 and summary["margin"] == 1
    assert summary["mean_delay_s"] == pytest.approx(float(np.mean(expected.gentime - expected.segments[:, 1])))
    assert summary["push_latency_ms"]["p50"] <= summary["push_latency_ms"]["p99"]
    return summary


def test_cli_stream_replays_a_file_and_reads_npy_chunks_from_stdin(det, tiny_ckpt, tmp_path, capsys, monkeypatch):
    x = _features(100, seed=16)
    path = tmp_path / "video.npy"
    np.save(path, x)
    common = ["--ckpt", str(tiny_ckpt), "--fps", "30", "--backend", "torch", "--precision", "fp32", "--hop", "4",
              "--margin", "1"]
    session = det.stream(fps=FPS, hop=4, margin=1)
    expected = StreamDetections.concatenate([session.push(x), session.close()])

    code, out, _ = _cli_in_process([*common, "--features", str(path), "--chunk", "7"], capsys, monkeypatch)
    assert code == 0
    assert _check_stream_output(out, expected, None)["pushes"] == 15  # ceil(100 / 7)

    chunks = io.BytesIO()
    for start, stop in ((0, 13), (13, 14), (14, 60), (60, 100)):
        np.save(chunks, x[start:stop])
    code, out, _ = _cli_in_process([*common, "--features", "-", "--stream-id", "cam7"], capsys, monkeypatch,
                                   stdin=chunks.getvalue())
    assert code == 0
    assert _check_stream_output(out, expected, "cam7")["pushes"] == 4

    code, out, err = _cli_in_process([*common, "--features", "-"], capsys, monkeypatch, stdin=b"garbage bytes here")
    assert code == 2 and out == "" and "magic" in err
    code, out, err = _cli_in_process([*common, "--features", "-", "--realtime"], capsys, monkeypatch, stdin=b"")
    assert code == 2 and out == "" and "--realtime" in err

    # The real entry point with a real pipe: binary .npy chunks on standard input, JSON lines on standard output.
    run = subprocess.run([sys.executable, "-m", "gsmt_fast.cli", "stream", *common, "--features", "-"],
                         input=chunks.getvalue(), capture_output=True, timeout=300)
    assert run.returncode == 0, run.stderr.decode()
    _check_stream_output(run.stdout.decode(), expected, None)


def test_cli_realtime_replay_paces_pushes_by_stream_time(tiny_ckpt, tmp_path):
    """--realtime pushes each chunk once the stream time of its last snippet has passed (a fake clock here)."""
    from gsmt_fast.streaming import replay

    x = _features(20, seed=17)
    path = tmp_path / "v.npy"
    np.save(path, x)
    now = [100.0]
    sleeps = []

    def sleep(seconds):
        sleeps.append(seconds)
        now[0] += seconds

    out = io.StringIO()
    replay(tiny_ckpt, path, out, fps=FPS, chunk=5, realtime=True, backend="torch", precision="fp32",
           clock=lambda: now[0], sleep=sleep)
    # chunk k ends at snippet 5k - 1, whose clip's last frame is at ((5k - 1) * 4 + 16) / 30 s
    np.testing.assert_allclose(sleeps, [((5 * k - 1) * STRIDE + FRAMES) / FPS for k in range(1, 5)][:1] +
                               [5 * STRIDE / FPS] * 3)
    assert json.loads(out.getvalue().splitlines()[-1])["summary"]["snippets"] == 20


def test_disjoint_hops_stream_exactly_the_offline_windows(trained_run, small_thumos):
    """An independent oracle: with hop = T, no margin, everything confident, a horizon of T and no suppression of
    distinct segments, every window's detections are emitted whole at its end, so the stream of a video of k·T
    snippets gives exactly offline window-mode detection without overlap (its windows are the same, and gaussian
    SoftNMS leaves detections of disjoint windows alone), each at the gentime of its window's end."""
    from gsmt_fast.data.annotations import load_annotations
    from gsmt_fast.data.features import FeatureStore

    run, _ = trained_run
    det = gsmt_fast.Detector(run / "best.safetensors", backend="torch", precision="fp32",
                             inference={"max_detections": 100_000, "window_overlap": 0.0})
    t = det.model_config.temporal_scale
    video = load_annotations(small_thumos / "annotations.json").subset("validation")[0]
    x = FeatureStore(small_thumos / "features").load(video.video_id)
    x = x[:(len(x) // t) * t]
    assert len(x) >= 2 * t
    offline = det.detect(x, fps=video.fps)
    policy = {"hop": t, "margin": 0, "confident_score": 0.0, "horizon": t, "suppress_iou": 1.0 - 1e-9}
    session = det.stream(fps=video.fps, policy=policy)
    streamed = StreamDetections.concatenate([session.push(x[i:i + 50]) for i in range(0, len(x), 50)] +
                                            [session.close()])
    assert len(offline) > 20

    def rows(r):
        return sorted(zip(r.labels.tolist(), r.segments[:, 0].tolist(), r.segments[:, 1].tolist()))

    assert rows(streamed) == rows(offline)
    by_key = {k: s for k, s in zip(rows(offline), offline.scores[np.lexsort(
        (offline.segments[:, 1], offline.segments[:, 0], offline.labels))])}
    for k, s in zip(rows(streamed), streamed.scores[np.lexsort(
            (streamed.segments[:, 1], streamed.segments[:, 0], streamed.labels))]):
        assert s == pytest.approx(by_key[k], rel=1e-5)
    grid = SnippetGrid.stride(video.fps, STRIDE, FRAMES)
    window_end = np.ceil(grid.to_units(streamed.segments[:, 1]) / t - 1e-9) * t
    np.testing.assert_allclose(streamed.gentime, ((window_end - 1) * STRIDE + FRAMES) / video.fps, atol=1e-9)


@pytest.mark.parametrize("backend", ["reference", "triton"])
def test_every_backend_streams_the_torch_detections(tiny_ckpt, det, backend):
    """The session only calls run_windows: another backend streams the same detections (fp32; scores to the
    backends' summation-order tolerance). The triton kernels run under the interpreter on a CPU."""
    from gsmt_fast.kernels import triton_available

    if backend == "triton" and not triton_available():
        pytest.skip("triton is not installed")
    x = _features(45, seed=18)
    other = gsmt_fast.Detector(tiny_ckpt, backend=backend, precision="fp32")
    expected, _ = _run(det, x, [20, 25])
    got, _ = _run(other, x, [20, 25])
    assert len(expected) > 5
    _same(got, expected)


def test_pool_keeps_its_own_copy_of_queued_chunks(det):
    """A server reuses its receive buffer: changing it after push() must not change what the next tick sees."""
    x = _features(40, seed=19)
    pool = det.stream_pool(fps=FPS, policy=POLICY)
    pool.open("a")
    buffer = x.copy()
    pool.push("a", buffer)
    buffer[:] = np.nan
    pooled = StreamDetections.concatenate([pool.tick().get("a", StreamDetections(np.zeros((0, 2)), np.zeros(0),
                                                                                  np.zeros(0, np.int64))),
                                           *pool.close_all().values()], class_names=det.class_names)
    alone, _ = _run(det, x, [40])
    _same(pooled, alone)


def test_iterating_detections_gives_the_rows_of_the_arrays(det):
    """``for start, end, label, score, gentime in session.push(x)``: one named tuple per row, in emission order, the
    same values as the arrays; a plain DetectionResult iterates the same way without gentime."""
    session = det.stream(fps=FPS, hop=4, margin=1)
    streamed = StreamDetections.concatenate([session.push(_features(90, seed=21)), session.close()])
    assert len(streamed) > 3
    rows = list(streamed)
    assert len(rows) == len(streamed)
    for i, row in enumerate(rows):
        assert isinstance(row, gsmt_fast.StreamDetection)
        assert (row.start, row.end) == tuple(streamed.segments[i])
        assert row.label == streamed.class_names[streamed.labels[i]] and row.score == streamed.scores[i]
        assert row.gentime == streamed.gentime[i] and row.gentime >= row.end
    offline = det.detect(_features(90, seed=21), fps=FPS)
    plain = list(offline)
    assert [type(r) for r in plain] == [gsmt_fast.Detection] * len(offline)
    expected = zip(offline.segments, offline.label_names, offline.scores)
    assert [(r.start, r.end, r.label, r.score) for r in plain] == [(s[0], s[1], n, c) for s, n, c in expected]
    assert list(StreamDetections(np.zeros((0, 2)), np.zeros(0), np.zeros(0, np.int64))) == []
