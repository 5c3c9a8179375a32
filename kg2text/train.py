"""The training loop: tune a prefix (or soft prompt) on a frozen backbone with Hugging Face Accelerate.

Plain and linear on purpose (nanoGPT style): build the examples with ``datasets``, then for each
global batch compute the prefix once, run the frozen model, take the loss on target tokens only,
step. Accelerate handles the device, mixed precision, gradient accumulation and several processes
(``accelerate launch``); only the small trainable module is wrapped, the backbone never trains.
Each process takes its share of every global batch and the loss is normalised by the global target
count, so 1 or N processes give the same update. Checkpoints make the run resumable bit for bit.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import shutil
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import datasets
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from kg2text.artifact import atomic_write_text, save_prefix
from kg2text.backbones import Backbone, load_backbone
from kg2text.checkpoint import load_checkpoint, remove_checkpoints, save_checkpoint
from kg2text.data import DATASETS, Record, read_records, training_pairs
from kg2text.errors import UserError
from kg2text.hardware import backbone_dtype
from kg2text.linearize import DEFAULT_FORMAT, Format, get_format, model_prompt, model_target
from kg2text.methods import build_tuner
from kg2text.model import IGNORE_INDEX, METHODS, TunedLM

MAX_LR = 1.0
SAVE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class TrainConfig:
    """Everything a run depends on; saved as ``config.json`` in the run folder."""

    output: str
    backbone: str = "gpt2"
    method: str = "prefix"  # prefix | prompt | prefix-hidden
    dataset: str = "webnlg"
    split: str = "train"
    format: str | None = None  # default: the dataset's own
    data_dir: str | None = None
    prefix_length: int = 10
    mlp_hidden: int = 512
    init_text: str | None = None  # initialise from the backbone's activations / embeddings of this text
    epochs: float = 5.0
    max_steps: int | None = None  # optimizer steps; overrides epochs
    max_examples: int | None = None  # use the first N (record, sentence) pairs after shuffling
    batch_size: int = 8  # global batch per optimizer micro-step, split over processes
    grad_accum: int = 1
    lr: float = 5e-5
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"
    dtype: str = "float32"  # the frozen backbone's weights: float32, or bfloat16 where the CPU has BF16
    gradient_checkpointing: bool = False
    save_dtype: str = "float32"
    checkpoint_every: int = 100  # optimizer steps between resumable checkpoints (0: never)
    seed: int = 42
    log_every: int = 10

    @property
    def format_name(self) -> str:
        return self.format or DEFAULT_FORMAT[self.dataset]

    def validate(self) -> None:
        if self.dataset not in DATASETS:
            raise UserError(f"unknown dataset {self.dataset!r}; choose one of: {', '.join(DATASETS)}")
        if self.method not in METHODS:
            raise UserError(f"unknown method {self.method!r}; choose one of: {', '.join(METHODS)}")
        if self.save_dtype not in SAVE_DTYPES:
            raise UserError(f"unknown --save-dtype {self.save_dtype!r}; choose one of: {', '.join(SAVE_DTYPES)}")
        for name in ("prefix_length", "batch_size", "grad_accum", "mlp_hidden"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1")
        if not (0 < self.lr <= MAX_LR):
            raise UserError(f"--lr {self.lr} is not a sensible learning rate; prefix and prompt tuning use about "
                            f"1e-5 to 1e-2 (kg2text refuses anything above {MAX_LR})")
        get_format(self.format_name)
        backbone_dtype(self.dtype)

    @classmethod
    def from_run(cls, run_dir: Path) -> TrainConfig:
        path = Path(run_dir) / "config.json"
        try:
            saved = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
            raise UserError(f"cannot resume: {path} is missing or unreadable ({err})") from None
        if not isinstance(saved, dict):
            raise UserError(f"cannot resume: {path} is not a JSON object (edited or damaged)")
        known = {f.name: f.type for f in fields(cls)}
        for name, value in saved.items():
            if name in known and not _has_type(value, known[name]):
                raise UserError(f"cannot resume: {path} field {name!r} is {value!r}, not {known[name]} "
                                "(edited or damaged); fix it or start a new run")
        saved["output"] = str(run_dir)  # the folder being resumed, wherever it was first written
        config = cls(**{k: v for k, v in saved.items() if k in known})
        try:
            config.validate()
        except UserError as err:
            raise UserError(f"cannot resume: {path}: {err} (edited or damaged?)") from None
        return config


def _has_type(value, annotation: str) -> bool:
    """Does a JSON value fit a TrainConfig field's annotation ("int", "float | None", ...)?"""
    kinds = {"str": (str,), "int": (int,), "float": (int, float), "bool": (bool,), "None": (type(None),)}
    allowed = tuple(t for part in annotation.split("|") for t in kinds[part.strip()])
    if isinstance(value, bool) and bool not in allowed:
        return False
    return isinstance(value, allowed) and not (isinstance(value, float) and not math.isfinite(value))


def encode_examples(pairs: list[tuple[Record, str]], fmt: Format, backbone: Backbone,
                    max_tokens: int) -> datasets.Dataset:
    """Tokenize (source, sentence) pairs with ``datasets.map``; labels mask the prompt out."""
    tokenizer = backbone.tokenizer
    table = datasets.Dataset.from_dict({
        "prompt": [model_prompt(fmt.linearize(record.items), backbone.separator) for record, _ in pairs],
        "target": [model_target(sentence, backbone.end) for _, sentence in pairs],
    })

    def tokenize(batch: dict) -> dict:
        prompts = tokenizer(batch["prompt"], add_special_tokens=False)["input_ids"]
        targets = tokenizer(batch["target"], add_special_tokens=False)["input_ids"]
        return {"input_ids": [p + t for p, t in zip(prompts, targets, strict=True)],
                "labels": [[IGNORE_INDEX] * len(p) + t for p, t in zip(prompts, targets, strict=True)]}

    encoded = table.map(tokenize, batched=True, remove_columns=["prompt", "target"], desc="tokenizing")
    return encoded.filter(lambda row: len(row["input_ids"]) <= max_tokens, desc="dropping over-long")


def collate(rows: list[dict], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of examples; positions come from the mask, so padding side is free."""
    width = max(len(row["input_ids"]) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        n = len(row["input_ids"])
        ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(row["input_ids"]), torch.tensor(row["labels"]), 1
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int, group: int = 50) -> list[list[int]]:
    """One epoch of shuffled batches of similar-length examples, so little compute goes to padding.

    Shuffle, cut into groups of ``group`` batches, sort each group by length, cut into batches and
    shuffle the batch order (HF's ``group_by_length`` idea). A pure function of (seed, epoch), which
    is what makes resuming exact.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    span = group * batch_size
    batches = []
    for start in range(0, len(order), span):
        chunk = sorted(order[start: start + span], key=lengths.__getitem__, reverse=True)
        batches.extend(chunk[i: i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def _cpu_only_multiprocess() -> bool:
    """``accelerate launch --num_processes N`` on a machine without CUDA: train on CPU with gloo.

    Accelerate only picks its multi-CPU mode when told to use the CPU; without this each launched
    process would silently train alone.
    """
    return not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1


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


def load_training_set(config: TrainConfig, backbone: Backbone) -> datasets.Dataset:
    records = read_records(config.dataset, config.split, Path(config.data_dir) if config.data_dir else None)
    pairs = training_pairs(records)
    random.Random(config.seed).shuffle(pairs)
    if config.max_examples:
        pairs = pairs[: config.max_examples]
    max_tokens = backbone.max_positions - config.prefix_length
    encoded = encode_examples(pairs, get_format(config.format_name), backbone, max_tokens)
    if len(encoded) < len(pairs):
        print(f"kg2text: dropped {len(pairs) - len(encoded)} examples longer than {max_tokens} tokens")
    if len(encoded) == 0:
        raise UserError("no training examples left (all longer than the backbone's context?)")
    return encoded


def train(config: TrainConfig, backbone: Backbone | None = None, resume: bool = False,
          from_previous: bool = False) -> Path | None:
    """Train and write the run folder; returns the saved prefix file (None on non-main processes).

    ``from_previous``: when resuming and the newest checkpoint is damaged, continue from the one before."""
    config.validate()
    accelerator = Accelerator(mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.grad_accum,
                              cpu=_cpu_only_multiprocess())
    backbone = backbone or load_backbone(config.backbone)
    run_dir = Path(config.output)
    if accelerator.is_main_process:
        prepare_run_dir(run_dir, resume)
    accelerator.wait_for_everyone()
    with RunLock(run_dir) if accelerator.is_main_process else contextlib.nullcontext():
        return _train(config, backbone, accelerator, run_dir, resume, from_previous)


def _train(config: TrainConfig, backbone: Backbone, accelerator: Accelerator, run_dir: Path,
           resume: bool, from_previous: bool) -> Path | None:
    backbone.model.to(accelerator.device, backbone_dtype(config.dtype))
    lm = TunedLM(backbone)
    if config.gradient_checkpointing:
        lm.enable_gradient_checkpointing()
    examples = load_training_set(config, backbone)
    lengths = [len(ids) for ids in examples["input_ids"]]
    tuner, method_config = build_tuner(config.method, backbone, config.prefix_length, config.mlp_hidden,
                                       config.init_text, config.seed)
    check_disk_space(run_dir, tuner)
    steps_per_epoch = math.ceil(len(lengths) / config.batch_size / config.grad_accum)
    total_steps = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    optimizer = torch.optim.AdamW(tuner.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, config.warmup_steps, total_steps)
    progress = {"step": 0, "epoch": 0, "batch": 0, "tokens": 0, "elapsed_s": 0.0, "log_lines": 0}
    log_path = run_dir / "train_log.jsonl"
    progress["config"] = asdict(config)
    if resume:
        progress = load_checkpoint(run_dir, tuner, optimizer, scheduler, from_previous)
        check_config_unchanged(config, progress.get("config"), run_dir / "config.json")
        _truncate_lines(log_path, progress["log_lines"])
        print(f"kg2text: resuming at step {progress['step']} of {total_steps}")
    elif accelerator.is_main_process:
        atomic_write_text(run_dir / "config.json", json.dumps(asdict(config), indent=2))
        log_path.write_text("")
    tuner, optimizer = accelerator.prepare(tuner, optimizer)

    def checkpoint() -> None:
        if accelerator.is_main_process:
            progress["log_lines"] = _count_lines(log_path)
            save_checkpoint(run_dir, accelerator.unwrap_model(tuner), optimizer.optimizer, scheduler, progress)

    if accelerator.is_main_process:
        print(f"kg2text: training {config.method} on {config.backbone} with {accelerator.num_processes} process(es) "
              f"on {accelerator.device}; {len(lengths)} examples, {total_steps} steps of {config.batch_size}")
    bar = tqdm(total=total_steps, initial=progress["step"], desc="training", unit="step",
               disable=not accelerator.is_main_process)
    started = time.perf_counter() - progress["elapsed_s"]
    window: list[float] = []
    rank, world = accelerator.process_index, accelerator.num_processes
    try:
        while progress["step"] < total_steps:
            batches = epoch_batches(lengths, config.batch_size, config.seed, progress["epoch"])
            for global_batch in batches[progress["batch"]:]:
                batch = _local_batch(examples, global_batch[rank::world] or global_batch[:1], backbone, accelerator)
                if not global_batch[rank::world]:  # fewer rows than processes: a stand-in row that teaches nothing
                    batch["labels"].fill_(IGNORE_INDEX)
                global_targets = _global_target_count(batch["labels"], accelerator)
                with accelerator.accumulate(tuner):
                    lm.use(config.method, tuner())
                    loss, _ = lm.target_loss(batch["input_ids"], batch["attention_mask"], batch["labels"],
                                             normaliser=global_targets / world)
                    if not torch.isfinite(loss):
                        raise UserError(f"the loss became {loss.item()} at step {progress['step'] + 1}; lower --lr. "
                                        "Nothing new was saved; the last checkpoint (if any) is intact")
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(tuner.parameters(), config.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad()
                progress["batch"] += 1
                progress["tokens"] += int(accelerator.reduce(batch["attention_mask"].sum(), "sum"))
                window.append(float(accelerator.reduce(loss.detach(), "mean")))
                if not accelerator.sync_gradients:
                    continue
                progress["step"] += 1
                progress["elapsed_s"] = time.perf_counter() - started
                bar.update(1)
                bar.set_postfix(loss=f"{window[-1]:.3f}", tok_s=f"{progress['tokens'] / progress['elapsed_s']:.0f}")
                if progress["step"] % config.log_every == 0 or progress["step"] == total_steps:
                    _log(log_path, progress, sum(window) / len(window), scheduler.get_last_lr()[0], accelerator)
                    window = []
                if config.checkpoint_every and progress["step"] % config.checkpoint_every == 0 \
                        and progress["step"] < total_steps:
                    checkpoint()
                if progress["step"] >= total_steps:
                    break
            else:
                progress["epoch"], progress["batch"] = progress["epoch"] + 1, 0
    except KeyboardInterrupt:
        checkpoint()
        bar.close()
        raise KeyboardInterrupt(f"checkpoint saved at step {progress['step']}; continue with "
                                f"'kg2text train --output {run_dir} --resume'") from None
    bar.close()
    return _save_final(config, backbone, accelerator, tuner, method_config, run_dir)


def check_config_unchanged(config: TrainConfig, saved: dict | None, path: Path) -> None:
    """Refuse to resume when config.json no longer says what the checkpoint was trained with."""
    changed = [f"{name}: {saved.get(name)!r} -> {value!r}" for name, value in asdict(config).items()
               if saved is not None and name != "output" and saved.get(name) != value]
    if changed:
        raise UserError(f"{path} changed since the checkpoint was saved ({'; '.join(changed[:3])}); "
                        "restore it or start a new run")


def check_disk_space(run_dir: Path, tuner: torch.nn.Module) -> None:
    """Refuse to start when the disk cannot hold two checkpoints and the prefix (module + AdamW state)."""
    needed = 2 * 3 * 4 * sum(p.numel() for p in tuner.parameters()) + (1 << 20)
    free = shutil.disk_usage(run_dir).free
    if free < needed:
        raise UserError(f"only {free / 2**20:.1f} MB free at {run_dir}, training needs about {needed / 2**20:.1f} MB "
                        "for checkpoints; free some space or choose another --output")


def _local_batch(examples: datasets.Dataset, indices: list[int], backbone: Backbone,
                 accelerator: Accelerator) -> dict[str, torch.Tensor]:
    rows = [examples[i] for i in indices]
    return {k: v.to(accelerator.device) for k, v in collate(rows, backbone.tokenizer.pad_token_id).items()}


def _global_target_count(labels: torch.Tensor, accelerator: Accelerator) -> float:
    """Target tokens in the whole global batch, summed over processes."""
    count = (labels[:, 1:] != IGNORE_INDEX).sum()
    return float(accelerator.reduce(count, "sum")) or 1.0


def _save_final(config: TrainConfig, backbone: Backbone, accelerator: Accelerator, tuner, method_config: dict,
                run_dir: Path) -> Path | None:
    with torch.no_grad():
        final = accelerator.unwrap_model(tuner)().to(SAVE_DTYPES[config.save_dtype])
    if not torch.isfinite(final).all():
        raise UserError("the trained tensor holds NaN or infinite values (or overflows --save-dtype), so it was not "
                        "saved; lower --lr or keep --save-dtype float32")
    trainable = sum(p.numel() for p in accelerator.unwrap_model(tuner).parameters())
    header = {"method": config.method, "format": config.format_name, "dataset": config.dataset,
              "method_config": method_config, "trainable_params": trainable, "train_config": asdict(config)}
    accelerator.wait_for_everyone()
    path = run_dir / "prefix.safetensors"
    if accelerator.is_main_process:
        save_prefix(run_dir, final, backbone, header)
        remove_checkpoints(run_dir)
    accelerator.wait_for_everyone()
    return path if accelerator.is_main_process else None


def _log(path: Path, progress: dict, loss: float, lr: float, accelerator: Accelerator) -> None:
    if not accelerator.is_main_process:
        return
    entry = {"step": progress["step"], "loss": round(loss, 5), "lr": lr, "tokens": progress["tokens"],
             "elapsed_s": round(progress["elapsed_s"], 2),
             "tokens_per_s": round(progress["tokens"] / max(progress["elapsed_s"], 1e-9), 1)}
    with path.open("a") as log:
        log.write(json.dumps(entry) + "\n")


def _count_lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def _truncate_lines(path: Path, keep: int) -> None:
    """Drop log lines written after the checkpoint we resume from (they will be written again)."""
    if path.exists():
        atomic_write_text(path, "".join(line + "\n" for line in path.read_text().splitlines()[:keep]))
