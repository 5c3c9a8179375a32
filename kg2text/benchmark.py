"""``kg2text benchmark``: kg2text vs Hugging Face PEFT on one machine, same data, budget and decoding.

Each method runs in its own subprocess (so peak memory is its own) and writes a JSON record; the
parent collects them into a report (``kg2text/report.py``). Methods:

* ``kg2text-prefix``, ``kg2text-prompt``, ``kg2text-prefix-hidden``: this package's training loop and decoder;
* ``peft-prefix`` (``PrefixTuningConfig``, prefix_projection on, same P and MLP width) and
  ``peft-prompt`` (``PromptTuningConfig``, sampled-vocabulary init): PEFT's models, trained with the
  same batches, optimizer and schedule through PEFT's own forward (``labels=``);
* ``zero-shot``: the untuned backbone on the same prompts; ``full-ft``: all weights train (only in
  presets whose budget allows it).
"""

from __future__ import annotations

import json
import os
import platform
import random
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import torch

from kg2text.anchors import fit, generate_with, peft_model, require_adapter_effect
from kg2text.artifact import read_prefix
from kg2text.backbones import Backbone, load_backbone
from kg2text.batching import encode_examples
from kg2text.data import read_records, training_pairs
from kg2text.errors import UserError
from kg2text.generate import DecodeConfig, decode_batched, decode_prompts, load_for_generation
from kg2text.linearize import DEFAULT_FORMAT, get_format, model_prompt
from kg2text.metrics import (
    chrf_pp,
    cider,
    corpus_bleu,
    e2e_slot_error_rate,
    nist,
    rouge_l,
    scores_by_group,
    ter,
    webnlg_coverage,
)
from kg2text.speed import gemm_ceiling
from kg2text.training import TrainConfig, train

METHODS = ("kg2text-prefix", "kg2text-prompt", "kg2text-prefix-hidden", "peft-prefix", "peft-prompt", "zero-shot",
           "full-ft")


@dataclass(frozen=True)
class Preset:
    """Everything that is held equal across methods."""

    backbone: str
    dataset: str = "webnlg"
    train_split: str = "train"
    eval_split: str = "test"
    steps: int = 20
    batch_size: int = 8
    lr: float = 5e-4
    warmup_steps: int = 2
    prefix_length: int = 10
    mlp_hidden: int = 512
    eval_limit: int | None = 50
    eval_beams: int = 1
    max_new_tokens: int = 60
    speed_inputs: int = 32  # inputs decoded for the batch-32 speed figures (batch 1 uses a quarter)
    methods: tuple[str, ...] = METHODS[:-1]  # full fine-tuning only where the budget allows
    seed: int = 42
    notes: tuple[str, ...] = field(default_factory=tuple)


PRESETS = {
    "cpu-quick": Preset("smollm2-135m", notes=(
        "Full fine-tuning is left out: 135M weights with AdamW on 2 CPU cores does not fit the budget.",)),
    "gpu": Preset("smollm2-135m", steps=500, batch_size=16, eval_limit=None, eval_beams=5, max_new_tokens=100,
                  speed_inputs=64, methods=METHODS),
    "paper": Preset("gpt2-medium", steps=5 * 18102 // 5, batch_size=5, lr=5e-5, warmup_steps=0, prefix_length=5,
                    mlp_hidden=512, eval_limit=None, eval_beams=5, max_new_tokens=100, methods=METHODS,
                    notes=("Li & Liang's WebNLG setting: GPT-2 medium, 5 epochs, batch 5, lr 5e-5, P=5; "
                           "needs the Hub.",)),
    "tiny": Preset("tiny-gpt2", steps=3, batch_size=4, lr=1e-3, prefix_length=4, mlp_hidden=32, eval_limit=4,
                   max_new_tokens=6, speed_inputs=4, notes=("A smoke test of the benchmark: meaningless text.",)),
}
E2E_NOTE = ("The E2E train set is not available offline: this preset trains on E2E dev and tests on E2E test. "
            "NIST is our implementation of mteval's formula (not bit-exact with mteval-v13a's tokenisation). "
            "CIDEr is our CIDEr-D on whitespace tokens (coco-caption tokenises with PTB's Java tokeniser). "
            "METEOR is not reported: it needs Java and WordNet data.")


def _examples(preset: Preset, backbone: Backbone):
    split = "dev" if preset.dataset == "e2e" and preset.train_split == "train" else preset.train_split
    pairs = training_pairs(read_records(preset.dataset, split))
    random.Random(preset.seed).shuffle(pairs)
    pairs = pairs[: preset.steps * preset.batch_size]
    return encode_examples(pairs, get_format(DEFAULT_FORMAT[preset.dataset]), backbone,
                           backbone.max_positions - preset.prefix_length)


def _train_other(method: str, preset: Preset, backbone: Backbone, out: Path) -> tuple[object, dict]:
    """PEFT or full fine-tuning with the same batches, optimizer and schedule as kg2text's loop."""
    if method == "full-ft":
        model = backbone.model
        model.requires_grad_(True)
    else:
        model = peft_model(method, backbone, preset.prefix_length, preset.mlp_hidden, preset.seed)
    config = TrainConfig(output=str(out), max_steps=preset.steps, batch_size=preset.batch_size, lr=preset.lr,
                         warmup_steps=preset.warmup_steps, seed=preset.seed, log_every=1)
    stats = fit(model, _examples(preset, backbone), backbone.tokenizer.pad_token_id, config)
    model.eval()
    if method == "full-ft":
        model.requires_grad_(False)
        artifact = sum(p.numel() * p.element_size() for p in model.parameters())
    else:
        model.save_pretrained(out / "adapter")
        artifact = sum(f.stat().st_size for f in (out / "adapter").rglob("*") if f.is_file())
    return model, {**stats, "artifact_bytes": artifact}


def _train_kg2text(method: str, preset: Preset, backbone: Backbone, out: Path) -> tuple[object, dict]:
    shutil.rmtree(out / "run", ignore_errors=True)  # this report's own run of an earlier benchmark: replaced
    config = TrainConfig(output=str(out / "run"), backbone=preset.backbone, method=method.removeprefix("kg2text-"),
                         dataset=preset.dataset, split="dev" if preset.dataset == "e2e" else preset.train_split,
                         prefix_length=preset.prefix_length, mlp_hidden=preset.mlp_hidden, max_steps=preset.steps,
                         max_examples=preset.steps * preset.batch_size, batch_size=preset.batch_size, lr=preset.lr,
                         warmup_steps=preset.warmup_steps, checkpoint_every=0, seed=preset.seed, log_every=1)
    path = train(config, backbone=backbone)
    log = [json.loads(line) for line in (out / "run" / "train_log.jsonl").read_text().splitlines()]
    header = read_prefix(path)[1]  # the trainable-parameter count is recorded at save time
    stats = {"trainable_params": header["trainable_params"], "artifact_bytes": path.stat().st_size,
             "train_tokens": log[-1]["tokens"], "train_seconds": log[-1]["elapsed_s"], "loss_curve": log}
    return load_for_generation(out / "run", backbone).lm, stats


def run_method(method: str, preset: Preset, out: Path) -> dict:
    """Train (if the method trains), evaluate and time one method; runs inside its own process."""
    torch.manual_seed(preset.seed)
    backbone = load_backbone(preset.backbone)
    parameters = sum(p.numel() for p in backbone.model.parameters())  # before decoding replaces linear layers
    out.mkdir(parents=True, exist_ok=True)
    stats: dict = {"trainable_params": 0, "artifact_bytes": 0, "train_tokens": 0, "train_seconds": 0.0,
                   "loss_curve": []}
    if method.startswith("kg2text"):
        lm, stats = _train_kg2text(method, preset, backbone, out)
        virtual = lm.virtual_tokens

        def decode(prompts, config):
            return decode_prompts(lm, prompts, config)
    else:
        model = backbone.model
        if method != "zero-shot":
            model, stats = _train_other(method, preset, backbone, out)
        if method.startswith("peft"):
            require_adapter_effect(model, backbone)
        generate_batch = generate_with(model)
        virtual = preset.prefix_length if method.startswith("peft") else 0

        def decode(prompts, config):
            return decode_batched(backbone, prompts, config, generate_batch, virtual)

    records = read_records(preset.dataset, preset.eval_split)
    if preset.eval_limit and preset.eval_limit < len(records):
        records = [records[i * len(records) // preset.eval_limit] for i in range(preset.eval_limit)]
    fmt = get_format(DEFAULT_FORMAT[preset.dataset])
    prompts = [model_prompt(fmt.linearize(r.items), backbone.separator) for r in records]
    hypotheses = decode(prompts, DecodeConfig(preset.eval_beams, max_new_tokens=preset.max_new_tokens,
                                              batch_size=16))
    result = {"method": method, **{k: v for k, v in stats.items()},
              "quality": quality(preset.dataset, records, hypotheses),
              "hypotheses": hypotheses,
              "speed": generation_speed(decode, prompts, preset),
              "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
              "virtual_tokens": virtual, "backbone_params": parameters}
    if result["train_seconds"]:
        result["train_tokens_per_s"] = result["train_tokens"] / result["train_seconds"]
        # frozen weights need no weight gradients: about 2 (forward) + 2 (input gradients) FLOPs per weight and token
        flops_per_token = (6 if method == "full-ft" else 4) * result["backbone_params"]
        result["train_gflops"] = result["train_tokens_per_s"] * flops_per_token / 1e9
    return result


def quality(dataset: str, records, hypotheses: list[str]) -> dict:
    references = [r.references for r in records]
    scores = {"bleu": scores_by_group(records, hypotheses), "chrf++": chrf_pp(hypotheses, references),
              "ter": ter(hypotheses, references), "rouge_l": rouge_l(hypotheses, references)}
    if dataset == "webnlg":
        scores["entity_coverage"] = webnlg_coverage(records, hypotheses)
        by_size: dict[int, list[int]] = {}
        for index, record in enumerate(records):
            by_size.setdefault(len(record.items), []).append(index)
        scores["bleu_by_triples"] = {
            n: corpus_bleu([hypotheses[i] for i in idx], [records[i].references for i in idx])
            for n, idx in sorted(by_size.items())}
    else:
        scores["slot_error_rate"] = e2e_slot_error_rate(records, hypotheses)
        scores["nist"] = nist(hypotheses, references)
        scores["cider"] = cider(hypotheses, references)
    return scores


def generation_speed(decode, prompts: list[str], preset: Preset) -> dict:
    """Sentences/s and generated tokens/s at batch 1 and 32, greedy and beam 5, on the same inputs."""
    speed = {}
    for batch in (1, 32):
        count = max(1, preset.speed_inputs // (4 if batch == 1 else 1))
        chosen = (prompts * (count // len(prompts) + 1))[:count]
        for beams in (1, 5):
            config = DecodeConfig(beams, max_new_tokens=preset.max_new_tokens, batch_size=batch)
            started = time.perf_counter()
            outputs = decode(chosen, config)
            elapsed = time.perf_counter() - started
            words = sum(len(o.split()) for o in outputs)
            speed[f"batch{batch}_beam{beams}"] = {"sentences_per_s": count / elapsed, "words_per_s": words / elapsed,
                                                  "inputs": count}
    return speed


def _child(method: str, preset: Preset, out: Path) -> dict:
    """Run one method in a fresh Python process; its JSON record comes back through a file."""
    record = out / method / "result.json"
    command = [sys.executable, "-m", "kg2text.benchmark", method, json.dumps(asdict(preset)), str(out / method)]
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    result = subprocess.run(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0 or not record.exists():
        raise UserError(f"benchmark method {method} failed:\n{result.stdout[-3000:]}")
    return json.loads(record.read_text())


def environment() -> dict:
    import accelerate
    import transformers

    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "transformers": transformers.__version__, "accelerate": accelerate.__version__}
    try:
        import peft

        versions["peft"] = peft.__version__
    except ImportError:
        versions["peft"] = "not installed"
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"CPU: {cpu}, {os.cpu_count()} cores"
    return {"versions": versions, "machine": device, "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")}


def run_benchmark(name: str, preset: Preset, out: Path, command: str) -> dict:
    """Run every method of the preset and write the report; returns the report data."""
    if any(m.startswith("peft") for m in preset.methods):
        try:
            import peft  # noqa: F401
        except ImportError:
            raise UserError("the PEFT methods need peft: pip install -e '.[bench]'") from None
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for method in preset.methods:
        print(f"benchmark: {method} ...", flush=True)
        results.append(_child(method, preset, out))
    notes = list(preset.notes) + ([E2E_NOTE] if preset.dataset == "e2e" else [])
    data = {"name": name, "preset": asdict(preset), "command": command, **environment(), "results": results,
            "notes": notes, "gemm_ceiling_gflops": _ceiling(preset.backbone)}
    from kg2text.report import write_report

    write_report(data, out)
    return data


def _ceiling(backbone: str) -> float:
    """This machine's fp32 GEMM GFLOP/s at the backbone's shapes (640 rows): what 100% of training speed means."""
    return gemm_ceiling(load_backbone(backbone), torch.float32, (640,))[640]


def preset_for(name: str, dataset: str | None = None, steps: int | None = None, limit: int | None = None,
               methods: list[str] | None = None) -> Preset:
    """A named preset with the command line's overrides applied."""
    if name not in PRESETS:
        raise UserError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    unknown = set(methods or ()) - set(METHODS)
    if unknown:
        raise UserError(f"unknown method(s) {', '.join(sorted(unknown))}; choose from: {', '.join(METHODS)}")
    changes = {"dataset": dataset, "steps": steps, "eval_limit": limit, "methods": tuple(methods) if methods else None}
    return replace(PRESETS[name], **{k: v for k, v in changes.items() if v is not None})


if __name__ == "__main__":
    method_name, preset_json, out_dir = sys.argv[1:4]
    fields_ = json.loads(preset_json)
    fields_["methods"], fields_["notes"] = tuple(fields_["methods"]), tuple(fields_["notes"])
    record = run_method(method_name, Preset(**fields_), Path(out_dir))
    Path(out_dir, "result.json").write_text(json.dumps(record, indent=1))
