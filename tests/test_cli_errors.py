"""The command line turns every expected failure into one line ``gsmt-fast <cmd>: error: ...`` (exit status 2 when
found before the work starts, 1 when the work fails), checks outputs before working, and leaves nothing partial."""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from training_setup import THUMOS_CONFIG, TINY

import gsmt_fast
from gsmt_fast.cli import main


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = gsmt_fast.GSMT(gsmt_fast.GSMTConfig.preset("tiny", num_classes=20, temporal_scale=32, input_dim=64))
    path = tmp_path_factory.mktemp("cli_ckpt") / "m.safetensors"
    gsmt_fast.save_checkpoint(model, path)
    return path


def _one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"gsmt-fast {command}: error: "), err
    assert "Traceback" not in err[0]
    return err[0]


def _detect(ckpt, small_thumos, out, *extra):
    return ["detect", "--ckpt", str(ckpt), "--features", str(small_thumos / "features"), "--annotations",
            str(small_thumos / "annotations.json"), "--out", str(out), "--quiet", *extra]


def test_detect_input_errors_are_one_line_before_any_work(ckpt, small_thumos, tmp_path, capsys):
    out = tmp_path / "r.json"
    cases = [
        (_detect(ckpt, small_thumos, out, "--split", "nosuch"), "no video in subset"),
        (["detect", "--ckpt", str(ckpt), "--features", str(tmp_path / "nope"), "--out", str(out), "--fps", "30"],
         "--features .*nope: no such file or folder"),
        (_detect(ckpt, small_thumos, out, "--device", "cuda"), "sees no CUDA device"),
        (_detect(ckpt, small_thumos, out, "--split", "validation", "--tiou", "abc"), "cannot parse tIoU thresholds"),
        (_detect(tmp_path / "missing.safetensors", small_thumos, out), "checkpoint not found"),
        (_detect(ckpt, small_thumos, out, "--batch-size", "0"), "batch_size must be a positive integer"),
    ]
    for argv, match in cases:
        assert main(argv) == 2, argv
        assert re.search(match, _one_error_line(capsys, "detect")), match
        assert not out.exists()


def test_backend_without_its_package_is_one_line(ckpt, small_thumos, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "triton", None)  # as if triton were not installed
    assert main(_detect(ckpt, small_thumos, tmp_path / "r.json", "--backend", "triton")) == 2
    assert "needs the triton package" in _one_error_line(capsys, "detect")


@pytest.mark.parametrize("where", ["folder", "under_a_file", "read_only"])
def test_unwritable_outputs_are_found_before_the_work(ckpt, small_thumos, tmp_path, capsys, where):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    target = {"folder": tmp_path, "under_a_file": blocker / "out", "read_only": "/proc/gsmt_out"}[where]
    gt = str(small_thumos / "annotations.json")
    commands = {
        "detect": _detect(ckpt, small_thumos, f"{target}.json" if where != "folder" else target),
        "train": ["train", "--config", str(THUMOS_CONFIG), "--data", str(small_thumos), "--out",
                  str(blocker if where == "folder" else target), "--quiet"],
        "synth": ["synth", "--profile", "anet-like", "--videos", "2", "--out",
                  str(blocker if where == "folder" else target), "--quiet"],
        "plot": ["plot", "--results", gt, "--annotations", gt, "--video", "x", "--out",
                 str(target) if where == "folder" else f"{target}.png"],
    }
    for command, argv in commands.items():
        assert main(argv) == 2, (command, argv)
        line = _one_error_line(capsys, command)
        assert "cannot write" in line or "is a folder" in line or "not a folder" in line, line


def test_eval_on_a_folder(tmp_path, small_thumos, capsys):
    assert main(["eval", "--results", str(tmp_path), "--annotations", str(small_thumos / "annotations.json")]) == 2
    assert "is a folder" in _one_error_line(capsys, "eval")


@pytest.mark.parametrize("setting", ["epochs=abc", "train.epochs=abc", "train.lr=fast", "train.batch_size=0",
                                     "eval.every=0", "model.foo=1", "train=5", "train.epochz=1", "foo.bar=1",
                                     "train.epochs=-1"])
def test_train_settings_are_rejected_before_anything_is_written(small_thumos, tmp_path, capsys, setting):
    out = tmp_path / "run"
    assert main(["train", "--config", str(THUMOS_CONFIG), "--data", str(small_thumos), "--out", str(out),
                 "--set", setting, "--quiet"]) == 2
    _one_error_line(capsys, "train")
    assert not out.exists()


def test_train_resume_from_damaged_or_foreign_state_is_one_line(trained_run, small_thumos, tmp_path, capsys):
    run, _ = trained_run
    damaged = tmp_path / "damaged"
    shutil.copytree(run, damaged)
    blob = (damaged / "last.safetensors").read_bytes()
    (damaged / "last.safetensors").write_bytes(blob[: len(blob) // 2])
    base = ["train", "--config", str(THUMOS_CONFIG), "--data", str(small_thumos), "--resume", "--quiet",
            *[x for s in TINY + ["train.epochs=4"] for x in ("--set", s)]]
    assert main([*base, "--out", str(damaged)]) == 1
    assert "corrupt or truncated" in _one_error_line(capsys, "train")
    changed = tmp_path / "changed"
    shutil.copytree(run, changed)
    assert main([*base, "--out", str(changed), "--set", "model.mask_dim=16"]) == 1
    assert "holds a different model" in _one_error_line(capsys, "train")


def test_train_logs_one_line_per_epoch_when_stderr_is_not_a_terminal(small_thumos, tmp_path, capsys):
    argv = ["train", "--config", str(THUMOS_CONFIG), "--data", str(small_thumos), "--out", str(tmp_path / "r"),
            *[x for s in TINY + ["train.epochs=2"] for x in ("--set", s)]]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "\r" not in captured.err and "\r" not in captured.out  # no progress-bar frames in a log
    assert sum(line.lstrip().startswith("epoch") for line in captured.out.splitlines()) == 2


def test_demo_shows_no_progress_bars_when_stderr_is_not_a_terminal(tmp_path, monkeypatch, capsys):
    """`make demo > log`: the demo's synthesis and training get the same terminal-only rule as `train`."""
    import gsmt_fast.demo

    seen = {}
    monkeypatch.setattr(gsmt_fast.demo, "run_demo", lambda out, seed, quiet: seen.update(quiet=quiet))
    assert main(["demo", "--out", str(tmp_path / "d")]) == 0
    assert seen == {"quiet": True}


def _wait_for(predicate, timeout: float) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise TimeoutError("the run did not get there in time")
        time.sleep(0.05)


def test_training_killed_mid_epoch_resumes_to_the_same_weights(small_thumos, tmp_path):
    """SIGKILL during epoch 2 of 3 (after epoch 1's state was written), then --resume: the same final weights and
    validation history as an uninterrupted run."""
    from safetensors.torch import load_file

    settings = [x for s in TINY + ["train.epochs=3"] for x in ("--set", s)]
    cli = [sys.executable, "-m", "gsmt_fast.cli", "train", "--config", str(THUMOS_CONFIG), "--data",
           str(small_thumos), "--quiet", *settings]
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    subprocess.run([*cli, "--out", str(straight)], check=True, capture_output=True, timeout=600)
    proc = subprocess.Popen([*cli, "--out", str(killed)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        _wait_for(lambda: (killed / "metrics.json").is_file(), 300)  # epoch 1 is saved: epoch 2 is running
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    saved = json.loads((killed / "metrics.json").read_text())
    assert len(saved["epochs"]) < 3, "the kill came too late to interrupt the run"
    subprocess.run([*cli, "--out", str(killed), "--resume"], check=True, capture_output=True, timeout=600)
    a, b = load_file(str(straight / "last.safetensors")), load_file(str(killed / "last.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    history = [json.loads((d / "metrics.json").read_text())["epochs"] for d in (straight, killed)]
    assert [e["val_average_mAP"] for e in history[0]] == [e["val_average_mAP"] for e in history[1]]


def test_detect_killed_mid_run_leaves_no_results_file(trained_run, tmp_path):
    """The results file is written once, atomically, at the end: a kill during the work leaves the previous file as
    it was (and never a truncated one)."""
    from gsmt_fast.data.synthetic import generate

    run, _ = trained_run
    data = tmp_path / "data"
    generate("thumos-like", data, seed=5, num_videos=120, progress=False)  # enough work to be killed in the middle
    out = tmp_path / "results.json"
    out.write_text('{"previous": true}')
    cli = [sys.executable, "-m", "gsmt_fast.cli", "detect", "--ckpt", str(run / "best.safetensors"),
           "--features", str(data / "features"), "--annotations", str(data / "annotations.json"),
           "--out", str(out), "--backend", "reference"]
    proc = subprocess.Popen(cli, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(5.0)
    assert proc.poll() is None, "detect finished before the kill: give it more videos"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    assert out.read_text() == '{"previous": true}'
