"""Sharded detection's pieces in one process: planning, balancing, part files (torn writes, corruption, foreign
jobs, locks), merging, snippet counts from file headers, the distributed helpers' errors, and ``--shard`` runs."""

import json
import random
import re

import numpy as np
import pytest
from sharding_setup import one_thread, per_video_results

from gsmt_fast import distributed
from gsmt_fast.data.features import FeatureStore, write_features
from gsmt_fast.sharding import (
    Chunk,
    PartFileError,
    PartWriter,
    assign_chunks,
    default_chunk_size,
    merge_parts,
    parse_part,
    parse_shard,
    plan_chunks,
    read_completed,
    read_part,
)


def test_parse_shard():
    assert parse_shard("0/1") == (0, 1)
    assert parse_shard(" 3 / 8 ") == (3, 8)
    for bad in ("1/1", "4/3", "0/0", "a/b", "1", "-1/2", "1/2/3"):
        with pytest.raises(ValueError, match="--shard"):
            parse_shard(bad)


def test_default_chunk_size_bounds():
    assert default_chunk_size(1) == 8  # at least 8 videos per detect call
    assert default_chunk_size(30) == 8
    assert default_chunk_size(64 * 20) == 20  # about 64 chunks
    assert default_chunk_size(64 * 20 + 1) == 21
    assert default_chunk_size(10**6) == 256  # at most 256 videos lost to a kill


def test_plan_chunks_by_decreasing_length_ties_in_input_order():
    # Lengths of videos 0..4; sorted: 1 (9), 3 (9), 0 (5), 4 (3), 2 (1).
    chunks = plan_chunks([5, 9, 1, 9, 3], chunk_size=2)
    assert chunks == [Chunk(0, (1, 3), 18), Chunk(1, (0, 4), 8), Chunk(2, (2,), 1)]
    assert plan_chunks([5, 9, 1, 9, 3], chunk_size=10) == [Chunk(0, (1, 3, 0, 4, 2), 27)]
    with pytest.raises(ValueError, match="chunk size"):
        plan_chunks([1], 0)
    with pytest.raises(ValueError, match="snippet"):
        plan_chunks([3, 0], 1)


def test_assign_chunks_longest_first_to_least_loaded():
    chunks = [Chunk(0, (0,), 10), Chunk(1, (1,), 7), Chunk(2, (2,), 6), Chunk(3, (3,), 5), Chunk(4, (4,), 2)]
    # 10 -> r0; 7 -> r1; 6 -> r1 (7 < 10); 5 -> r0 (10 < 13); 2 -> r1 (13 < 15).
    assert assign_chunks(chunks, 2) == [[0, 3], [1, 2, 4]]
    assert assign_chunks(chunks, 1) == [[0, 1, 2, 3, 4]]
    assert assign_chunks(chunks, 7) == [[0], [1], [2], [3], [4], [], []]
    # Done chunks are left out and the rest is spread again: 7 -> r0, 6 -> r1, 2 -> r1.
    assert assign_chunks(chunks, 2, exclude={0, 3}) == [[1], [2, 4]]


def test_assign_chunks_balance_property():
    rng = random.Random(7)
    for world in (2, 3, 8):
        lengths = [rng.randint(10, 3000) for _ in range(500)]
        chunks = plan_chunks(lengths, chunk_size=default_chunk_size(len(lengths)))
        shares = assign_chunks(chunks, world)
        assert sorted(k for share in shares for k in share) == [c.index for c in chunks]  # each chunk exactly once
        loads = [sum(chunks[k].cost for k in share) for share in shares]
        assert max(loads) - min(loads) <= max(c.cost for c in chunks)  # LPT: within one chunk


JOB = {"format": "gsmt_fast.detect-parts/1", "detector": {"backend": "torch"}, "num_videos": 3}
RECORDS = {"a": [{"label": "x", "score": 0.5, "segment": [0.1, 2.0000000000000004]}], "b": []}


def _write_two_chunks(path):
    with PartWriter(path, JOB) as w:
        w.append(0, ["a", "b"], RECORDS)
        w.append(1, ["c"], {"c": [{"label": "y", "score": 0.25, "segment": [1.0, 3.0]}]})


def test_part_file_round_trip_and_torn_tail(tmp_path):
    path = tmp_path / "part-00000-of-00001.jsonl"
    _write_two_chunks(path)
    intact = path.read_bytes()
    content = read_part(path, JOB)
    assert [c["chunk"] for c in content.chunks] == [0, 1]
    assert content.chunks[0]["results"] == RECORDS  # floats come back exactly
    assert content.discarded_bytes == 0
    # A kill in the middle of a write leaves an unterminated line: it is not a finished chunk.
    torn = b'{"kind":"chunk","chunk":2,"videos":["d"],"resu'
    path.write_bytes(intact + torn)
    content = read_part(path, JOB)
    assert [c["chunk"] for c in content.chunks] == [0, 1] and content.discarded_bytes == len(torn)
    # A complete line whose checksum does not match (garbage at the end after a crash) is discarded too.
    bad = json.loads(intact.splitlines()[2])
    bad["results"]["c"][0]["score"] = 0.75
    path.write_bytes(intact + json.dumps(bad).encode() + b"\n" + torn)
    assert [c["chunk"] for c in read_part(path, JOB).chunks] == [0, 1]
    # Reopening for append truncates the bad tail first, so the next record starts on a clean line.
    with PartWriter(path, JOB) as w:
        assert w.discarded_bytes > len(torn)
        w.append(2, ["d"], {"d": []})
    assert path.read_bytes().startswith(intact)
    assert [c["chunk"] for c in read_part(path, JOB).chunks] == [0, 1, 2]


def test_part_file_torn_header_is_an_empty_file(tmp_path):
    path = tmp_path / "part-00000-of-00001.jsonl"
    path.write_bytes(b'{"kind":"header","form')
    assert parse_part(path.read_bytes(), "p").header is None
    with PartWriter(path, JOB) as w:
        w.append(0, ["a", "b"], RECORDS)
    assert [c["chunk"] for c in read_part(path, JOB).chunks] == [0]


def test_part_file_corruption_before_valid_lines_is_an_error(tmp_path):
    path = tmp_path / "part-00000-of-00001.jsonl"
    _write_two_chunks(path)
    lines = path.read_bytes().splitlines(keepends=True)
    lines[1] = lines[1].replace(b'"score":0.5', b'"score":0.6')
    path.write_bytes(b"".join(lines))
    with pytest.raises(PartFileError, match="line 2 is corrupt .*checksum"):
        read_part(path, JOB)
    with pytest.raises(PartFileError, match="line 2 is corrupt"):
        PartWriter(path, JOB)


def test_part_file_of_another_job_is_refused(tmp_path):
    path = tmp_path / "part-00000-of-00001.jsonl"
    _write_two_chunks(path)
    other = {**JOB, "detector": {"backend": "reference"}}
    with pytest.raises(PartFileError, match=r"another detection job \(differs in: detector.backend\)"):
        read_part(path, other)
    with pytest.raises(PartFileError, match="another detection job"):
        PartWriter(path, other)


def test_part_file_is_locked_while_written(tmp_path):
    path = tmp_path / "part-00000-of-00001.jsonl"
    with PartWriter(path, JOB):
        with pytest.raises(PartFileError, match="another process"):
            PartWriter(path, JOB)
    PartWriter(path, JOB).close()  # released on close


def test_read_completed_and_merge_in_input_order(tmp_path):
    ids = ["v0", "v1", "v2", "v3"]
    chunks = plan_chunks([4, 9, 1, 6], chunk_size=2)  # chunk 0: v1, v3; chunk 1: v0, v2
    results = {v: [{"label": "x", "score": 0.1 * (i + 1), "segment": [0.0, 1.0]}] for i, v in enumerate(ids)}
    with PartWriter(tmp_path / "part-00001-of-00002.jsonl", JOB) as w:
        w.append(1, ["v0", "v2"], {"v0": results["v0"], "v2": results["v2"]})
    done = read_completed(tmp_path, JOB, chunks, ids)
    assert set(done) == {1}
    with pytest.raises(PartFileError, match="1 of 2 chunks are not finished"):
        merge_parts(done, chunks, ids)
    with PartWriter(tmp_path / "part-00000-of-00002.jsonl", JOB) as w:
        w.append(0, ["v1", "v3"], {"v3": results["v3"], "v1": results["v1"]})
    merged = merge_parts(read_completed(tmp_path, JOB, chunks, ids), chunks, ids)
    assert list(merged) == ids and merged == results
    # A record that does not match the plan (videos of another chunk) is an error, not a silent mix.
    with PartWriter(tmp_path / "part-00000-of-00003.jsonl", JOB) as w:
        w.append(0, ["v0", "v2"], {})
    with pytest.raises(PartFileError, match="does not match this job's plan"):
        read_completed(tmp_path, JOB, chunks, ids)


def test_num_snippets_from_headers_matches_load(tmp_path):
    rng = np.random.default_rng(0)
    a, b = tmp_path / "a", tmp_path / "b"
    arrays = {"vid1": rng.normal(size=(7, 3)), "v_vid2": rng.normal(size=(12, 3)).astype(np.float32)}
    for name, arr in arrays.items():
        write_features(a / f"{name}.npy", arr)
    write_features(a / "vid3.npz", rng.normal(size=(5, 3)))
    write_features(a / "vid4.csv", rng.normal(size=(4, 3)))
    store = FeatureStore(a)
    for vid in store.video_ids():
        assert store.num_snippets(vid) == len(store.load(vid)), vid
    assert store.num_snippets("v_vid2") == 12
    # Two streams one snippet apart: the shorter one, as load() keeps.
    write_features(b / "vid1.npy", rng.normal(size=(6, 2)))
    two = FeatureStore([a, b])
    assert two.num_snippets("vid1") == len(two.load("vid1")) == 6
    with pytest.raises(KeyError, match="vid9"):
        store.num_snippets("vid9")


def test_per_rank_batch_and_torchrun_env_errors(monkeypatch):
    assert distributed.per_rank_batch(16, 4) == 4
    with pytest.raises(ValueError, match="batch_size=16 is the global batch.*divisible by 3"):
        distributed.per_rank_batch(16, 3)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    assert distributed.torchrun_env() is None and distributed.init_from_env() == distributed.WorldInfo()
    monkeypatch.setenv("RANK", "1")
    with pytest.raises(ValueError, match="WORLD_SIZE is not"):
        distributed.torchrun_env()
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(ValueError, match="0 <= RANK < WORLD_SIZE"):
        distributed.torchrun_env()
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert distributed.torchrun_env() == (1, 2, 0)
    with pytest.raises(ValueError, match="MASTER_ADDR and MASTER_PORT"):
        distributed.init_from_env()
    assert distributed.choose_backend("cpu") == "gloo" and distributed.choose_backend(None) == "gloo"


@pytest.fixture
def single_thread():
    with one_thread():
        yield


def test_shards_run_separately_then_the_last_one_merges(trained_run, small_thumos, tmp_path, capsys, monkeypatch,
                                                        single_thread):
    from gsmt_fast.cli import main
    from gsmt_fast.results import write_results

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ckpt, ann, feats = trained_run[0] / "best.safetensors", small_thumos / "annotations.json", small_thumos / "features"
    expected = tmp_path / "expected.json"
    write_results(expected, per_video_results(ckpt, ann, feats))
    out = tmp_path / "out" / "results.json"
    argv = ["detect", "--ckpt", str(ckpt), "--features", str(feats), "--annotations", str(ann), "--out", str(out),
            "--precision", "fp32", "--chunk-size", "1", "--quiet"]
    assert main(argv + ["--shard", "1/2"]) == 0
    printed = capsys.readouterr().out
    others = int(re.search(r"(\d+) of 30 chunks belong to shards still running", printed).group(1))
    assert 0 < others < 30 and not out.exists()
    shard1 = parse_part((out.parent / "results.json.parts" / "part-00001-of-00002.jsonl").read_bytes(), "shard 1")
    assert len(shard1.chunks) == 30 - others
    assert main(argv + ["--shard", "0/2"]) == 0
    assert "30 videos" in capsys.readouterr().out
    assert out.read_bytes() == expected.read_bytes()
    # A rerun of a finished shard detects nothing and merges the same file again.
    out.unlink()
    assert main(argv + ["--shard", "0/2"]) == 0
    assert "detected 0 chunks (0 videos)" in capsys.readouterr().out
    assert out.read_bytes() == expected.read_bytes()
    # Rerunning with another chunk size is another job: refused, naming what differs.
    assert main(argv[:-3] + ["--chunk-size", "2", "--quiet", "--shard", "0/2"]) == 2
    assert "chunk_size" in capsys.readouterr().err


def test_detect_cli_errors(trained_run, small_thumos, tmp_path, capsys, monkeypatch):
    from gsmt_fast.cli import main

    base = ["detect", "--ckpt", str(trained_run[0] / "best.safetensors"), "--features",
            str(small_thumos / "features"), "--annotations", str(small_thumos / "annotations.json"), "--out",
            str(tmp_path / "r.json"), "--quiet"]
    assert main(base + ["--shard", "2/2"]) == 2
    assert "0 <= i < n" in capsys.readouterr().err
    assert main(base + ["--chunk-size", "4"]) == 2
    assert "add --shard" in capsys.readouterr().err
    assert main(base + ["--shard", "0/1", "--chunk-size", "0"]) == 2
    assert "--chunk-size must be >= 1" in capsys.readouterr().err
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "1")
    assert main(base + ["--shard", "0/1"]) == 2
    assert "use one of them" in capsys.readouterr().err
    assert not (tmp_path / "r.json").exists()
