"""Saving and loading a trained prefix: one safetensors file with a JSON header in its metadata.

The file holds only the final per-layer prefix ``(L, 2, kv_heads, P, head_dim)`` (kilobytes), never
the backbone (a control prefix: its compact form, control.py). The header records what is needed to use
it safely: the backbone's name and fingerprint, the shapes, the linearization format and the training
config, plus a hash of the tensor bytes so a truncated or edited file is refused. Writes go to a temp file, then rename.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from kg2text.errors import UserError

if TYPE_CHECKING:  # kept out of the import: a header alone is read before transformers is (``read_header``)
    from kg2text.backbones import Backbone

PREFIX_FILE = "prefix.safetensors"
SHIPPED_DIR = Path(__file__).resolve().parent / "prefixes"  # prefixes that come with the package, by task name
# 2: the header carries a digest of itself, so an edited header is refused too; 3: a control prefix is stored
# compact, its shared positions once (format 2 stored one full prefix per category, which still loads)
FORMAT_VERSION = 3
HEADER_FIELDS = {"format_version": int, "backbone": str, "backbone_fingerprint": str, "shape": list, "dtype": str,
                 "sha256": str, "format": str, "method": str}
# (L, 2, kv_heads, P, head_dim), a control prefix's (L, 2, kv_heads, P + C * Pc, head_dim), and (P, d)
ARTIFACT_RANK = {"prefix": 5, "prefix-hidden": 5, "control": 5, "prompt": 2}
DERIVED_FIELDS = ("format_version", "shape", "dtype", "sha256", "header_sha256")  # from the tensor, by write_prefix


def tensor_digest(tensor: torch.Tensor) -> str:
    data = tensor.detach().cpu().contiguous()
    return hashlib.sha256(data.view(torch.uint8).numpy().tobytes() if data.dtype == torch.bfloat16
                          else data.numpy().tobytes()).hexdigest()


def header_digest(header: dict) -> str:
    """SHA-256 of the header's own fields (all but this digest), canonical JSON."""
    fields = {k: v for k, v in header.items() if k != "header_sha256"}
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()


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
    """Save the final prefix (as a ``TunedLM`` uses it) with its header; returns the file path."""
    return write_prefix(run_dir, prefix, {"backbone": backbone.name, "backbone_fingerprint": backbone.fingerprint(),
                                          **header})


def write_prefix(run_dir: Path, prefix: torch.Tensor, header: dict) -> Path:
    """``save_prefix`` with the backbone's name and fingerprint in ``header``; given what ``read_prefix`` returns, it
    rewrites a file in the current format (the fields this function derives are derived again)."""
    prefix = prefix.detach().cpu()
    if header.get("method") == "control":
        from kg2text.control import compact_controls

        prefix = compact_controls(prefix, header["method_config"]["num_virtual_tokens"])
    prefix = prefix.contiguous()
    full_header = {
        "format_version": FORMAT_VERSION,
        "shape": list(prefix.shape),
        "dtype": str(prefix.dtype).removeprefix("torch."),
        "sha256": tensor_digest(prefix),
        **{k: v for k, v in header.items() if k not in DERIVED_FIELDS},
    }
    full_header["header_sha256"] = header_digest(full_header)
    path = Path(run_dir) / PREFIX_FILE
    atomic_write(path, lambda tmp: save_file({"prefix": prefix}, tmp, metadata={"kg2text": json.dumps(full_header)}))
    return path


def shipped_prefixes() -> dict[str, Path]:
    """Task name -> prefix file shipped inside the package (``kg2text/prefixes/TASK.safetensors``)."""
    return {path.stem: path for path in sorted(SHIPPED_DIR.glob("*.safetensors"))}


def shipped_prefix(run: Path) -> Path | None:
    """The shipped file a bare task name (``webnlg``, ``e2e``) stands for; a file or folder of that name wins."""
    return None if Path(run).exists() else shipped_prefixes().get(str(run))


def _prefix_path(run: Path) -> Path:
    """The prefix file of a run folder, a prefix file, or a bare shipped task name."""
    run = Path(run)
    if shipped := shipped_prefix(run):
        return shipped
    path = run / PREFIX_FILE if run.is_dir() else run
    if not path.is_file():
        names = f" or a shipped prefix name ({', '.join(shipped_prefixes())})" if shipped_prefixes() else ""
        raise UserError(f"no trained prefix at {run}: expected a run folder containing {PREFIX_FILE} "
                        f"(made by 'kg2text train'){names}")
    return path


def read_prefix(run: Path) -> tuple[torch.Tensor, dict]:
    """Load a prefix file and its header, refusing anything damaged or not made by kg2text.

    The tensor is the one a ``TunedLM`` uses (a control prefix expanded to one full prefix per category); the
    header's ``shape`` is the stored one's.
    """
    path = _prefix_path(run)
    tensors = _readable(path, load_file)
    if set(tensors) != {"prefix"}:
        raise _not_written_by_kg2text(path)
    header = read_header(path)
    prefix = tensors["prefix"]
    if header["sha256"] != tensor_digest(prefix) or list(prefix.shape) != header["shape"] \
            or str(prefix.dtype).removeprefix("torch.") != header["dtype"]:
        raise UserError(f"{path} does not match its own header (edited or corrupted); retrain or restore it")
    if not torch.isfinite(prefix.float()).all():
        raise UserError(f"{path} holds NaN or infinite values; retrain or restore it")
    if header["method"] == "control" and not control_stack_stored(header):
        from kg2text.control import expand_controls

        config = header["method_config"]
        prefix = expand_controls(prefix, config["num_virtual_tokens"], len(config["categories"]))
    return prefix, header


def read_header(run: Path) -> dict:
    """A prefix file's checked header alone, its tensor not loaded (``read_prefix`` checks both).

    Why: the header names each task's input format, so inputs are parsed and a bad one refused before the
    backbone, and transformers with it, is loaded (seconds on 2 cores).
    """
    path = _prefix_path(run)
    metadata = _readable(path, _metadata)
    if "kg2text" not in metadata:
        raise _not_written_by_kg2text(path)
    return _checked_header(path, metadata["kg2text"])


def _not_written_by_kg2text(path: Path) -> UserError:
    return UserError(f"{path} was not written by kg2text (no kg2text header or unexpected tensors)")


def _metadata(path: Path) -> dict:
    with safe_open(path, "pt") as handle:
        return handle.metadata() or {}


def _readable(path: Path, read: Callable[[Path], dict]) -> dict:
    """``read(path)``, a damaged or unreadable file refused in one clear line."""
    try:
        return read(path)
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"{path} is not a readable safetensors prefix ({err}); it may be truncated") from None


def _checked_header(path: Path, text: str) -> dict:
    """The kg2text header, refused unless it parses, has every field with its type, and matches its digest."""
    try:
        header = json.loads(text)
    except json.JSONDecodeError as err:
        raise UserError(f"{path}: its kg2text header is not valid JSON ({err.msg} at character {err.pos}); "
                        "the file was edited or damaged: retrain or restore it") from None
    if not isinstance(header, dict):
        raise UserError(f"{path}: its kg2text header is not a JSON object; retrain or restore it")
    header.setdefault("method", "prefix")  # format 1 files predate several methods
    for field, kind in HEADER_FIELDS.items():
        if not isinstance(header.get(field), kind) or isinstance(header.get(field), bool):
            raise UserError(f"{path}: its kg2text header has no valid {field!r} (expected {kind.__name__}); "
                            "the file was edited or damaged: retrain or restore it")
    if header["format_version"] > FORMAT_VERSION:
        raise UserError(f"{path} was written by a newer kg2text (format {header['format_version']}); upgrade kg2text")
    if header["format_version"] >= 2 and header.get("header_sha256") != header_digest(header):
        raise UserError(f"{path}: its kg2text header does not match its digest (edited or damaged); "
                        "retrain or restore it")
    shape = header["shape"]
    if header["method"] not in ARTIFACT_RANK or len(shape) != ARTIFACT_RANK[header["method"]] \
            + control_stack_stored(header) \
            or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape):
        raise UserError(f"{path}: its kg2text header names an unknown method or an impossible shape; "
                        "retrain or restore it")
    if header["method"] == "control" and not _control_layout_fits(header):
        raise UserError(f"{path}: its kg2text header does not list one category per control prefix; "
                        "retrain or restore it")
    return header


def control_stack_stored(header: dict) -> bool:
    """A control file before format 3: one full prefix per category, ``(C, L, 2, H, P + Pc, D)``."""
    return header["method"] == "control" and header["format_version"] < 3


def _control_layout_fits(header: dict) -> bool:
    """The header's categories, shared and per-category lengths account for the stored positions."""
    config = header.get("method_config")
    if not isinstance(config, dict):
        return False
    categories, shared, own = config.get("categories"), config.get("num_virtual_tokens"), config.get("control_tokens")
    if not (isinstance(categories, list) and all(isinstance(name, str) for name in categories)
            and all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in (shared, own))):
        return False
    shape = header["shape"]
    if control_stack_stored(header):
        return shape[0] == len(categories) and shape[-2] == shared + own
    return shape[-2] == shared + len(categories) * own


def control_categories_of(header: dict) -> list[str]:
    """The categories of a control-prefix artifact, in the order of its stack (empty for other methods)."""
    return header["method_config"]["categories"] if header.get("method") == "control" else []


def check_compatible(header: dict, backbone: Backbone, source: Path) -> None:
    """Refuse a prefix trained for another backbone, naming both."""
    from kg2text.methods import artifact_shape, virtual_length

    if header["backbone"] != backbone.name or header["backbone_fingerprint"] != backbone.fingerprint():
        raise UserError(f"{source} was trained for backbone {header['backbone']!r} "
                        f"(fingerprint {header['backbone_fingerprint']}), not {backbone.name!r} "
                        f"({backbone.fingerprint()}); pass --backbone {header['backbone']} or retrain")
    shape, method = tuple(header["shape"]), header.get("method", "prefix")
    shape = shape[1:] if control_stack_stored(header) else shape  # the full prefix of each category
    if shape != artifact_shape(method, backbone, virtual_length(method, shape)):
        raise UserError(f"{source}: {method} shape {shape} does not fit {backbone.name}")
