import json

import pytest
import torch
from safetensors.torch import load_file
from training_setup import THUMOS_CONFIG, TINY

from gsmt_fast.train import load_config, train


def _cfg(epochs):
    return load_config(THUMOS_CONFIG, TINY + [f"train.epochs={epochs}"])


def test_metrics_and_outputs(trained_run):
    run, cfg = trained_run
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["epochs"]) == 3
    for rec in metrics["epochs"]:
        assert {"loss_cls", "loss_mask", "loss_total", "val_average_mAP", "val_mAP"} <= set(rec)
        assert set(rec["val_mAP"]) == {"0.3", "0.4", "0.5", "0.6", "0.7"}
    best = max(metrics["epochs"], key=lambda r: r["val_average_mAP"])
    assert metrics["best"]["average_mAP"] == best["val_average_mAP"]
    for name in ("best.safetensors", "last.safetensors", "train_state.pt", "config.yaml", "val_results.json"):
        assert (run / name).is_file(), name
    assert not list(run.glob(".*.tmp")), "no temporary files may be left behind"
    # Training decreases the loss.
    assert metrics["epochs"][-1]["loss_total"] < metrics["epochs"][0]["loss_total"]


def test_same_seed_gives_same_weights_and_resume_continues_identically(small_thumos, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    train(_cfg(2), a, data_root=small_thumos, progress=False, log=lambda *x: None)
    # b: interrupted after 1 epoch, then resumed for the second.
    train(_cfg(1), b, data_root=small_thumos, progress=False, log=lambda *x: None)
    train(_cfg(2), b, data_root=small_thumos, progress=False, resume=True, log=lambda *x: None)
    wa, wb = load_file(str(a / "last.safetensors")), load_file(str(b / "last.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    ma = json.loads((a / "metrics.json").read_text())
    mb = json.loads((b / "metrics.json").read_text())
    assert [e["val_average_mAP"] for e in ma["epochs"]] == [e["val_average_mAP"] for e in mb["epochs"]]


def test_config_errors(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("trian: {epochs: 3}\n")
    with pytest.raises(ValueError, match="unknown config section"):
        load_config(p)
    with pytest.raises(ValueError, match="key=value"):
        load_config(None, ["train.epochs"])
    cfg = load_config(None, ["train.epochs=7", "inference.mask_thresholds=[0.5]"])
    assert cfg["train"]["epochs"] == 7 and cfg["inference"]["mask_thresholds"] == [0.5]
