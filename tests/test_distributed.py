"""Two processes on the CPU over Gloo: DDP training against single-process training, sharded detection against
one-process detection, and a rank killed mid-run then rerun (the rerun under a real ``torchrun``).

Ranks are forked by tests/rank_launcher.py with torchrun's environment (one intra-op thread each, as torchrun
sets), and every single-process expectation is computed with one thread too: the CPU kernels may pick other code
paths (and so other last bits) for other thread counts."""

import json
import os
import signal
import subprocess
import sys

import pytest
import torch
from rank_launcher import run_ranks
from safetensors.torch import load_file
from sharding_setup import one_thread, per_video_results
from training_setup import THUMOS_CONFIG

from gsmt_fast.results import write_results
from gsmt_fast.sharding import KILL_AFTER_CHUNKS_ENV
from gsmt_fast.train import load_config, train

# 8 videos (7 for training) cut into 31 windows of T = 256: global batches of 10, 10, 10 and 1 window, so the last
# step leaves rank 1 without a window (it must still take part, with weight 0).
TRAIN_SETTINGS = ["model.preset=tiny", "model.mask_dim=32", "model.num_layers=1", "train.batch_size=10"]


@pytest.fixture(scope="module")
def tiny_thumos(tmp_path_factory):
    from gsmt_fast.data.synthetic import generate

    root = tmp_path_factory.mktemp("thumos_tiny")
    generate("thumos-like", root, seed=5, num_videos=8, progress=False)
    return root


@pytest.fixture
def single_thread():
    with one_thread():
        yield


@pytest.fixture(autouse=True)
def _no_torchrun_env(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", KILL_AFTER_CHUNKS_ENV):
        monkeypatch.delenv(name, raising=False)


def _train_argv(data, out, epochs, resume=False):
    argv = ["train", "--config", str(THUMOS_CONFIG), "--data", str(data), "--out", str(out), "--quiet"]
    for item in TRAIN_SETTINGS + [f"train.epochs={epochs}"]:
        argv += ["--set", item]
    return argv + (["--resume"] if resume else [])


def _run_ok(argv, world, log_dir, env=None):
    codes, logs = run_ranks(argv, world, log_dir, env=env)
    assert codes == [0] * world, "\n".join(logs)
    return logs


def _epochs(run):
    return [{k: v for k, v in e.items() if k != "train_seconds"}
            for e in json.loads((run / "metrics.json").read_text())["epochs"]]


def test_two_rank_training_equals_single_process_and_resumes(tiny_thumos, tmp_path, single_thread):
    single, two, resumed = tmp_path / "single", tmp_path / "two", tmp_path / "resumed"
    train(load_config(THUMOS_CONFIG, TRAIN_SETTINGS + ["train.epochs=2"]), single, data_root=tiny_thumos,
          progress=False, log=lambda *a: None)
    logs = _run_ok(_train_argv(tiny_thumos, two, 2), 2, tmp_path / "logs_two")
    assert "2 ranks x 5 windows per step" in logs[0] and logs[1].strip() == ""  # rank 1 logs nothing

    ws, w2 = load_file(str(single / "last.safetensors")), load_file(str(two / "last.safetensors"))
    assert ws.keys() == w2.keys()
    # The attention's key bias has a gradient of exactly zero in exact arithmetic (adding one vector to every key
    # shifts all scores of a query equally; softmax ignores that), so AdamW turns float round-off into steps of
    # up to ~lr there, and any change of summation order changes them. Every other tensor must agree within 1e-5
    # relative; the key bias must not change what the network computes.
    hidden = ws["blocks.0.attn.qkv.bias"].numel() // 3
    for name in ws:
        a, b = ws[name].double(), w2[name].double()
        if name.endswith("attn.qkv.bias"):
            a, b = torch.cat([a[:hidden], a[2 * hidden:]]), torch.cat([b[:hidden], b[2 * hidden:]])
        assert (a - b).norm() <= 1e-5 * b.norm() + 1e-12, name
    from gsmt_fast import load_checkpoint
    from gsmt_fast.data.dataset import load_dataset_spec, load_split

    (m_single, _), (m_two, _) = load_checkpoint(single / "last.safetensors"), load_checkpoint(two / "last.safetensors")
    x = torch.from_numpy(load_split(load_dataset_spec({}, tiny_thumos))[1].load("video_training_0000001")[:256])
    with torch.no_grad():
        for out_single, out_two in zip(m_single.forward_logits(x[None]), m_two.forward_logits(x[None])):
            assert (out_single - out_two).abs().max() <= 1e-5 * out_single.abs().max()

    # Logged losses are the global batch's: those of single-process training, up to summation order.
    e_single, e_two = _epochs(single), _epochs(two)
    for a, b in zip(e_single, e_two):
        for key in (k for k in a if k.startswith("loss_")):
            assert b[key] == pytest.approx(a[key], rel=1e-6), key
    # Validation ran once, on rank 0: the logged mAP is the evaluation of the saved weights by detect + eval.
    from gsmt_fast import Detector, evaluate
    from gsmt_fast.data.annotations import detect_kwargs, load_annotations
    from gsmt_fast.data.features import FeatureStore
    from gsmt_fast.detector import results_to_json

    metrics = json.loads((two / "metrics.json").read_text())
    assert metrics["world_size"] == 2
    videos = load_annotations(tiny_thumos / "annotations.json").subset("validation")
    store = FeatureStore(tiny_thumos / "features")
    det = Detector(two / "last.safetensors", precision="fp32")
    res = results_to_json(det.detect([store.load(v.video_id) for v in videos], **detect_kwargs(videos)))
    r = evaluate(tiny_thumos / "annotations.json", res, subset="validation", warn=False)
    assert r.average_mAP == metrics["epochs"][-1]["val_average_mAP"]

    # --resume of a distributed run: one epoch, then resumed to two, equals the two-epoch run bit for bit.
    _run_ok(_train_argv(tiny_thumos, resumed, 1), 2, tmp_path / "logs_r1")
    logs = _run_ok(_train_argv(tiny_thumos, resumed, 2, resume=True), 2, tmp_path / "logs_r2")
    assert "resumed from epoch 1" in logs[0]
    wr = load_file(str(resumed / "last.safetensors"))
    assert all(torch.equal(wr[k], w2[k]) for k in w2)
    assert _epochs(resumed) == e_two
    for run in (two, resumed):
        assert not list(run.glob(".*.tmp")), "no temporary files may be left behind"


def test_bad_global_batch_is_a_clear_error_on_every_rank(tiny_thumos, tmp_path):
    argv = _train_argv(tiny_thumos, tmp_path / "run", 1) + ["--set", "train.batch_size=7"]
    codes, logs = run_ranks(argv, 2, tmp_path / "logs")
    # Each rank refuses the config before joining the group (exit 2, the message in its log); a rank still starting
    # when the other has failed is stopped by the launcher (a negative code), as torchrun's agent does.
    finished = [(code, log) for code, log in zip(codes, logs) if code >= 0]
    assert finished and all(code == 2 for code, _ in finished), codes
    assert all("train.batch_size=7 is the global batch" in log and "divisible by 2" in log for _, log in finished)


@pytest.fixture(scope="module")
def detect_job(trained_run, small_thumos, tmp_path_factory):
    """Detection arguments on the 30-video benchmark, and the expected results JSON: one ``Detector.detect`` per
    video at one thread (chunks of one video make the sharded run's detect calls exactly these)."""
    ckpt, ann, feats = trained_run[0] / "best.safetensors", small_thumos / "annotations.json", small_thumos / "features"
    expected = tmp_path_factory.mktemp("expected") / "results.json"
    with one_thread():
        write_results(expected, per_video_results(ckpt, ann, feats))
    args = ["detect", "--ckpt", str(ckpt), "--features", str(feats), "--annotations", str(ann), "--precision",
            "fp32", "--quiet"]
    return args, expected.read_bytes()


def _records(parts_dir):
    """(file name, chunk, videos) of every complete record line, read without gsmt_fast.sharding."""
    out = []
    for path in sorted(parts_dir.glob("part-*.jsonl")):
        lines = path.read_bytes().split(b"\n")[:-1]  # the last element is an unfinished line (or empty)
        for line in lines[1:]:  # after the header
            rec = json.loads(line)
            out.append((path.name, rec["chunk"], tuple(rec["videos"])))
    return out


def test_two_ranks_write_the_json_of_one_process(detect_job, tmp_path):
    args, expected = detect_job
    out = tmp_path / "results.json"
    logs = _run_ok(args + ["--out", str(out), "--chunk-size", "1"], 2, tmp_path / "logs1")
    assert out.read_bytes() == expected
    records = _records(tmp_path / "results.json.parts")
    by_rank = [len([r for r in records if r[0] == f"part-0000{k}-of-00002.jsonl"]) for k in (0, 1)]
    assert min(by_rank) >= 10 and sum(by_rank) == 30  # both ranks worked; every video once
    assert "30 videos" in logs[0]

    # Default chunking (chunks of 8 videos, several videos per detect call): 2 ranks == 1 process, byte for byte.
    two, one = tmp_path / "two.json", tmp_path / "one.json"
    _run_ok(args + ["--out", str(two)], 2, tmp_path / "logs2")
    codes, logs = run_ranks(args + ["--out", str(one), "--shard", "0/1"], 1, tmp_path / "logs3", torchrun=False)
    assert codes == [0], logs
    assert two.read_bytes() == one.read_bytes()
    assert json.loads(two.read_text())["results"].keys() == json.loads(expected)["results"].keys()


def test_killed_rank_then_rerun_redoes_only_unfinished_videos(detect_job, tmp_path):
    args, expected = detect_job
    out = tmp_path / "results.json"
    parts = tmp_path / "results.json.parts"
    argv = args + ["--out", str(out), "--chunk-size", "1"]
    codes, logs = run_ranks(argv, 2, tmp_path / "logs_killed", env={KILL_AFTER_CHUNKS_ENV: "1:3"})
    assert codes[1] == -signal.SIGKILL and codes[0] != 0, logs  # rank 1 killed; rank 0 stopped with the group
    assert not out.exists()
    before = _records(parts)
    assert len([r for r in before if r[0] == "part-00001-of-00002.jsonl"]) == 3
    # Rank 0 might have been stopped in the middle of a write: leave it a torn line to recover from.
    with open(parts / "part-00000-of-00002.jsonl", "ab") as f:
        f.write(b'{"kind":"chunk","chunk":29,"videos":["video_test_00')
    done_before = {v for _, _, videos in before for v in videos}
    assert 3 <= len(done_before) < 30

    env = {**{k: v for k, v in os.environ.items() if k != KILL_AFTER_CHUNKS_ENV}, "OMP_NUM_THREADS": "1"}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                        "-m", "gsmt_fast.cli", *argv], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"{len(before)} chunks were already done" in r.stdout
    after = _records(parts)
    assert all(rec in after for rec in before)  # finished chunks are kept, the torn line is gone
    redone = [v for rec in after if rec not in before for v in rec[2]]
    all_videos = set(json.loads(expected)["results"])
    assert sorted(redone) == sorted(all_videos - done_before)  # each unfinished video once, nothing else
    assert out.read_bytes() == expected
