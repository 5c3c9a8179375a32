"""Resumable training checkpoints, safetensors only (no pickle), written atomically.

A checkpoint is a folder ``checkpoint-<step>/`` holding the trainable module, the AdamW state and
the torch RNG state as safetensors (with ``--average-last`` also the trained tensor's running average), plus
``state.json`` (step, epoch, position in the epoch, the scheduler's state, the loss-log length, the SHA-256
of each tensor file, and a digest of itself). Only after the folder is complete does the pointer file
``latest_checkpoint`` move to it (atomic rename), so a ``kill -9`` at any moment leaves the last complete
checkpoint in force. The previous checkpoint is kept too: when the newest turns out damaged (a flipped byte, a
truncated file), resuming says so and ``--from-previous`` continues from the one before. Accelerate's
``save_state`` would pickle the optimizer and RNG state, which we refuse to load, so this small module does the
same job with safetensors.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from kg2text.artifact import atomic_write_text
from kg2text.errors import UserError

POINTER = "latest_checkpoint"
TENSOR_FILES = ("module.safetensors", "optimizer.safetensors", "rng.safetensors")
AVERAGE_FILE = "average.safetensors"  # --average-last: the running average so far (training.TailAverage)
KEEP = 2  # the newest checkpoint and the one before it, in case the newest is damaged


def _file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _state_digest(state: dict) -> str:
    return hashlib.sha256(json.dumps({k: v for k, v in state.items() if k != "digest"}, sort_keys=True).encode()) \
        .hexdigest()


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
                    scheduler: torch.optim.lr_scheduler.LRScheduler, progress: dict,
                    average: dict[str, torch.Tensor] | None = None) -> Path:
    """Write ``checkpoint-<step>`` completely, then point ``latest_checkpoint`` at it and drop older ones."""
    folder = run_dir / f"checkpoint-{progress['step']}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    save_file({k: v.detach().contiguous() for k, v in module.state_dict().items()}, folder / "module.safetensors")
    tensors, meta = _optimizer_tensors(optimizer)
    save_file(tensors, folder / "optimizer.safetensors")
    save_file({"torch": torch.get_rng_state()}, folder / "rng.safetensors")
    if average is not None:
        save_file(average, folder / AVERAGE_FILE)
    files = TENSOR_FILES + ((AVERAGE_FILE,) if average is not None else ())
    state = {**progress, "optimizer": meta, "scheduler": scheduler.state_dict(),
             "files": {name: _file_digest(folder / name) for name in files}}
    state["digest"] = _state_digest(state)
    (folder / "state.json").write_text(json.dumps(state))
    atomic_write_text(run_dir / POINTER, folder.name)
    for old in _checkpoints(run_dir)[KEEP:]:
        shutil.rmtree(old, ignore_errors=True)
    return folder


def _checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint folders, newest step first."""
    found = [p for p in run_dir.glob("checkpoint-*") if p.is_dir() and p.name.removeprefix("checkpoint-").isdigit()]
    return sorted(found, key=lambda p: int(p.name.removeprefix("checkpoint-")), reverse=True)


def load_checkpoint(run_dir: Path, module: nn.Module, optimizer: torch.optim.Optimizer,
                    scheduler: torch.optim.lr_scheduler.LRScheduler, from_previous: bool = False) -> dict:
    """Restore the latest complete checkpoint in place (or, with ``from_previous``, the one before it when
    the latest is damaged); returns its progress record, with ``"average"`` (its tensors) where one was saved."""
    pointer = run_dir / POINTER
    if not pointer.is_file():
        raise UserError(f"nothing to resume in {run_dir}: no {POINTER} (no checkpoint was completed)")
    try:
        name = pointer.read_text().strip()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"{pointer} is unreadable ({err}); delete it and resume from a checkpoint folder") from None
    folder = run_dir / name
    if folder.parent != run_dir or not (folder / "state.json").is_file():
        raise UserError(f"{pointer} points at {name[:80]!r}, which is not a complete checkpoint in {run_dir}")
    try:
        return _restore(folder, module, optimizer, scheduler)
    except UserError as damage:
        previous = [p for p in _checkpoints(run_dir) if p != folder and (p / "state.json").is_file()]
        if not previous:
            raise
        if not from_previous:
            raise UserError(f"{damage}; the previous checkpoint {previous[0].name} is intact: continue from it with "
                            "'kg2text train --output RUN --resume --from-previous'") from None
        print(f"kg2text: {damage}; continuing from the previous checkpoint {previous[0].name}")
        return _restore(previous[0], module, optimizer, scheduler)


def _restore(folder: Path, module: nn.Module, optimizer: torch.optim.Optimizer,
             scheduler: torch.optim.lr_scheduler.LRScheduler) -> dict:
    """Load one checkpoint folder, refusing it (one line naming what) when any part is damaged."""
    try:
        state = json.loads((folder / "state.json").read_text())
        if not isinstance(state, dict) or state.get("digest") != _state_digest(state):
            raise ValueError("state.json does not match its digest")
        if not set(TENSOR_FILES) <= set(state["files"]) <= {*TENSOR_FILES, AVERAGE_FILE}:
            raise ValueError("state.json lists other tensor files than a checkpoint has")
        for name in state["files"]:
            if _file_digest(folder / name) != state["files"][name]:
                raise ValueError(f"{name} does not match its SHA-256")
        module.load_state_dict(load_file(folder / "module.safetensors"))
        optimizer.load_state_dict(_optimizer_state(load_file(folder / "optimizer.safetensors"), state["optimizer"]))
        scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(load_file(folder / "rng.safetensors")["torch"])
        if AVERAGE_FILE in state["files"]:
            state["average"] = load_file(folder / AVERAGE_FILE)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError, UnicodeDecodeError) as err:
        reason = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise UserError(f"checkpoint {folder} is damaged ({reason})") from None
    return state


def remove_checkpoints(run_dir: Path) -> None:
    """After the final prefix is saved, checkpoints are no longer needed."""
    (run_dir / POINTER).unlink(missing_ok=True)
    for old in run_dir.glob("checkpoint-*"):
        shutil.rmtree(old, ignore_errors=True)
