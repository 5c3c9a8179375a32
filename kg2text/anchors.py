"""The PEFT anchors kg2text is compared with, how they train, and the check that they really use their adapter.

``fit`` trains an anchor (a PEFT model, or the full model) the way kg2text trains: the same examples, batch
order, AdamW, clipping and schedule (steps, or ``--max-minutes`` decaying in wall-clock time), but through
the model's own forward with ``labels=``. ``train_peft_prefix`` is PEFT's prefix tuning trained that way for
a whole run, saved in kg2text's prefix format so that both are decoded and scored by the same code.

An upstream release can make PEFT decode without its prefix and say nothing (transformers 5.24.0 with
PEFT 0.21: generation ignores the prefix cache PEFT passes). A benchmark row scored that way compares
kg2text with the bare backbone, a wrong number, so every PEFT model is probed before it is scored.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, replace
from pathlib import Path

import datasets
import torch
from tqdm.auto import tqdm
from transformers import get_linear_schedule_with_warmup

from kg2text.artifact import atomic_write_text, save_prefix
from kg2text.backbones import Backbone, load_backbone
from kg2text.batching import collate, epoch_batches, width_multiple
from kg2text.errors import UserError
from kg2text.export import prefix_from_peft_embeddings
from kg2text.generate import hf_generate
from kg2text.model import compile_elementwise_blocks
from kg2text.prefix import PrefixConfig
from kg2text.rundir import prepare_run_dir
from kg2text.training import (
    SAVE_DTYPES,
    TrainConfig,
    backbone_in_training_dtype,
    load_training_set,
    log_entry,
    time_schedule,
)

PROBE = " | Harry Potter : education : Hogwarts"


def peft_model(method: str, backbone: Backbone, length: int, mlp_hidden: int, seed: int):
    """PEFT's prefix tuning (MLP reparametrization on, as Li & Liang) or prompt tuning (sampled vocabulary)."""
    import peft

    if method == "peft-prefix":
        config = peft.PrefixTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=length,
                                         prefix_projection=True, encoder_hidden_size=mlp_hidden)
    else:
        config = peft.PromptTuningConfig(task_type="CAUSAL_LM", num_virtual_tokens=length,
                                         prompt_tuning_init=peft.PromptTuningInit.SAMPLE_VOCAB)
    torch.manual_seed(seed)
    return peft.get_peft_model(backbone.model, config)


def generate_with(model):
    """A ``generate_batch`` for ``decode_batched`` that calls the model's own ``generate`` (PEFT or plain)."""

    def generate_batch(batch, ids, mask, config):
        out = hf_generate(model, config, input_ids=ids, attention_mask=mask)
        has_prompt = out.shape[1] > ids.shape[1] and torch.equal(out[:, : ids.shape[1]], ids)
        return out[:, ids.shape[1]:] if has_prompt else out

    return generate_batch


def _generate_and_forward(model, backbone: Backbone, steps: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Greedy next-token scores from ``generate`` and, for the same tokens, logits from one full ``forward``."""
    inputs = backbone.tokenizer(PROBE + " " + backbone.separator, return_tensors="pt", add_special_tokens=False)
    inputs = inputs.to(backbone.model.device)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=steps, do_sample=False, output_scores=True,
                             return_dict_in_generate=True, pad_token_id=backbone.tokenizer.pad_token_id)
        generated = torch.stack(out.scores)[:, 0].float()
        logits = model(input_ids=out.sequences, attention_mask=torch.ones_like(out.sequences)).logits[0]
    return generated, logits[-len(out.scores) - 1: -1].float()


def require_adapter_effect(model, backbone: Backbone) -> None:
    """Stop unless PEFT's ``generate`` uses the adapter at every step.

    Two probes: the scores ``generate`` gives must equal the logits of PEFT's own forward on the same tokens
    (the training path, which keeps the adapter), and must differ from those with the adapter disabled.
    transformers 5.24.0 broke the first: PEFT's prefix reached the first step only.
    """
    generated, forward = _generate_and_forward(model, backbone)
    with model.disable_adapter():
        without, _ = _generate_and_forward(model, backbone)
    steps = min(len(generated), len(without))
    lost = not torch.allclose(generated, forward, rtol=0, atol=1e-3)
    no_effect = torch.allclose(generated[:steps], without[:steps], rtol=0, atol=1e-3)
    if lost or no_effect:
        import peft
        import transformers

        reason = "its generate disagrees with its own forward" if lost else "its scores equal the bare backbone's"
        raise UserError(f"PEFT {peft.__version__} with transformers {transformers.__version__} decodes without its "
                        f"adapter ({reason}), so any PEFT figure would be the bare backbone's; install the tested "
                        "set: pip install -c constraints.txt -e '.[bench]'")


def fit(model, examples: datasets.Dataset, pad_id: int, config: TrainConfig, log_path: Path | None = None) -> dict:
    """Train ``model``'s trainable parameters as kg2text's loop would; returns tokens, seconds and the loss curve.

    Ends after ``config.max_steps``, else when ``config.max_minutes`` run out, else after ``config.epochs``."""
    params = [p for p in model.parameters() if p.requires_grad]
    lengths = [len(ids) for ids in examples["input_ids"]]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    progress = {"step": 0, "tokens": 0, "elapsed_s": 0.0}
    epoch_steps = math.ceil(len(lengths) / config.batch_size)
    total = config.max_steps or (math.inf if config.max_minutes else max(1, math.ceil(config.epochs * epoch_steps)))
    scheduler = time_schedule(optimizer, config.max_minutes, config.warmup_steps, progress) if config.max_minutes \
        else get_linear_schedule_with_warmup(optimizer, config.warmup_steps, total)
    curve, window, started, epoch = [], [], time.perf_counter(), 0
    bar = tqdm(total=None if total == math.inf else total, desc="training (anchor)", unit="step")
    while progress["step"] < total:
        for batch_ids in epoch_batches(lengths, config.batch_size, config.seed, epoch):
            batch = collate([examples[i] for i in batch_ids], pad_id, width_multiple(config.dtype))
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
            progress["step"] += 1
            progress["tokens"] += int(batch["attention_mask"].sum())
            progress["elapsed_s"] = time.perf_counter() - started
            window.append(loss.item())
            if config.max_minutes and progress["elapsed_s"] >= config.max_minutes * 60:
                total = progress["step"]
            bar.update(1)
            if progress["step"] % config.log_every == 0 or progress["step"] == total:
                entry = log_entry(progress, sum(window) / len(window), scheduler.get_last_lr()[0])
                curve.append(entry)
                window = []
                if log_path:
                    with log_path.open("a") as log:
                        log.write(json.dumps(entry) + "\n")
            if progress["step"] >= total:
                break
        epoch += 1
    bar.close()
    return {"train_tokens": progress["tokens"], "train_seconds": progress["elapsed_s"], "loss_curve": curve,
            "trainable_params": sum(p.numel() for p in params)}


def peft_prefix_tensor(model) -> torch.Tensor:
    """A PEFT prefix-tuning model's prefix in kg2text's layout ``(L, 2, kv_heads, P, head_dim)``: the output of
    its MLP, which PEFT recomputes at every forward, computed once."""
    config = model.active_peft_config
    with torch.no_grad():
        embeddings = model.get_prompt_embedding_to_save(model.active_adapter)
    return prefix_from_peft_embeddings(embeddings, config.num_layers, config.num_attention_heads)


def train_peft_prefix(config: TrainConfig, backbone: Backbone | None = None) -> Path:
    """PEFT's prefix tuning (MLP on) trained with kg2text's data and schedule; writes a run folder that
    ``kg2text evaluate --prefix`` reads (``prefix.safetensors``) plus PEFT's own ``adapter/``."""
    import peft

    config.validate()
    if config.method != "prefix" or config.dev_file or config.init_text or config.init_from or config.grad_accum > 1:
        raise UserError("the PEFT anchor trains plain prefix tuning: no --method, --dev-file, --init-text, "
                        "--init-from or --grad-accum")
    backbone = backbone or load_backbone(config.backbone)
    config = backbone_in_training_dtype(config, backbone, backbone.model.device)  # as kg2text trains
    config = replace(config, fp32_matmuls="torch")  # PEFT's model, torch's matmuls: recorded as such
    if config.compile:  # the same fused blocks as kg2text's --compile
        compile_elementwise_blocks(backbone.model)
    run_dir = prepare_run_dir(Path(config.output), resume=False)
    examples = load_training_set(config, backbone)
    model = peft_model("peft-prefix", backbone, config.prefix_length, config.mlp_hidden, config.seed)
    atomic_write_text(run_dir / "config.json", json.dumps(asdict(config), indent=2))
    (run_dir / "train_log.jsonl").write_text("")
    stats = fit(model, examples, backbone.tokenizer.pad_token_id, config, run_dir / "train_log.jsonl")
    model.eval()
    model.save_pretrained(run_dir / "adapter")
    prefix = peft_prefix_tensor(model).to(SAVE_DTYPES[config.save_dtype])
    header = {"method": "prefix", "format": config.format_name, "dataset": config.dataset,
              "method_config": PrefixConfig(config.prefix_length, config.mlp_hidden).to_dict(),
              "trainable_params": stats["trainable_params"], "train_config": asdict(config),
              "trained_by": f"peft {peft.__version__} (PrefixTuningConfig, prefix_projection=True)"}
    return save_prefix(run_dir, prefix, backbone, header)
