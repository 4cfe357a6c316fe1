"""The benchmark harness (bench/): FLOP counting, an end-to-end tiny run, the peer's skip path, the GPU script."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import gsmt_fast

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

import common  # noqa: E402
import gpu_targets  # noqa: E402
import peer_actionformer  # noqa: E402
import run as bench_run  # noqa: E402


def expected_flops(t: int, d_in: int, c: int, c_m: int, k: int) -> int:
    """2·MACs of one video through the paper architecture, layer by layer (paper Table 3's architecture)."""
    linear = lambda n_in, n_out: 2 * t * n_in * n_out  # noqa: E731 - one (T, n_in) @ (n_in, n_out) product
    conv = lambda n_in, n_out, kernel: 2 * t * n_in * n_out * kernel  # noqa: E731 - Conv1d over T positions
    return (linear(d_in, c)  # input projection
            + linear(c, 3 * c)  # fused QKV
            + 2 * (2 * t * t * c)  # QK^T and AV over all heads: heads · T·T·(C/heads) MACs each
            + linear(c, c)  # attention output projection
            + linear(c, c)  # the block's one-layer MLP
            + conv(c, k + 1, 1)  # classification head
            + conv(c, c_m, 3) + conv(c_m, c_m, 3) + conv(c_m, t, 1))  # mask head


def test_flop_count_of_the_paper_preset_matches_the_layer_shapes_and_table_3():
    cfg = gsmt_fast.GSMTConfig.preset("paper", num_classes=200, temporal_scale=100, input_dim=2048)
    torch.manual_seed(0)
    model = gsmt_fast.GSMT(cfg).eval()
    x = torch.zeros(1, 100, 2048)
    counted, per_op = common.count_flops(lambda: model(x))
    expected = expected_flops(100, 2048, cfg.hidden_dim, cfg.mask_dim, 200)
    assert counted == expected == 636_006_400
    assert any("attention" in op for op in per_op)  # the CPU attention kernel is counted, not silently 0
    assert abs(counted / 0.6e9 - 1) < 0.2  # paper Table 3: 0.6 GFLOPs (i.e. it counts 2·MACs as we do)
    # Padding masks do not change the count.
    assert common.count_flops(lambda: model(x, torch.tensor([60])))[0] == expected


def test_harness_end_to_end_on_a_tiny_config(tmp_path):
    results_md = tmp_path / "RESULTS.md"
    rc = bench_run.main(["--preset", "tiny", "--input-dim", "16", "--T", "16,16:resize", "--K", "3",
                         "--batches", "1,2", "--reps", "1", "--max-reps", "1", "--warmup", "1", "--backends",
                         "reference,no-such-backend", "--peers", "none", "--device", "cpu", "--out", str(tmp_path),
                         "--results-md", str(results_md)])
    assert rc == 0
    (json_path,) = tmp_path.glob("*_cpu-*.json")
    report = json.loads(json_path.read_text())
    assert report["complete"] is True
    for key in ("date", "device", "device_name", "commit", "torch", "python", "torch_threads"):
        assert key in report["env"]
    rows = report["rows"]
    assert {(r["backend"], r["T"], r["mode"], r["batch"]) for r in rows} == {
        ("reference", 16, mode, b) for mode in ("window", "resize") for b in (1, 2)}
    for r in rows:
        for key in ("videos_per_s", "latency_p50_ms", "latency_p99_ms", "forward_ms", "forward_videos_per_s",
                    "post_ms", "post_videos_per_s", "candidates_per_window", "detections_per_video",
                    "host_peak_delta_mib", "device_peak_mib", "reps", "K", "seconds"):
            assert key in r
        assert r["videos_per_s"] > 0 and r["forward_videos_per_s"] > 0 and r["post_videos_per_s"] > 0
        assert r["windows"] == r["batch"]  # one window per video in both modes
    models = report["models"]
    assert len(models) == 2 and all(m["params"] > 0 and m["flops_per_video"] > 0 for m in models)
    # A backend that does not construct is reported with its reason, not silently dropped.
    assert any(s["backend"] == "no-such-backend" and "unknown backend" in s["reason"] for s in report["skipped"])
    assert list(tmp_path.glob("throughput_*.png"))
    table_rows = [line for line in results_md.read_text().splitlines() if "| reference |" in line]
    assert len(table_rows) == 4


def test_actionformer_peer_reports_why_it_is_skipped(monkeypatch):
    monkeypatch.setitem(sys.modules, "actionformer", None)  # import now fails as if not installed
    reason = peer_actionformer.unavailable_reason()
    assert reason and "actionformer" in reason and "pip install" in reason
    rows, info, why = peer_actionformer.bench_config(16, "window", 3, 16, [], {}, [1], "cpu", common.Timing())
    assert rows == [] and info is None and why == reason


def test_actionformer_window_sequence_fits_its_pyramid():
    assert peer_actionformer.window_sequence(256) == (256, 9)  # 256 = 32 · (9 // 2) · 2
    seq, window = peer_actionformer.window_sequence(100)
    assert seq == 128 and (window == -1 or seq % (32 * (window // 2) * 2) == 0)


def test_gpu_check_help():
    out = subprocess.run(["bash", str(BENCH / "gpu_check.sh"), "--help"], capture_output=True, text=True,
                         timeout=30)
    assert out.returncode == 0
    assert "Usage: bash bench/gpu_check.sh RESULTS_DIR" in out.stdout and "--dry-run" in out.stdout


def test_gpu_targets_verdicts_at_and_around_each_threshold(tmp_path):
    """bench/gpu_targets.py on hand-written benchmark JSON: a value exactly at a limit meets it, one just past it
    does not, a missing file or row is NOT MEASURED, and only an H100/H200 run counts."""
    (tmp_path / "bench_triton.json").write_text(json.dumps({"device": "NVIDIA H100 80GB HBM3", "rows": [
        {"backend": "reference", "precision": "fp32", "batch": 8, "videos_per_s": 60.0, "p50_ms": 130.0},
        {"backend": "triton", "precision": "fp16", "batch": 256, "videos_per_s": 49_999.0, "p50_ms": 5.1,
         "speedup_vs_reference": 833.3},
        {"backend": "triton", "precision": "fp16", "batch": 1024, "videos_per_s": 50_000.0, "p50_ms": 20.5,
         "speedup_vs_reference": 49.9},
        {"backend": "triton", "precision": "fp16", "batch": 1, "videos_per_s": 1000.0, "p50_ms": 1.0,
         "p50_ms_to_host": 1.2, "latency_breakdown_ms": {"graph_replay": 0.4}},
        {"backend": "triton", "precision": "bf16", "batch": 1, "videos_per_s": 900.0, "p50_ms": 1.1}]}))
    (tmp_path / "accuracy_thumos.json").write_text(json.dumps({"rows": [
        {"run": "reference", "average_mAP": 0.6581},
        {"run": "triton:bf16", "average_mAP": 0.6531, "delta_mAP": -0.005},
        {"run": "triton:fp16", "average_mAP": 0.6632, "delta_mAP": 0.0051}]}))
    (tmp_path / "bench_postprocess.json").write_text(json.dumps({"rows": [
        {"T": 256, "B": 1024, "impl": "CUDA", "call": "batched", "vps": 200_000.0},
        {"T": 256, "B": 1, "impl": "CUDA", "call": "per video", "vps": 9_000_000.0}]}))
    targets, device = gpu_targets.evaluate(tmp_path)
    verdicts = {t.name: t.verdict for t in targets}
    # The best batch >= 256 row is batch 1024 (50,000 videos/s: met); its 49.9x is not 50x.
    assert verdicts["triton throughput, batch >= 256"] == "MET"
    assert verdicts["triton vs reference, same run"] == "NOT MET"
    assert verdicts["batch-1 latency (p50)"] == "MET"  # the faster batch-1 row, exactly 1.0 ms
    assert verdicts["triton:bf16 mAP vs reference, thumos-like"] == "MET"
    assert verdicts["triton:fp16 mAP vs reference, thumos-like"] == "NOT MET"
    assert verdicts["triton:bf16 mAP vs reference, anet-like"] == "NOT MEASURED"
    assert verdicts["CUDA post-processing, T 256, batch 1024"] == "MET"
    latency = next(t for t in targets if t.name == "batch-1 latency (p50)")
    assert "1.000 ms (fp16; to host 1.200 ms)" in latency.measured and "graph_replay 0.4" in latency.measured
    assert "informational" not in gpu_targets.render(targets, device)
    assert "not an H100" in gpu_targets.render(targets, "cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert {t.verdict for t in gpu_targets.evaluate(empty)[0]} == {"NOT MEASURED"}


def test_cli_bench_passes_arguments_through(capsys):
    from gsmt_fast.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["bench", "--help"])
    assert exit_info.value.code == 0
    assert "usage: gsmt-fast bench" in capsys.readouterr().out


def test_cli_bench_never_runs_code_from_the_working_directory(tmp_path, monkeypatch, capsys):
    """A bench/run.py planted in the working directory is not executed: only the package's own checkout counts."""
    from gsmt_fast import cli

    planted = tmp_path / "bench" / "run.py"
    planted.parent.mkdir()
    marker = tmp_path / "ran"
    planted.write_text(f"open({str(marker)!r}, 'w').write('x')\ndef main(argv, prog=None):\n    return 0\n")
    monkeypatch.chdir(tmp_path)
    script, looked = cli.find_bench_script()
    assert script is None or tmp_path not in script.parents
    assert all(tmp_path not in p.parents for p in looked)
    # With no checkout around the package (a wheel install), the command explains instead of running anything.
    monkeypatch.setattr(cli, "__file__", str(tmp_path / "site-packages" / "gsmt_fast" / "cli.py"))
    assert cli.main(["bench", "--quick"]) == 2
    assert not marker.exists()
    assert "Clone the repository" in capsys.readouterr().err
