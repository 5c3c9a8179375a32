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
import resource
import sys
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from kg2text.artifact import atomic_write, atomic_write_text, check_compatible, read_prefix, save_prefix
from kg2text.backbones import Backbone, load_backbone
from kg2text.batching import (
    collate,
    collate_shared,
    epoch_batches,
    shared_prompt_batches,
    training_examples,
    width_multiple,
)
from kg2text.checkpoint import load_checkpoint, remove_checkpoints, save_checkpoint
from kg2text.control import category_rows, control_categories, training_rows
from kg2text.data import DATASETS, Record, file_format, file_format_of, read_pair_file, read_records
from kg2text.errors import UserError
from kg2text.hardware import (
    DTYPES,
    backbone_dtype,
    faster_training_dtype,
    onednn_is_faster,
    onednn_training_linears,
    training_dtype,
)
from kg2text.linearize import DEFAULT_FORMAT, get_format
from kg2text.methods import build_tuner, virtual_length
from kg2text.model import IGNORE_INDEX, METHODS, TunedLM, compile_elementwise_blocks
from kg2text.rundir import RunLock, check_disk_space, count_lines, prepare_run_dir, truncate_lines

if TYPE_CHECKING:
    import datasets  # at run time only batching imports it, when it encodes examples

FP32_MATMULS = ("auto", "torch", "onednn")
BEFORE_THE_FIELD = {"fp32_matmuls": "torch"}  # what a run written before one of these fields existed did
MAX_LR = 1.0
SAVE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class TrainConfig:
    """Everything a run depends on; saved as ``config.json`` in the run folder."""

    output: str
    backbone: str = "gpt2"
    method: str = "prefix"  # prefix | prompt | prefix-hidden | control
    dataset: str = "webnlg"
    split: str = "train"
    format: str | None = None  # default: the dataset's own (a pair file's: from its inputs)
    data_dir: str | None = None
    train_file: str | None = None  # your own pairs (JSONL or CSV) instead of --dataset
    dev_file: str | None = None  # dev pairs: a dev loss every eval_every steps, and the best step's prefix is kept
    skip_bad: bool = False  # skip bad rows of train_file / dev_file (counted) instead of stopping
    prefix_length: int = 10
    control_length: int = 2  # --method control: positions per category behind the shared prefix
    mlp_hidden: int = 512
    init_text: str | None = None  # initialise from the backbone's activations / embeddings of this text
    init_from: str | None = None  # start from this run's trained prefix (adaptation to a new knowledge base)
    epochs: float = 5.0
    max_steps: int | None = None  # optimizer steps; overrides epochs
    max_minutes: float | None = None  # a time budget: the schedule decays to 0 as it runs out, training stops then
    max_examples: int | None = None  # use the first N (record, sentence) pairs after shuffling
    batch_size: int = 8  # global batch per optimizer micro-step, split over processes
    grad_accum: int = 1
    lr: float = 5e-5
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"
    dtype: str = "float32"  # the frozen backbone's weights: float32, bfloat16, or auto (the faster one here)
    gradient_checkpointing: bool = False
    compile: bool = False  # torch.compile the backbone's MLPs and norms (model.compile_elementwise_blocks)
    share_prompts: bool = False  # one pass over an input's prompt for all its sentences in a batch (collate_shared)
    average_last: float = 0.0  # save the mean of the trained tensor over this last fraction of the run (TailAverage)
    fp32_matmuls: str = "auto"  # an fp32 backbone's frozen matmuls on a CPU: torch, onednn, or auto (the faster here)
    save_dtype: str = "float32"
    checkpoint_every: int = 100  # optimizer steps between resumable checkpoints (0: never)
    seed: int = 42
    log_every: int = 10
    eval_every: int = 100  # steps between dev losses (with dev_file)

    @property
    def virtual_tokens(self) -> int:
        """Positions an example's prefix takes (a control prefix: the shared one plus its category's)."""
        return self.prefix_length + (self.control_length if self.method == "control" else 0)

    @property
    def format_name(self) -> str:
        return self.format or DEFAULT_FORMAT[self.dataset]

    def training_records(self) -> tuple[list[Record], list[str]]:
        """The records to train on (a pair file's or a dataset split's) and the bad rows skipped."""
        if self.train_file:
            return read_pair_file(self.train_file, self.skip_bad)
        return read_records(self.dataset, self.split, Path(self.data_dir) if self.data_dir else None), []

    def validate(self) -> None:
        if self.dataset not in DATASETS:
            raise UserError(f"unknown dataset {self.dataset!r}; choose one of: {', '.join(DATASETS)}")
        if self.method not in METHODS:
            raise UserError(f"unknown method {self.method!r}; choose one of: {', '.join(METHODS)}")
        if self.save_dtype not in SAVE_DTYPES:
            raise UserError(f"unknown --save-dtype {self.save_dtype!r}; choose one of: {', '.join(SAVE_DTYPES)}")
        for name in ("prefix_length", "control_length", "batch_size", "grad_accum", "mlp_hidden", "eval_every"):
            if getattr(self, name) < 1:
                raise UserError(f"--{name.replace('_', '-')} must be at least 1")
        if not (0 < self.lr <= MAX_LR):
            raise UserError(f"--lr {self.lr} is not a sensible learning rate; prefix and prompt tuning use about "
                            f"1e-5 to 1e-2 (kg2text refuses anything above {MAX_LR})")
        get_format(self.format_name)
        if self.dtype != "auto":
            backbone_dtype(self.dtype)
        if self.fp32_matmuls not in FP32_MATMULS:
            raise UserError(f"unknown --fp32-matmuls {self.fp32_matmuls!r}; choose one of: {', '.join(FP32_MATMULS)}")
        if self.fp32_matmuls == "onednn" and (self.dtype == "bfloat16" or self.compile):
            raise UserError("--fp32-matmuls onednn is for an fp32 backbone without --compile")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise UserError(f"--max-minutes {self.max_minutes} must be more than 0")
        if not 0 <= self.average_last < 1:
            raise UserError(f"--average-last {self.average_last} is the fraction of the run, at its end, whose trained "
                            "tensors are averaged: at least 0 (off) and below 1")
        if self.average_last and self.dev_file:
            raise UserError("--dev-file keeps the step with the best dev loss and --average-last the mean of the last "
                            "steps: give one")
        if self.share_prompts and self.method == "prompt":
            raise UserError("--share-prompts is for the prefix methods: a soft prompt sits in the input itself")
        if self.init_from and self.init_text:
            raise UserError("--init-from and --init-text both say where training starts: give one")
        if self.init_from and self.method == "control":
            raise UserError("--init-from is not available for --method control; use prefix or prompt")
        for name in ("train_file", "dev_file"):
            if getattr(self, name) and not Path(getattr(self, name)).is_file():
                raise UserError(f"--{name.replace('_', '-')} {getattr(self, name)} is not a file")

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
        saved = BEFORE_THE_FIELD | saved
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


def load_training_set(config: TrainConfig, backbone: Backbone) -> datasets.Dataset:
    """The encoded training examples of a run; a pair file without --format sets the format from its inputs."""
    records, skipped = config.training_records()
    if skipped:
        print(f"kg2text: skipped {len(skipped)} bad row(s) of {config.train_file}; first: {skipped[0]}")
    if config.train_file and not config.format:
        config.format = file_format(records)
    return training_examples(records, get_format(config.format_name), backbone, config.virtual_tokens, config.seed,
                             config.max_examples)


def load_dev_set(config: TrainConfig, backbone: Backbone) -> datasets.Dataset | None:
    if not config.dev_file:
        return None
    records, skipped = read_pair_file(config.dev_file, config.skip_bad)
    if skipped:
        print(f"kg2text: skipped {len(skipped)} bad row(s) of {config.dev_file}; first: {skipped[0]}")
    if file_format(records) != file_format_of(config.format_name):
        raise UserError(f"--dev-file {config.dev_file}: its inputs are not in the training data's format "
                        f"({config.format_name})")
    return training_examples(records, get_format(config.format_name), backbone, config.virtual_tokens, config.seed,
                             what="dev")


def _cpu_only_multiprocess() -> bool:
    """``accelerate launch --num_processes N`` on a machine without CUDA: train on CPU with gloo.

    Accelerate only picks its multi-CPU mode when told to use the CPU; without this each launched
    process would silently train alone.
    """
    return not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1


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


def backbone_in_training_dtype(config: TrainConfig, backbone: Backbone, device: torch.device,
                               processes: int = 1) -> TrainConfig:
    """Move the frozen backbone to ``device`` in the run's dtype; returns the config with ``--dtype auto`` made
    concrete (measured once here, said on stderr, recorded in the run's config)."""
    if config.dtype != "auto":
        backbone.model.to(device, training_dtype(config.dtype, backbone.model.config, device))
        return config
    if processes > 1:
        raise UserError("--dtype auto measures this process's device; with several processes give --dtype float32 or "
                        "bfloat16")
    dtype, why = faster_training_dtype(backbone.model.config, device)
    print(f"kg2text: --dtype auto: {dtype} ({why})", file=sys.stderr)
    backbone.model.to(device, DTYPES[dtype])
    return replace(config, dtype=dtype)


def _train(config: TrainConfig, backbone: Backbone, accelerator: Accelerator, run_dir: Path,
           resume: bool, from_previous: bool) -> Path | None:
    config = backbone_in_training_dtype(config, backbone, accelerator.device, accelerator.num_processes)
    config = replace(config, fp32_matmuls=fp32_matmuls_here(config, backbone, accelerator.device))
    with onednn_training_linears(backbone.model) if config.fp32_matmuls == "onednn" else contextlib.nullcontext():
        return _train_in_dtype(config, backbone, accelerator, run_dir, resume, from_previous)


def fp32_matmuls_here(config: TrainConfig, backbone: Backbone, device: torch.device) -> str:
    """Whose matmuls the frozen layers train through: oneDNN's (``hardware.onednn_training_linears``, forward and the
    input's gradient, weights reordered once) for an fp32 backbone on a CPU where ``auto`` measures it faster at a
    training batch's 640 rows (1.07x the tokens/s side by side on an AMD EPYC Zen 4,
    results/speed/ab_train_onednn_float32.txt), else torch's; ``--compile`` keeps torch's (inductor traces them).
    Made concrete once and recorded in the run's config, so a resumed run multiplies as it began (bit for bit)."""
    if config.dtype != "float32" or config.compile:
        return "torch"
    if config.fp32_matmuls == "onednn" and device.type != "cpu":
        raise UserError(f"--fp32-matmuls onednn runs on a CPU, not on {device.type}")
    if config.fp32_matmuls != "auto":
        return config.fp32_matmuls
    return "onednn" if onednn_is_faster(backbone.model.config, device, rows=640) else "torch"


def _train_in_dtype(config: TrainConfig, backbone: Backbone, accelerator: Accelerator, run_dir: Path,
                    resume: bool, from_previous: bool) -> Path | None:
    lm = TunedLM(backbone)
    if config.gradient_checkpointing:
        lm.enable_gradient_checkpointing()
    if config.compile:
        compile_elementwise_blocks(backbone.model)
    start = trained_start(config, backbone)  # checked before the data is read: a wrong run fails fast
    examples = load_training_set(config, backbone)
    dev = load_dev_set(config, backbone)
    examples, dev, categories = _control_rows(config, examples, dev)
    lengths = [len(ids) for ids in examples["input_ids"]]
    tuner, method_config = build_tuner(config.method, backbone, config.prefix_length, config.mlp_hidden,
                                       config.init_text, config.seed, start, config.control_length, categories)
    check_disk_space(run_dir, tuner)
    steps_per_epoch = math.ceil(len(lengths) / config.batch_size / config.grad_accum)
    total_steps = config.max_steps or (math.inf if config.max_minutes else
                                       max(1, math.ceil(config.epochs * steps_per_epoch)))
    from transformers import get_linear_schedule_with_warmup  # here: its module imports peft, which generate skips

    optimizer = torch.optim.AdamW(tuner.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    progress = {"step": 0, "epoch": 0, "batch": 0, "tokens": 0, "elapsed_s": 0.0, "log_lines": 0}
    scheduler = time_schedule(optimizer, config.max_minutes, config.warmup_steps, progress) if config.max_minutes else \
        get_linear_schedule_with_warmup(optimizer, config.warmup_steps, total_steps)
    log_path = run_dir / "train_log.jsonl"
    progress["config"] = asdict(config)
    if resume:
        progress = load_checkpoint(run_dir, tuner, optimizer, scheduler, from_previous)
        check_config_unchanged(config, progress.get("config"), run_dir / "config.json")
        truncate_lines(log_path, progress["log_lines"])
        print(f"kg2text: resuming at step {progress['step']} of {total_steps}")
    elif accelerator.is_main_process:
        atomic_write_text(run_dir / "config.json", json.dumps(asdict(config), indent=2))
        log_path.write_text("")
    saved_average = progress.pop("average", None)  # a resumed run's running average so far
    average = TailAverage(config.average_last, saved_average) if config.average_last else None
    tuner, optimizer = accelerator.prepare(tuner, optimizer)

    def checkpoint() -> None:
        if accelerator.is_main_process:
            progress["log_lines"] = count_lines(log_path)
            save_checkpoint(run_dir, accelerator.unwrap_model(tuner), optimizer.optimizer, scheduler, progress,
                            average.state() if average else None)

    if accelerator.is_main_process:
        print(f"kg2text: training {config.method} on {config.backbone} with {accelerator.num_processes} process(es) "
              f"on {accelerator.device}; {len(lengths)} examples, {total_steps} steps of {config.batch_size}"
              + (f", at most {config.max_minutes:g} minutes" if config.max_minutes else ""))
    bar = tqdm(total=None if total_steps == math.inf else total_steps, initial=progress["step"], desc="training",
               unit="step",
               disable=not accelerator.is_main_process)
    started = time.perf_counter() - progress["elapsed_s"]
    window: list[float] = []
    rank, world = accelerator.process_index, accelerator.num_processes
    try:
        while progress["step"] < total_steps:
            batches = _epoch_order(config, examples, lengths, progress["epoch"])
            for global_batch in batches[progress["batch"]:]:
                mine = _process_share(global_batch, rank, world, config.share_prompts)
                batch = _local_batch(examples, mine or global_batch[:1], backbone, accelerator,
                                     width_multiple(config.dtype), config.share_prompts)
                if not mine:  # fewer rows than processes: a stand-in row that teaches nothing
                    batch["labels"].fill_(IGNORE_INDEX)
                global_targets = _global_target_count(batch["labels"], accelerator)
                with accelerator.accumulate(tuner):
                    lm.use(config.method, tuner(), batch.get("control"))
                    loss, _ = lm.target_loss(batch["input_ids"], batch["attention_mask"], batch["labels"],
                                             normaliser=global_targets / world, positions=batch.get("position_ids"))
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
                progress["tokens"] += int(accelerator.reduce(batch["tokens"], "sum"))
                window.append(float(accelerator.reduce(loss.detach(), "mean")))
                if not accelerator.sync_gradients:
                    continue
                progress["step"] += 1
                progress["elapsed_s"] = time.perf_counter() - started
                if config.max_minutes and _out_of_time(progress["elapsed_s"], config.max_minutes, accelerator):
                    total_steps = progress["step"]  # this step is the last: logged, evaluated, saved as such
                if average and average.due(progress, total_steps, config.max_minutes):
                    average.add(accelerator.unwrap_model(tuner))
                bar.update(1)
                bar.set_postfix(loss=f"{window[-1]:.3f}", tok_s=f"{progress['tokens'] / progress['elapsed_s']:.0f}")
                if progress["step"] % config.log_every == 0 or progress["step"] == total_steps:
                    _log(log_path, progress, sum(window) / len(window), scheduler.get_last_lr()[0], accelerator)
                    window = []
                if dev is not None and (progress["step"] % config.eval_every == 0 or progress["step"] == total_steps):
                    _evaluate_dev(config, lm, accelerator.unwrap_model(tuner), dev, backbone, run_dir, progress,
                                  log_path, accelerator)
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
    return _save_final(config, backbone, accelerator, tuner, method_config, run_dir, progress.get("best"), average)


AVERAGE_EVERY = 50  # steps between the trained tensors that --average-last averages


class TailAverage:
    """``--average-last F``: the mean of the trained tensor at every ``AVERAGE_EVERY``-th step in the last fraction F
    of the run (of its time with ``--max-minutes``, else of its steps), as in stochastic weight averaging. The
    schedule's last steps still move the tensor with each batch's noise; their mean smooths it out. The run keeps
    the last step's tensor beside it (``RUN/last-step/``), so one run compares the two without a second seed."""

    def __init__(self, fraction: float, saved: dict[str, torch.Tensor] | None = None) -> None:
        self.fraction = fraction
        self.total = saved["total"] if saved else None
        self.count = int(saved["count"]) if saved else 0

    def due(self, progress: dict, total_steps: float, max_minutes: float | None) -> bool:
        if progress["step"] % AVERAGE_EVERY:
            return False
        if max_minutes:
            return progress["elapsed_s"] >= (1 - self.fraction) * max_minutes * 60
        return progress["step"] >= (1 - self.fraction) * total_steps

    @torch.no_grad()
    def add(self, tuner: torch.nn.Module) -> None:
        tensor = tuner().float().contiguous()  # a prefix is a permuted view; safetensors saves contiguous tensors
        self.total = tensor.clone() if self.total is None else self.total + tensor
        self.count += 1

    def mean(self) -> torch.Tensor | None:
        return self.total / self.count if self.count else None

    def state(self) -> dict[str, torch.Tensor] | None:
        """What a checkpoint keeps (nothing before the first tensor is taken)."""
        return {"total": self.total, "count": torch.tensor(self.count)} if self.count else None


def time_schedule(optimizer: torch.optim.Optimizer, minutes: float, warmup_steps: int, progress: dict):
    """``--max-minutes``: linear warmup over ``--warmup-steps`` steps, then a linear decay in wall-clock time that
    reaches 0 when the budget is spent, so a run ends on time on any CPU, however fast its steps are.
    ``progress["elapsed_s"]`` is the clock, kept by the loop."""
    budget = minutes * 60

    def factor(step: int) -> float:
        if step < warmup_steps:
            return step / warmup_steps
        return max(0.0, 1 - progress["elapsed_s"] / budget)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _out_of_time(elapsed_s: float, max_minutes: float, accelerator: Accelerator) -> bool:
    """Has the budget run out? Decided together, so that all processes stop at the same step."""
    out = torch.tensor([float(elapsed_s >= max_minutes * 60)], device=accelerator.device)
    return float(accelerator.gather(out).max()) > 0


def trained_start(config: TrainConfig, backbone: Backbone) -> torch.Tensor | None:
    """``--init-from RUN``: that run's trained tensor, checked to fit this run's backbone, method and length."""
    if not config.init_from:
        return None
    run = Path(config.init_from)
    tensor, header = read_prefix(run)
    check_compatible(header, backbone, run)
    method = header.get("method", "prefix")
    if method != config.method:
        raise UserError(f"--init-from {run} is a {method} run; train with --method {method}")
    length = virtual_length(method, tuple(tensor.shape))
    if length != config.prefix_length:
        raise UserError(f"--init-from {run} has {length} virtual tokens; train with --prefix-length {length}")
    return tensor.float()


@torch.no_grad()
def dev_loss(lm: TunedLM, method: str, tensor: torch.Tensor, dev: datasets.Dataset, batch_size: int, pad_id: int,
             device: torch.device) -> float:
    """Mean cross-entropy per target token of the dev examples under ``tensor``."""
    total, count = 0.0, 0
    for start in range(0, len(dev), batch_size):
        batch = collate([dev[i] for i in range(start, min(start + batch_size, len(dev)))], pad_id)
        batch = {k: v.to(device) for k, v in batch.items()}
        lm.use(method, tensor, batch.get("control"))
        loss_sum, n = lm.target_loss(batch["input_ids"], batch["attention_mask"], batch["labels"], normaliser=1.0)
        total, count = total + float(loss_sum), count + n
    return total / max(count, 1)


BEST_FILE = "best.safetensors"  # the trained tensor at the step with the lowest dev loss so far


def _evaluate_dev(config: TrainConfig, lm: TunedLM, tuner: torch.nn.Module, dev: datasets.Dataset,
                  backbone: Backbone, run_dir: Path, progress: dict, log_path: Path,
                  accelerator: Accelerator) -> None:
    """Dev loss now; the tensor is kept (atomically, in the run folder) when it is the best so far."""
    with torch.no_grad():
        tensor = tuner()
    loss = dev_loss(lm, config.method, tensor, dev, config.batch_size, backbone.tokenizer.pad_token_id,
                    accelerator.device)
    best = progress.get("best")
    improved = best is None or loss < best["dev_loss"]
    if improved:
        progress["best"] = {"step": progress["step"], "dev_loss": round(loss, 6)}
    if accelerator.is_main_process:
        if improved:
            atomic_write(run_dir / BEST_FILE, lambda tmp: save_file({"tensor": tensor.contiguous().cpu()}, tmp))
        with log_path.open("a") as log:
            log.write(json.dumps({"step": progress["step"], "dev_loss": round(loss, 5), "best": improved}) + "\n")


def _control_rows(config: TrainConfig, examples: datasets.Dataset, dev: datasets.Dataset | None):
    """``--method control``: the examples (and dev examples) with a ``control`` column, each one's control prefix
    by its category (control.py), and the categories; other methods: unchanged, no categories."""
    if config.method != "control":
        return examples, dev, ()
    categories = control_categories(examples["category"])
    if len(categories) < 3:
        found = ", ".join(categories[1:]) or "none"
        raise UserError(f"--method control needs inputs of several categories (WebNLG has 10); these examples have "
                        f"{found}: use --method prefix")
    examples = examples.add_column("control", training_rows(categories, examples["category"]))
    if dev is not None:
        dev = dev.add_column("control", category_rows(categories, dev["category"]))
    return examples, dev, categories


def check_config_unchanged(config: TrainConfig, saved: dict | None, path: Path) -> None:
    """Refuse to resume when config.json no longer says what the checkpoint was trained with."""
    defaults = {f.name: f.default for f in fields(TrainConfig)} | BEFORE_THE_FIELD  # what a run older than a field did
    changed = [f"{name}: {saved.get(name, defaults[name])!r} -> {value!r}" for name, value in asdict(config).items()
               if saved is not None and name != "output" and saved.get(name, defaults[name]) != value]
    if changed:
        raise UserError(f"{path} changed since the checkpoint was saved ({'; '.join(changed[:3])}); "
                        "restore it or start a new run")


def _epoch_order(config: TrainConfig, examples: datasets.Dataset, lengths: list[int], epoch: int) -> list[list[int]]:
    """The epoch's batches of example indices (with shared prompts, an input's examples side by side)."""
    if config.share_prompts:
        return shared_prompt_batches(examples["input"], lengths, config.batch_size, config.seed, epoch)
    return epoch_batches(lengths, config.batch_size, config.seed, epoch)


def _process_share(global_batch: list[int], rank: int, world: int, contiguous: bool) -> list[int]:
    """This process's examples of a global batch: every ``world``-th, or with shared prompts (an input's examples
    sit together) a contiguous slice."""
    if not contiguous:
        return global_batch[rank::world]
    return global_batch[rank * len(global_batch) // world: (rank + 1) * len(global_batch) // world]


def _local_batch(examples: datasets.Dataset, indices: list[int], backbone: Backbone, accelerator: Accelerator,
                 multiple: int, share_prompts: bool = False) -> dict[str, torch.Tensor]:
    """The examples padded into a batch on this process's device, with ``tokens``: the examples' own tokens (what
    tokens/s counts, with or without shared prompts)."""
    rows = [examples[i] for i in indices]
    batch = (collate_shared if share_prompts else collate)(rows, backbone.tokenizer.pad_token_id, multiple)
    batch.setdefault("tokens", batch["attention_mask"].sum())
    return {k: v.to(accelerator.device) for k, v in batch.items()}


def _global_target_count(labels: torch.Tensor, accelerator: Accelerator) -> float:
    """Target tokens in the whole global batch, summed over processes."""
    count = (labels[:, 1:] != IGNORE_INDEX).sum()
    return float(accelerator.reduce(count, "sum")) or 1.0


def _save_final(config: TrainConfig, backbone: Backbone, accelerator: Accelerator, tuner, method_config: dict,
                run_dir: Path, best: dict | None, average: TailAverage | None) -> Path | None:
    """The prefix file: the last step's tensor, with a dev file the best step's, with ``--average-last`` the mean
    of the last part's (and the last step's in ``RUN/last-step/``)."""
    with torch.no_grad():
        last = accelerator.unwrap_model(tuner)()
    if average and not average.count:
        print(f"kg2text: --average-last {config.average_last:g}: no {AVERAGE_EVERY}th step fell in that part of the "
              "run, so the last step's tensor is saved", file=sys.stderr)
    final = load_file(run_dir / BEST_FILE)["tensor"] if best else average.mean() if average and average.count else last
    final, last = (tensor.to(SAVE_DTYPES[config.save_dtype]) for tensor in (final, last))
    if not (torch.isfinite(final).all() and torch.isfinite(last).all()):
        raise UserError("the trained tensor holds NaN or infinite values (or overflows --save-dtype), so it was not "
                        "saved; lower --lr or keep --save-dtype float32")
    trainable = sum(p.numel() for p in accelerator.unwrap_model(tuner).parameters())
    header = {"method": config.method, "format": config.format_name, "dataset": config.dataset,
              "method_config": method_config, "trainable_params": trainable, "train_config": asdict(config)}
    chosen = {"selected_by_dev_loss": best} if best else \
        {"averaged": {"every": AVERAGE_EVERY, "tensors": average.count}} if average and average.count else {}
    accelerator.wait_for_everyone()
    path = run_dir / "prefix.safetensors"
    if accelerator.is_main_process:
        if average:
            save_prefix(run_dir / "last-step", last, backbone, header)
        save_prefix(run_dir, final, backbone, header | chosen)
        remove_checkpoints(run_dir)
        (run_dir / BEST_FILE).unlink(missing_ok=True)
    accelerator.wait_for_everyone()
    return path if accelerator.is_main_process else None


def log_entry(progress: dict, loss: float, lr: float) -> dict:
    """One line of ``train_log.jsonl`` (kg2text's loop and the anchors' write the same lines); the peak resident
    memory is there to show whether a long run's memory keeps growing."""
    return {"step": progress["step"], "loss": round(loss, 5), "lr": lr, "tokens": progress["tokens"],
            "elapsed_s": round(progress["elapsed_s"], 2),
            "tokens_per_s": round(progress["tokens"] / max(progress["elapsed_s"], 1e-9), 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}


def _log(path: Path, progress: dict, loss: float, lr: float, accelerator: Accelerator) -> None:
    if accelerator.is_main_process:
        with path.open("a") as log:
            log.write(json.dumps(log_entry(progress, loss, lr)) + "\n")
