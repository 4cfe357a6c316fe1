"""Training (``gsmt-fast train``): deterministic on CPU for a seed, validation mAP every epoch, best-checkpoint
selection, ``metrics.json``, and resume after interruption.

Outputs in ``OUT``: ``config.yaml`` (the resolved config), ``metrics.json`` (every epoch's loss terms and validation
mAP), ``last.safetensors`` + ``train_state.pt`` (resume point), ``best.safetensors`` (best validation average mAP),
``val_results.json`` (detections of the best epoch). Every file is written atomically.

Distributed (``torchrun --nproc-per-node N -m gsmt_fast.cli train ...``; see docs/SCALING.md): DistributedDataParallel
over Gloo. ``train.batch_size`` stays the global batch: every step takes the same windows as single-process training
(the same per-epoch permutation), each rank ``batch_size / N`` of them. Each rank's loss terms are weighted by its
share of the global batch's valid snippets (classification) and action snippets (mask), so the averaged gradients
are the single-process gradients up to float summation order, and the logged losses are the global batch's.
Validation and every file are rank 0's; the other ranks wait for it at their next collective.

Validation uses exactly the inference path (:class:`gsmt_fast.Detector`, ``backend="auto"``, ``precision="fp32"``)
and the evaluator, so ``gsmt-fast detect --precision fp32`` + ``gsmt-fast eval`` on ``best.safetensors`` reproduce
the logged validation mAP exactly (the CPU default, bf16 where the CPU has it, moves it by < 0.005).
"""

from __future__ import annotations

import copy
import json
import math
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from . import distributed
from .checkpoint import save_checkpoint
from .config import GSMTConfig, InferenceConfig, LossConfig
from .data.annotations import detect_kwargs
from .data.dataset import WindowDataset, load_dataset_spec, load_split
from .detector import Detector, results_to_json
from .evaluation import evaluate, parse_thresholds
from .files import atomic_path, atomic_write_json, atomic_write_text
from .losses import GSMTLoss
from .model import GSMT
from .results import write_results

DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "data": {"root": None},
    "model": {"preset": "small"},
    "loss": {"cls_loss": "focal_lr", "mask_loss": "default", "lambda1": 0.4, "lambda2": 0.4, "lambda_b": 0.1,
             "gamma": 2.0, "alpha": 10.0, "kernel_size": 7, "balanced_bce": True, "lambda_boundary": 1.0},
    "train": {"epochs": 20, "batch_size": 16, "optimizer": "adamw", "lr": 1e-3, "weight_decay": 1e-4,
              "momentum": 0.9, "scheduler": "cosine", "warmup_epochs": 1, "grad_clip": 1.0,
              "window_overlap": 0.5, "skip_empty_windows": False, "num_threads": None},
    "inference": {},
    "eval": {"tiou_thresholds": "0.3:0.1:0.7", "every": 1},
}


def deep_update(base: dict, new: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in new.items():
        out[k] = deep_update(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# The keys each config section accepts: the defaults above, the dataclasses' fields, and the data spec's keys.
def _section_keys(section: str) -> tuple[str, ...] | None:
    """The keys ``section`` accepts (None: the section is a scalar, e.g. ``seed``)."""
    import dataclasses

    if section == "model":
        return ("preset", *(f.name for f in dataclasses.fields(GSMTConfig)))
    if section == "inference":
        return tuple(f.name for f in dataclasses.fields(InferenceConfig))
    if section == "data":  # a dataset spec, plus the folder it lies in
        from .data.dataset import DatasetSpec

        return ("root", *(f.name for f in dataclasses.fields(DatasetSpec)))
    default = DEFAULTS[section]
    return tuple(default) if isinstance(default, dict) else None


def set_by_path(cfg: dict, dotted: str, value: str) -> None:
    """Apply one ``--set key.sub=value`` override; the value is parsed as YAML (numbers, lists, booleans). Unknown
    keys are an error that lists the valid ones (a misspelt key must not silently train with the default)."""
    keys = dotted.split(".")
    if keys[0] not in DEFAULTS:
        raise ValueError(f"--set {dotted}: unknown section {keys[0]!r}; valid: {sorted(DEFAULTS)}")
    valid = _section_keys(keys[0])
    if (valid is None and len(keys) > 1) or (valid is not None and len(keys) != 2):
        form = f"{keys[0]}=VALUE" if valid is None else f"{keys[0]}.KEY=VALUE with KEY one of {sorted(valid)}"
        raise ValueError(f"--set {dotted}: expected {form}")
    if valid is not None and keys[1] not in valid:
        raise ValueError(f"--set {dotted}: unknown key {keys[1]!r} in section {keys[0]!r}; valid: {sorted(valid)}")
    node = cfg if valid is None else cfg.setdefault(keys[0], {})
    node[keys[-1]] = yaml.safe_load(value)


def _check_number(where: str, value, kind: type, low=None, high=None, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise ValueError(f"{where} must be {'a number' if kind is float else 'an integer'}, got {value!r}")
    if value != value or (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{where} must be in [{low}, {'inf' if high is None else high}], got {value!r}")


def validate_config(cfg: dict) -> None:
    """Check a whole training config before anything is written or trained: known sections and keys, and each
    value's type and range (the model, loss and inference sections through their dataclasses)."""
    unknown = set(cfg) - set(DEFAULTS)
    if unknown:
        raise ValueError(f"unknown config section(s) {sorted(unknown)}; valid: {sorted(DEFAULTS)}")
    for section in DEFAULTS:
        valid = _section_keys(section)
        if valid is None:
            continue
        if not isinstance(cfg.get(section), dict):
            raise ValueError(f"config section {section!r} must be a mapping, got {cfg.get(section)!r}")
        extra = set(cfg[section]) - set(valid)
        if extra:
            raise ValueError(f"unknown key(s) {sorted(extra)} in config section {section!r}; valid: {sorted(valid)}")
    _check_number("seed", cfg["seed"], int, 0)
    t = cfg["train"]
    _check_number("train.epochs", t["epochs"], int, 1, 100_000)
    _check_number("train.batch_size", t["batch_size"], int, 1, 1_000_000)
    for key in ("lr", "weight_decay", "momentum", "warmup_epochs", "grad_clip"):
        _check_number(f"train.{key}", t[key], float, 0.0, None, allow_none=key == "grad_clip")
    _check_number("train.window_overlap", t["window_overlap"], float, 0.0, 0.99)
    _check_number("train.num_threads", t["num_threads"], int, 1, 4096, allow_none=True)
    if str(t["optimizer"]).lower() not in ("adamw", "sgd"):
        raise ValueError(f"train.optimizer must be 'adamw' or 'sgd', got {t['optimizer']!r}")
    if t["scheduler"] not in ("cosine", "constant"):
        raise ValueError(f"train.scheduler must be 'cosine' or 'constant', got {t['scheduler']!r}")
    if not isinstance(t["skip_empty_windows"], bool):
        raise ValueError(f"train.skip_empty_windows must be true or false, got {t['skip_empty_windows']!r}")
    _check_number("eval.every", cfg["eval"]["every"], int, 1)
    parse_thresholds(str(cfg["eval"]["tiou_thresholds"]))
    model = dict(cfg["model"])
    preset = model.pop("preset", "small")
    GSMTConfig.preset(preset, **{"num_classes": 1, "input_dim": 1, **model})  # types and ranges; K, d_in: the data's
    LossConfig(**cfg["loss"])
    InferenceConfig(**cfg["inference"])


def load_config(path: str | Path | None, overrides: list[str] | tuple = ()) -> dict:
    cfg = copy.deepcopy(DEFAULTS)
    if path is not None:
        text = Path(path).read_text()
        user = yaml.safe_load(text) or {}
        if not isinstance(user, dict):
            raise ValueError(f"{path}: a config must be a YAML mapping")
        unknown = set(user) - set(DEFAULTS)
        if unknown:
            raise ValueError(f"{path}: unknown config section(s) {sorted(unknown)}; valid: {sorted(DEFAULTS)}")
        cfg = deep_update(cfg, user)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        k, v = item.split("=", 1)
        set_by_path(cfg, k.strip(), v)
    validate_config(cfg)
    return cfg


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def build_model_config(cfg: dict, num_classes: int, input_dim: int, temporal_scale: int) -> GSMTConfig:
    m = dict(cfg["model"])
    preset = m.pop("preset", "small")
    m.setdefault("temporal_scale", temporal_scale)
    return GSMTConfig.preset(preset, num_classes=num_classes, input_dim=input_dim, **m)


def make_optimizer(model: torch.nn.Module, tcfg: dict) -> torch.optim.Optimizer:
    name = tcfg["optimizer"].lower()
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=tcfg["lr"], weight_decay=tcfg["weight_decay"])
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=tcfg["lr"], momentum=tcfg["momentum"],
                               weight_decay=tcfg["weight_decay"])
    raise ValueError(f"unknown optimizer {tcfg['optimizer']!r}; use 'adamw' or 'sgd'")


def make_scheduler(opt, tcfg: dict, steps_per_epoch: int):
    total = max(1, tcfg["epochs"] * steps_per_epoch)
    warm = int(tcfg.get("warmup_epochs", 0) * steps_per_epoch)
    kind = tcfg.get("scheduler", "cosine")
    if kind not in ("cosine", "constant"):
        raise ValueError(f"unknown scheduler {kind!r}; use 'cosine' or 'constant'")

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if kind == "constant":
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def validate(model: GSMT, aset, store, spec, class_names, inference: InferenceConfig, thresholds) -> tuple:
    """Detect on the validation split through :class:`Detector` and evaluate; returns (EvaluationResult, results)."""
    videos = aset.subset(spec.val_split)
    # fp32 whatever the CPU: the validation mAP (and so the best epoch) must not depend on the machine's bf16 support.
    det = Detector.from_model(model, class_names, spec.grid, spec.input_mode, inference, precision="fp32")
    was_training = model.training
    model.eval()
    try:
        res = det.detect([store.load(v.video_id) for v in videos], **detect_kwargs(videos))
    finally:
        model.train(was_training)
    results = results_to_json(res)
    gt = aset.to_activitynet(subset=spec.val_split)
    return evaluate(gt, results, tiou_thresholds=thresholds, subset=spec.val_split, warn=False), results


class _LogitsForward(torch.nn.Module):
    """``model.forward_logits`` as a module's ``forward``, for DistributedDataParallel to wrap (DDP synchronises
    gradients of what runs through its own ``forward``)."""

    def __init__(self, model: GSMT):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor, valid_len: torch.Tensor):
        return self.model.forward_logits(x, valid_len)


def _loss_terms(forward, criterion: GSMTLoss, b: dict) -> dict:
    """The loss terms of one batch from ``WindowDataset.batch``: the model's outputs (class logits, mask logits, and
    the boundary distances of a model with the boundary head) against the batch's targets."""
    cls_logits, mask_logits, *boundaries = forward(b["features"], b["valid_len"])
    targets = {"cls": b["cls"], "mask": b["mask"], "action": b["action"], "boundary": b["boundary"]}
    return criterion(cls_logits, mask_logits, targets, b["valid"], boundaries[0] if boundaries else None)


def _distributed_step(forward, criterion, data: WindowDataset, step_windows: torch.Tensor, world, per_rank: int):
    """One rank's part of a global batch: (loss to backpropagate, the global batch's loss terms as floats).

    Each term of GSMTLoss is a mean: the classification terms over the batch's valid snippets, the mask terms over
    its action snippets. Weighting this rank's means by its share of the global counts (times the world size, which
    DDP's gradient averaging divides out) makes the averaged gradient the global batch's. A rank left without
    windows by a short last batch still runs one window with weight 0, so that DDP's collectives see every rank."""
    mine = step_windows[world.rank * per_rank:(world.rank + 1) * per_rank]
    empty = len(mine) == 0
    b = data.batch(step_windows[:1] if empty else mine)
    terms = _loss_terms(forward, criterion, b)
    counts = torch.tensor([0.0, 0.0] if empty else [float(b["valid"].sum()), float(b["action"].sum())],
                          dtype=torch.float64)
    local_valid, local_action = counts.tolist()
    global_valid, global_action = distributed.all_reduce_sum(world, counts).tolist()
    w_cls = local_valid / max(global_valid, 1.0)
    w_mask = local_action / max(global_action, 1.0)
    names = [k for k in terms if k != "total"]
    weighted = torch.stack([terms[k].detach() * (w_cls if k == "cls" else w_mask) for k in names]).double()
    global_terms = dict(zip(names, distributed.all_reduce_sum(world, weighted).tolist()))
    global_terms["total"] = criterion.total(global_terms["cls"], global_terms["mask"], global_terms.get("boundary"))
    # The boundary term, like the mask terms, is a mean over action snippets.
    loss = criterion.total(terms["cls"] * w_cls, terms["mask"] * w_mask,
                           terms["boundary"] * w_mask if "boundary" in terms else None)
    return world.world_size * loss, global_terms


def train(cfg: dict, out_dir: str | Path, data_root: str | Path | None = None, resume: bool = False,
          progress: bool = True, log=print) -> dict:
    """Train per ``cfg`` (see :data:`DEFAULTS`); returns the final metrics dict (also in ``OUT/metrics.json``).

    Under torchrun this process is one rank of a DDP run (see the module docstring); ranks other than 0 log
    nothing, write nothing and return their training losses without validation."""
    from tqdm import tqdm

    out = Path(out_dir)  # created with its first file, once the data and the model are set up
    world = distributed.init_from_env(device="cpu")  # training runs on the CPU: Gloo
    if not world.is_main:
        log, progress = (lambda *a, **k: None), False
    tcfg = cfg["train"]
    if tcfg.get("num_threads"):
        torch.set_num_threads(int(tcfg["num_threads"]))
    seed_everything(int(cfg["seed"]))
    spec = load_dataset_spec(cfg["data"], data_root)
    aset, store = load_split(spec)
    class_names = list(aset.classes)
    train_videos = aset.subset(spec.train_split)
    t_scale = int(cfg["model"].get("temporal_scale") or spec.temporal_scale or 256)
    mcfg = build_model_config(cfg, len(class_names), store.feature_dim, t_scale)
    inference = InferenceConfig(**cfg["inference"])
    loss_cfg = LossConfig(**cfg["loss"])
    thresholds = parse_thresholds(cfg["eval"]["tiou_thresholds"])

    data = WindowDataset(train_videos, store, class_names, spec.input_mode, spec.grid, mcfg.temporal_scale,
                         float(tcfg["window_overlap"]), skip_empty=bool(tcfg["skip_empty_windows"]))
    model = GSMT(mcfg)
    criterion = GSMTLoss(loss_cfg)
    opt = make_optimizer(model, tcfg)
    bs = int(tcfg["batch_size"])
    per_rank = distributed.per_rank_batch(bs, world.world_size)
    steps_per_epoch = math.ceil(len(data) / bs)
    sched = make_scheduler(opt, tcfg, steps_per_epoch)
    if world.is_main:
        atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
    ckpt_kwargs = dict(class_names=class_names, inference=inference, grid=spec.grid, input_mode=spec.input_mode)

    history: list[dict] = []
    best = {"epoch": -1, "average_mAP": -1.0}
    start_epoch = 0
    if world.world_size > 1:
        # Distinct dropout streams per rank (the model's initial weights, drawn above, are the same on every rank),
        # reproducible for a given world size.
        torch.manual_seed(int(cfg["seed"]) + 7919 * (world.rank + 1))
    if resume and (out / "train_state.pt").is_file():
        from .checkpoint import read_checkpoint

        tensors, last_meta = read_checkpoint(out / "last.safetensors")  # clear errors for a damaged file
        if last_meta.model != mcfg:
            raise ValueError(f"--resume: {out / 'last.safetensors'} holds a different model ({last_meta.model}) than "
                             f"this config builds ({mcfg}); use a new --out or the original config")
        try:
            state = torch.load(out / "train_state.pt", map_location="cpu", weights_only=True)
            model.load_state_dict(tensors)
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
        except Exception as error:  # noqa: BLE001 - torch raises several types for damaged or foreign files
            raise ValueError(f"--resume: {out / 'train_state.pt'} is damaged or from another run: {error}") from error
        per_rank_rng = state.get("torch_rng_per_rank")
        if world.world_size == 1:
            torch.set_rng_state(state["torch_rng"])
        elif per_rank_rng is not None and len(per_rank_rng) == world.world_size:
            torch.set_rng_state(per_rank_rng[world.rank])
        else:
            log(f"resuming on {world.world_size} ranks a run saved on {len(per_rank_rng or [0])}: dropout draws a "
                "fresh per-rank stream (everything else continues exactly)")
        start_epoch = int(state["epoch"]) + 1
        metrics = json.loads((out / "metrics.json").read_text())
        history, best = metrics["epochs"], metrics["best"]
        log(f"resumed from epoch {start_epoch} (best so far {best['average_mAP']:.4f} at epoch {best['epoch']})")
    elif resume:
        log(f"--resume: no train_state.pt in {out}; starting from scratch")

    forward = model.forward_logits
    if world.world_size > 1:
        from torch.nn.parallel import DistributedDataParallel

        forward = DistributedDataParallel(_LogitsForward(model))
    log(f"training {sum(p.numel() for p in model.parameters()) / 1e6:.2f} M params on {len(data)} windows "
        f"({len(train_videos)} videos), {tcfg['epochs']} epochs"
        + (f", {world.world_size} ranks x {per_rank} windows per step" if world.world_size > 1 else ""))
    for epoch in range(start_epoch, int(tcfg["epochs"])):
        t0 = time.time()
        model.train()
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(int(cfg["seed"]) * 1000 + epoch))
        sums: dict[str, float] = {}
        steps = range(steps_per_epoch)
        bar = tqdm(steps, desc=f"epoch {epoch + 1}/{tcfg['epochs']}", leave=False, disable=not progress)
        for step in bar:
            step_windows = order[step * bs:(step + 1) * bs]
            if world.world_size > 1:
                loss, step_terms = _distributed_step(forward, criterion, data, step_windows, world, per_rank)
            else:
                terms = _loss_terms(forward, criterion, data.batch(step_windows))
                loss, step_terms = terms["total"], {k: float(v.detach()) for k, v in terms.items()}
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if tcfg.get("grad_clip"):
                torch.nn.utils.clip_grad_norm_(model.parameters(), float(tcfg["grad_clip"]))
            opt.step()
            sched.step()
            for k, v in step_terms.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix(loss=f"{sums['total'] / (step + 1):.4f}")
        record: dict[str, Any] = {"epoch": epoch + 1, "lr": opt.param_groups[0]["lr"],
                                  "train_seconds": round(time.time() - t0, 3)}
        record.update({f"loss_{k}": v / steps_per_epoch for k, v in sums.items()})
        last_epoch = epoch + 1 == int(tcfg["epochs"])
        rng_per_rank = distributed.gather_objects(world, torch.get_rng_state()) if world.world_size > 1 else None
        if not world.is_main:
            history.append(record)
            continue
        if (epoch + 1) % int(cfg["eval"].get("every", 1)) == 0 or last_epoch:
            ev, results = validate(model, aset, store, spec, class_names, inference, thresholds)
            record["val_mAP"] = {f"{t:g}": float(m) for t, m in zip(ev.tiou_thresholds, ev.mAP)}
            record["val_average_mAP"] = float(ev.average_mAP)
            if ev.average_mAP > best["average_mAP"]:
                best = {"epoch": epoch + 1, "average_mAP": float(ev.average_mAP), "mAP": record["val_mAP"]}
                save_checkpoint(model, out / "best.safetensors", extra={"epoch": epoch + 1}, **ckpt_kwargs)
                write_results(out / "val_results.json", results["results"])
        history.append(record)
        save_checkpoint(model, out / "last.safetensors", extra={"epoch": epoch + 1}, **ckpt_kwargs)
        state = {"optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "epoch": epoch,
                 "torch_rng": torch.get_rng_state()}
        if rng_per_rank is not None:
            state["torch_rng_per_rank"] = rng_per_rank
        with atomic_path(out / "train_state.pt") as tmp:
            torch.save(state, tmp)
        metrics = {"epochs": history, "best": best, "val_split": spec.val_split,
                   "tiou_thresholds": [float(t) for t in thresholds], "world_size": world.world_size}
        atomic_write_json(out / "metrics.json", metrics)
        loss_txt = " ".join(f"{k[5:]}={v:.4f}" for k, v in record.items() if k.startswith("loss_"))
        val_txt = f" val_avg_mAP={record['val_average_mAP']:.4f}" if "val_average_mAP" in record else ""
        log(f"epoch {epoch + 1:3d}/{tcfg['epochs']} {loss_txt}{val_txt} ({record['train_seconds']:.1f}s)")
    log(f"best validation average mAP {best['average_mAP']:.4f} at epoch {best['epoch']}; "
        f"checkpoint {out / 'best.safetensors'}")
    distributed.barrier(world)  # the run ends when rank 0 has written its files
    distributed.shutdown(world)
    return {"epochs": history, "best": best}
