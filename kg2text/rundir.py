"""The run folder: refusing to overwrite or share it, the lock, disk space, and the loss log's lines.

Kept apart from the loop (``training.py``): these are about the folder a run writes, not about training.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch

from kg2text.artifact import atomic_write_text
from kg2text.errors import UserError


class RunLock:
    """A lock file in the run folder: a second training on the same folder is refused, not interleaved."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / ".lock"

    def __enter__(self) -> RunLock:
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            owner = self.path.read_text(errors="replace").strip()[:20] if self.path.exists() else "?"
            if owner.isdigit() and not _alive(int(owner)):
                print(f"kg2text: {self.path} was left by process {owner}, which is no longer running "
                      "(killed?); removed it and going on")
                self.path.unlink(missing_ok=True)
                return self.__enter__()
            if not owner.isdigit():
                raise UserError(f"{self.path} is damaged (holds {owner!r}, not a process id); if no training is "
                                f"running on {self.path.parent}, delete it and run again") from None
            raise UserError(f"{self.path.parent} is in use by another training (process {owner}); "
                            "wait for it or choose another --output") from None
        with os.fdopen(fd, "w") as handle:
            handle.write(str(os.getpid()))
        return self

    def __exit__(self, *exc) -> None:
        self.path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def prepare_run_dir(path: Path, resume: bool) -> Path:
    """Create the run folder, refusing to overwrite a finished run and checking we can write there."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"--output {path} exists and is not a folder")
    if (path / "prefix.safetensors").exists():
        raise UserError(f"{path} already holds a trained prefix; choose another --output or delete it")
    if not resume and (path / "config.json").exists():
        raise UserError(f"{path} holds an unfinished run; continue it with --resume or choose another --output")
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as err:
        raise UserError(f"cannot write to --output {path}: {err.strerror}") from None
    return path


def check_disk_space(run_dir: Path, tuner: torch.nn.Module) -> None:
    """Refuse to start when the disk cannot hold two checkpoints and the prefix (module + AdamW state)."""
    needed = 2 * 3 * 4 * sum(p.numel() for p in tuner.parameters()) + (1 << 20)
    free = shutil.disk_usage(run_dir).free
    if free < needed:
        raise UserError(f"only {free / 2**20:.1f} MB free at {run_dir}, training needs about {needed / 2**20:.1f} MB "
                        "for checkpoints; free some space or choose another --output")


def count_lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def truncate_lines(path: Path, keep: int) -> None:
    """Drop log lines written after the checkpoint we resume from (they will be written again)."""
    if path.exists():
        atomic_write_text(path, "".join(line + "\n" for line in path.read_text().splitlines()[:keep]))
