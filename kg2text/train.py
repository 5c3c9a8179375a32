"""The training loop: prefix-tune a frozen backbone with Hugging Face Accelerate.

Plain and linear on purpose (nanoGPT style): build the examples with ``datasets``, then for each
batch compute the prefix once, run the frozen model, take the loss on target tokens only, step.
Accelerate handles device placement, mixed precision, gradient accumulation and several processes
(``accelerate launch``); only the small ``PrefixEncoder`` is wrapped, the backbone never trains.
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import datasets
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from kg2text.artifact import atomic_write_text, save_prefix
from kg2text.backbones import Backbone, load_backbone
from kg2text.data import Record, read_records, training_pairs
from kg2text.errors import UserError
from kg2text.linearize import DEFAULT_FORMAT, Format, get_format, model_prompt, model_target
from kg2text.model import IGNORE_INDEX, PrefixedLM
from kg2text.prefix import PrefixConfig, PrefixEncoder, PrefixShape


@dataclass
class TrainConfig:
    """Everything a run depends on; saved as ``config.json`` in the run folder."""

    output: str
    backbone: str = "gpt2"
    dataset: str = "webnlg"
    split: str = "train"
    format: str | None = None  # default: the dataset's own
    data_dir: str | None = None
    prefix_length: int = 10
    mlp_hidden: int = 512
    epochs: float = 5.0
    max_steps: int | None = None  # optimizer steps; overrides epochs
    max_examples: int | None = None  # use the first N (record, sentence) pairs after shuffling
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 5e-5
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"
    seed: int = 42
    log_every: int = 10

    @property
    def format_name(self) -> str:
        return self.format or DEFAULT_FORMAT[self.dataset]


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


class LengthGroupedBatches:
    """Shuffled batches of similar-length examples, so little compute goes to padding.

    Each epoch: shuffle, cut into groups of ``group`` batches, sort each group by length, cut into
    batches, shuffle the batch order (HF's ``group_by_length`` idea). Deterministic per seed and epoch.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, group: int = 50):
        self.lengths, self.batch_size, self.seed, self.group, self.epoch = lengths, batch_size, seed, group, 0

    def __len__(self) -> int:
        return math.ceil(len(self.lengths) / self.batch_size)

    def __iter__(self):
        rng = random.Random(self.seed + self.epoch)
        self.epoch += 1
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        span = self.group * self.batch_size
        batches = []
        for start in range(0, len(order), span):
            chunk = sorted(order[start: start + span], key=self.lengths.__getitem__, reverse=True)
            batches.extend(chunk[i: i + self.batch_size] for i in range(0, len(chunk), self.batch_size))
        rng.shuffle(batches)
        return iter(batches)


def prepare_run_dir(path: Path) -> Path:
    """Create the run folder, refusing to overwrite a finished run and checking we can write there."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"--output {path} exists and is not a folder")
    if (path / "prefix.safetensors").exists():
        raise UserError(f"{path} already holds a trained prefix; choose another --output or delete it")
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
    if len(encoded) == 0:
        raise UserError("no training examples left (all longer than the backbone's context?)")
    return encoded


def train(config: TrainConfig, backbone: Backbone | None = None) -> Path:
    """Train a prefix and write the run folder; returns the path of the saved prefix file."""
    get_format(config.format_name)
    accelerator = Accelerator(mixed_precision=config.mixed_precision, gradient_accumulation_steps=config.grad_accum)
    set_seed(config.seed)
    backbone = backbone or load_backbone(config.backbone)
    run_dir = prepare_run_dir(Path(config.output)) if accelerator.is_main_process else Path(config.output)
    backbone.model.to(accelerator.device)
    lm = PrefixedLM(backbone)
    examples = load_training_set(config, backbone)

    shape = PrefixShape.of(backbone.model)
    encoder = PrefixEncoder(PrefixConfig(config.prefix_length, config.mlp_hidden), shape,
                            backbone.model.config.hidden_size)
    batches = LengthGroupedBatches([len(ids) for ids in examples["input_ids"]], config.batch_size, config.seed)
    loader = torch.utils.data.DataLoader(
        examples.with_format(None), batch_sampler=batches,
        collate_fn=lambda rows: collate(rows, backbone.tokenizer.pad_token_id),
    )
    steps_per_epoch = math.ceil(len(loader) / config.grad_accum / accelerator.num_processes)
    total_steps = config.max_steps or max(1, math.ceil(config.epochs * steps_per_epoch))
    optimizer = torch.optim.AdamW(encoder.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, config.warmup_steps, total_steps)
    encoder, optimizer, loader, scheduler = accelerator.prepare(encoder, optimizer, loader, scheduler)

    log_path = run_dir / "train_log.jsonl"
    if accelerator.is_main_process:
        atomic_write_text(run_dir / "config.json", json.dumps(asdict(config), indent=2))
        log_path.write_text("")
    progress = tqdm(total=total_steps, desc="training", disable=not accelerator.is_main_process, unit="step")
    step, tokens, started, window_loss, window_n = 0, 0, time.perf_counter(), 0.0, 0
    encoder.train()
    while step < total_steps:
        for batch in loader:
            with accelerator.accumulate(encoder):
                lm.injector.set(encoder())
                loss, _ = lm.target_loss(batch["input_ids"], batch["attention_mask"], batch["labels"])
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(encoder.parameters(), config.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            tokens += int(batch["attention_mask"].sum()) * accelerator.num_processes
            window_loss, window_n = window_loss + loss.item(), window_n + 1
            if not accelerator.sync_gradients:
                continue
            step += 1
            elapsed = time.perf_counter() - started
            progress.update(1)
            progress.set_postfix(loss=f"{loss.item():.3f}", tok_s=f"{tokens / elapsed:.0f}")
            if step % config.log_every == 0 or step == total_steps:
                entry = {"step": step, "loss": window_loss / window_n, "lr": scheduler.get_last_lr()[0],
                         "tokens": tokens, "elapsed_s": round(elapsed, 2), "tokens_per_s": round(tokens / elapsed, 1)}
                window_loss, window_n = 0.0, 0
                if accelerator.is_main_process:
                    with log_path.open("a") as log:
                        log.write(json.dumps(entry) + "\n")
            if step >= total_steps:
                break
    progress.close()
    lm.injector.set(None)
    with torch.no_grad():
        final = accelerator.unwrap_model(encoder)()
    header = {"method": "prefix", "format": config.format_name, "dataset": config.dataset,
              "prefix_config": PrefixConfig(config.prefix_length, config.mlp_hidden).to_dict(),
              "train_config": asdict(config)}
    accelerator.wait_for_everyone()
    path = run_dir / "prefix.safetensors"
    if accelerator.is_main_process:
        save_prefix(run_dir, final, backbone, header)
    return path
