import json
import subprocess
import sys

import pytest

from gsmt_fast.cli import main


def test_detect_then_eval_equals_training_validation_map(trained_run, small_thumos, tmp_path, capsys):
    """Acceptance: the mAP that `eval` computes from `detect` output equals the training-time validation mAP."""
    run, _ = trained_run
    out = tmp_path / "results.json"
    assert main(["detect", "--ckpt", str(run / "best.safetensors"), "--features", str(small_thumos / "features"),
                 "--annotations", str(small_thumos / "annotations.json"), "--split", "validation",
                 "--out", str(out), "--precision", "fp32", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["eval", "--results", str(out), "--annotations", str(small_thumos / "annotations.json"),
                 "--split", "validation", "--per-class"]) == 0
    printed = capsys.readouterr().out
    from gsmt_fast.evaluation import evaluate

    r = evaluate(small_thumos / "annotations.json", out, subset="validation")
    best = json.loads((run / "metrics.json").read_text())["best"]
    assert r.average_mAP == best["average_mAP"]  # exactly, not approximately
    assert f"{100 * r.average_mAP:.2f}" in printed  # the table prints percent
    # The detections are the ones training kept for its best epoch.
    assert json.loads(out.read_text())["results"] == json.loads((run / "val_results.json").read_text())["results"]


def test_plot_writes_png(trained_run, small_thumos, tmp_path):
    run, _ = trained_run
    res = run / "val_results.json"
    vid = next(iter(json.loads(res.read_text())["results"]))
    png = tmp_path / "t.png"
    assert main(["plot", "--results", str(res), "--annotations", str(small_thumos / "annotations.json"),
                 "--video", vid, "--out", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_synth_cli_and_errors(tmp_path, capsys):
    assert main(["synth", "--profile", "anet-like", "--out", str(tmp_path / "a"), "--videos", "6", "--quiet"]) == 0
    assert (tmp_path / "a" / "dataset.json").is_file()
    assert main(["eval", "--results", str(tmp_path / "missing.json"), "--annotations",
                 str(tmp_path / "a" / "annotations.json")]) == 2
    assert "error" in capsys.readouterr().err


def test_help_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "gsmt_fast.cli", "--help"], capture_output=True, text=True).stdout
    for cmd in ("synth", "train", "detect", "eval", "plot", "demo"):
        assert cmd in out


@pytest.mark.parametrize("cmd", ["train", "detect", "eval", "plot", "synth", "demo"])
def test_subcommand_help(cmd):
    r = subprocess.run([sys.executable, "-m", "gsmt_fast.cli", cmd, "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "usage" in r.stdout
