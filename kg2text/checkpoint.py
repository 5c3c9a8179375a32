"""Resumable training checkpoints, safetensors only (no pickle), written atomically.

A checkpoint is a folder ``checkpoint-<step>/`` holding the trainable module, the AdamW state and
the torch RNG state as safetensors, plus ``state.json`` (step, epoch, position in the epoch, the
scheduler's state, the loss-log length). Only after the folder is complete does the pointer file
``latest_checkpoint`` move to it (atomic rename), so a ``kill -9`` at any moment leaves the last
complete checkpoint in force. Accelerate's ``save_state`` would pickle the optimizer and RNG state,
which we refuse to load, so this small module does the same job with safetensors.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from kg2text.artifact import atomic_write_text
from kg2text.errors import UserError

POINTER = "latest_checkpoint"


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    state = optimizer.state_dict()
    tensors = {f"{index}.{key}": value for index, slots in state["state"].items() for key, value in slots.items()}
    return tensors, {"param_groups": state["param_groups"]}


def _optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(run_dir: Path, module: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, progress: dict) -> Path:
    """Write ``checkpoint-<step>`` completely, then point ``latest_checkpoint`` at it and drop older ones."""
    folder = run_dir / f"checkpoint-{progress['step']}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    save_file({k: v.detach().contiguous() for k, v in module.state_dict().items()}, folder / "module.safetensors")
    tensors, meta = _optimizer_tensors(optimizer)
    save_file(tensors, folder / "optimizer.safetensors")
    save_file({"torch": torch.get_rng_state()}, folder / "rng.safetensors")
    state = {**progress, "optimizer": meta, "scheduler": scheduler.state_dict()}
    (folder / "state.json").write_text(json.dumps(state))
    atomic_write_text(run_dir / POINTER, folder.name)
    for old in run_dir.glob("checkpoint-*"):
        if old != folder:
            shutil.rmtree(old, ignore_errors=True)
    return folder


def load_checkpoint(run_dir: Path, module: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler) -> dict:
    """Restore the latest complete checkpoint in place; returns its progress record."""
    pointer = run_dir / POINTER
    if not pointer.is_file():
        raise UserError(f"nothing to resume in {run_dir}: no {POINTER} (no checkpoint was completed)")
    folder = run_dir / pointer.read_text().strip()
    if folder.parent != run_dir or not (folder / "state.json").is_file():
        raise UserError(f"{pointer} points at {folder.name!r}, which is not a complete checkpoint in {run_dir}")
    state = json.loads((folder / "state.json").read_text())
    module.load_state_dict(load_file(folder / "module.safetensors"))
    optimizer.load_state_dict(_optimizer_state(load_file(folder / "optimizer.safetensors"), state["optimizer"]))
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(load_file(folder / "rng.safetensors")["torch"])
    return state


def remove_checkpoints(run_dir: Path) -> None:
    """After the final prefix is saved, checkpoints are no longer needed."""
    (run_dir / POINTER).unlink(missing_ok=True)
    for old in run_dir.glob("checkpoint-*"):
        shutil.rmtree(old, ignore_errors=True)
