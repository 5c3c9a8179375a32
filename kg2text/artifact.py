"""Saving and loading a trained prefix: one safetensors file with a JSON header in its metadata.

The file holds only the final per-layer prefix ``(L, 2, kv_heads, P, head_dim)`` (kilobytes), never
the backbone. The header records what is needed to use it safely: the backbone's name and
fingerprint, the shapes, the linearization format and the training config, plus a hash of the
tensor bytes so a truncated or edited file is refused. Writes go to a temp file, then rename.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from kg2text.backbones import Backbone
from kg2text.errors import UserError
from kg2text.methods import artifact_shape, virtual_length

PREFIX_FILE = "prefix.safetensors"
FORMAT_VERSION = 1


def tensor_digest(tensor: torch.Tensor) -> str:
    return hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def atomic_write(path: Path, write: Callable[[str], None]) -> None:
    """Run ``write(temp_path)`` then rename, so ``path`` is either the old file or the complete new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(Path(path), lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def save_prefix(run_dir: Path, prefix: torch.Tensor, backbone: Backbone, header: dict) -> Path:
    """Save the final prefix with its header; returns the file path."""
    prefix = prefix.detach().cpu().contiguous()
    full_header = {
        "format_version": FORMAT_VERSION,
        "backbone": backbone.name,
        "backbone_fingerprint": backbone.fingerprint(),
        "shape": list(prefix.shape),
        "dtype": str(prefix.dtype).removeprefix("torch."),
        "sha256": tensor_digest(prefix),
        **header,
    }
    path = Path(run_dir) / PREFIX_FILE
    atomic_write(path, lambda tmp: save_file({"prefix": prefix}, tmp, metadata={"kg2text": json.dumps(full_header)}))
    return path


def _prefix_path(run: Path) -> Path:
    run = Path(run)
    path = run / PREFIX_FILE if run.is_dir() else run
    if not path.is_file():
        raise UserError(f"no trained prefix at {run}: expected a run folder containing {PREFIX_FILE} "
                        "(made by 'kg2text train')")
    return path


def read_prefix(run: Path) -> tuple[torch.Tensor, dict]:
    """Load a prefix file and its header, refusing anything damaged or not made by kg2text."""
    path = _prefix_path(run)
    try:
        tensors = load_file(path)
        with safe_open(path, "pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"{path} is not a readable safetensors prefix ({err}); it may be truncated") from None
    if "kg2text" not in metadata or set(tensors) != {"prefix"}:
        raise UserError(f"{path} was not written by kg2text (no kg2text header or unexpected tensors)")
    try:
        header = json.loads(metadata["kg2text"])
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: its kg2text header is not valid JSON ({err.msg} at character {err.pos}); "
                        "the file was edited or damaged: retrain or restore it") from None
    if not isinstance(header, dict):
        raise UserError(f"{path}: its kg2text header is not a JSON object; retrain or restore it")
    prefix = tensors["prefix"]
    if header.get("sha256") != tensor_digest(prefix) or list(prefix.shape) != header.get("shape"):
        raise UserError(f"{path} does not match its own header (edited or corrupted); retrain or restore it")
    return prefix, header


def check_compatible(header: dict, backbone: Backbone, source: Path) -> None:
    """Refuse a prefix trained for another backbone, naming both."""
    if header["backbone"] != backbone.name or header["backbone_fingerprint"] != backbone.fingerprint():
        raise UserError(f"{source} was trained for backbone {header['backbone']!r} "
                        f"(fingerprint {header['backbone_fingerprint']}), not {backbone.name!r} "
                        f"({backbone.fingerprint()}); pass --backbone {header['backbone']} or retrain")
    shape, method = tuple(header["shape"]), header.get("method", "prefix")
    if shape != artifact_shape(method, backbone, virtual_length(method, shape)):
        raise UserError(f"{source}: {method} shape {shape} does not fit {backbone.name}")
