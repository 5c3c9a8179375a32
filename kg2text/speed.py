"""``kg2text benchmark --speed RUN``: decoding and training throughput, side by side in one process.

Three decoders run the same trained prefix on the same WebNLG test prompts: ``kg2text`` (our loop,
kg2text/decoding.py), ``baseline`` (transformers' ``generate`` through the prefix attention hook, with
torch's own fp32 matmuls: what kg2text decoded with before its own loop) and ``peft`` (the same prefix
exported to PEFT and decoded by PEFT, after checking that PEFT really applies it). Settings and engines
alternate, ``repeats`` times, and the median is reported, so a machine that slows down mid-run slows
everyone. The GEMM ceiling is measured here at the backbone's own shapes, and throughput is also given as a
fraction of it: training's FLOPs, and decoding's, against it; one-row decoding's weight bytes streamed per second
against this machine's memory read rate (``hardware.memory_read_gbps``), the limit of a forward of one row.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from kg2text.anchors import generate_with, require_adapter_effect
from kg2text.artifact import atomic_write_text, read_prefix
from kg2text.backbones import Backbone, load_backbone
from kg2text.data import read_records
from kg2text.export import export_peft
from kg2text.generate import DecodeConfig, LoadedPrefix, decode_batched, decode_prompts, load_for_generation
from kg2text.hardware import (
    INT4_GROUP,
    Float16Linear,
    OneDnnLinear,
    ScreenedHead,
    cpu_info,
    gemm_gflops,
    linear_shapes,
    memory_read_gbps,
    native_bf16,
)
from kg2text.linearize import get_format, model_prompt
from kg2text.metrics import corpus_bleu

SETTINGS = {"b1-greedy": (1, 1), "b32-greedy": (32, 1), "b1-beam5": (1, 5), "b32-beam5": (32, 5)}
WEBNLG_TEST_ENTRIES = 1862

Decoder = Callable[[list[str], DecodeConfig], list[str]]


def gemm_ceiling(backbone: Backbone, dtype: torch.dtype, rows: tuple[int, ...] = (1, 32, 640),
                 trials: int = 3, kernel: str = "mm") -> dict[int, float]:
    """GFLOP/s of ``torch.mm`` (or of ``kernel``) at the backbone's linear shapes, per row count
    (``hardware.gemm_gflops``)."""
    return {m: gemm_gflops(linear_shapes(backbone.model.config), dtype, m, trials, kernel) for m in rows}


def _ceilings(backbone: Backbone, bf16: bool, earlier: dict | None = None) -> dict[str, dict[int, float]]:
    """The GEMM ceiling per dtype (and of fp32 through oneDNN, ``OneDnnLinear``); with ``earlier`` (measured at the
    start of the run), the higher of the two."""
    dtypes = {"float32": torch.float32, **({"bfloat16": torch.bfloat16} if bf16 else {})}
    now = {name: gemm_ceiling(backbone, dtype) for name, dtype in dtypes.items()}
    if torch.backends.mkldnn.is_available():
        now["float32_onednn"] = gemm_ceiling(backbone, torch.float32, kernel="onednn")
    if earlier:
        now = {name: {m: max(v, earlier[name][m]) for m, v in by.items()} for name, by in now.items()}
    return now


def _prompts(backbone: Backbone, header: dict, count: int):
    records = read_records("webnlg", "test")
    chosen = [records[i * len(records) // count] for i in range(count)]
    fmt = get_format(header["format"])
    return [model_prompt(fmt.linearize(r.items), backbone.separator) for r in chosen], chosen


def _peft_decoder(run: Path, backbone_name: str, length: int) -> tuple[Decoder, torch.nn.Module]:
    import peft

    backbone = load_backbone(backbone_name)
    with tempfile.TemporaryDirectory() as tmp:
        model = peft.PeftModel.from_pretrained(backbone.model, str(export_peft(run, Path(tmp) / "peft")))
    model.eval()
    require_adapter_effect(model, backbone)
    generate_batch = generate_with(model)
    return (lambda prompts, config: decode_batched(backbone, prompts, config, generate_batch, length)), backbone.model


@dataclass
class Work:
    """What one decode computed: ``tokens`` fed through the transformer layers (rows x positions, padding included),
    ``head_rows`` scored by the LM head, ``forwards`` of the model (each reads every weight once), ``screened`` of
    them through the head's fp16 screen (``hardware.ScreenedHead``: half the head's bytes)."""

    tokens: int = 0
    head_rows: int = 0
    forwards: int = 0
    screened: int = 0


def final_norm(model: torch.nn.Module) -> torch.nn.Module:
    """The norm after a causal LM's last transformer layer (Llama's ``norm``, GPT-2's ``ln_f``; inside a PEFT
    model, its base model's): every token a forward feeds passes it once, whichever code runs the layers
    (transformers' forward, ``llama_forward``, PEFT)."""
    transformer = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = transformer.base_model
    return body.norm if hasattr(body, "norm") else body.ln_f


@contextlib.contextmanager
def counting_work(model: torch.nn.Module) -> Iterator[Work]:
    """Count a transformers causal LM's ``Work`` while the block runs, whoever drives it (kg2text's loop,
    ``generate``, PEFT): hooks on its final norm (``final_norm``) and its LM head (and the head's fp16 screen),
    removed afterwards."""
    work = Work()

    def on_norm(_module, args: tuple) -> None:
        work.tokens += args[0].numel() // args[0].shape[-1]
        work.forwards += 1

    def on_head(_module, args: tuple) -> None:
        work.head_rows += args[0].numel() // args[0].shape[-1]

    def on_screen(module, args: tuple) -> None:
        on_head(module, args)
        work.screened += 1

    head = model.get_output_embeddings()
    handles = [final_norm(model).register_forward_pre_hook(on_norm), head.register_forward_pre_hook(on_head)]
    if isinstance(head, ScreenedHead):
        handles.append(head.screen.register_forward_pre_hook(on_screen))
    try:
        yield work
    finally:
        for handle in handles:
            handle.remove()


def _timed(decode: Decoder, prompts: list[str], config: DecodeConfig) -> tuple[float, float, list[str]]:
    started = time.perf_counter()
    outputs = decode(prompts, config)
    elapsed = time.perf_counter() - started
    return len(prompts) / elapsed, sum(len(o.split()) for o in outputs) / elapsed, outputs


def decoding(decoders: dict[str, Decoder], models: dict[str, torch.nn.Module], prompts: list[str], repeats: int,
             max_new_tokens: int, batch1_inputs: int) -> tuple[dict, dict, dict]:
    """Sentences/s (median of ``repeats``) for each setting and decoder (``models``: the model each decodes with);
    plus the outputs and the ``Work`` (with its time) of the last repeat."""
    samples: dict[str, dict[str, list[float]]] = {s: {d: [] for d in decoders} for s in SETTINGS}
    outputs: dict[tuple[str, str], list[str]] = {}
    work: dict[str, dict[str, dict]] = {s: {} for s in SETTINGS}
    for decode in decoders.values():  # warm-up: first calls allocate and pick kernels
        decode(prompts[:2], DecodeConfig(num_beams=2, max_new_tokens=4, batch_size=2))
    for repeat in range(repeats):
        for setting, (batch, beams) in SETTINGS.items():
            chosen = prompts[:batch1_inputs] if batch == 1 else prompts
            config = DecodeConfig(num_beams=beams, max_new_tokens=max_new_tokens, batch_size=batch)
            for name, decode in decoders.items():
                with counting_work(models[name]) as done:
                    sentences_per_s, words_per_s, out = _timed(decode, chosen, config)
                samples[setting][name].append(sentences_per_s)
                outputs[setting, name] = out
                work[setting][name] = {**asdict(done), "seconds": len(chosen) / sentences_per_s}
                print(f"speed: repeat {repeat + 1}/{repeats} {setting:>10} {name:>13}: {sentences_per_s:6.2f} sent/s "
                      f"({words_per_s:6.1f} words/s)", flush=True)
    return {s: {d: statistics.median(v) for d, v in by.items()} for s, by in samples.items()}, outputs, work


def peft_train_tokens_per_s(backbone_name: str, steps: int, batch_size: int) -> float:
    """PEFT prefix tuning (MLP on), a plain loop over the same batches as kg2text's; the first step not counted."""
    from kg2text.anchors import peft_model
    from kg2text.batching import collate, epoch_batches
    from kg2text.training import TrainConfig, load_training_set

    backbone = load_backbone(backbone_name)
    config = TrainConfig(output="", backbone=backbone_name)
    examples = load_training_set(config, backbone)
    model = peft_model("peft-prefix", backbone, config.prefix_length, config.mlp_hidden, config.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=5e-4)
    batches = epoch_batches([len(ids) for ids in examples["input_ids"]], batch_size, config.seed, 0)
    tokens, started = 0, 0.0
    for index, batch_ids in enumerate(batches[: steps + 1]):
        if index == 1:
            started = time.perf_counter()
        batch = collate([examples[i] for i in batch_ids], backbone.tokenizer.pad_token_id)
        model(**batch).loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        optimizer.zero_grad()
        tokens += int(batch["attention_mask"].sum()) if index else 0
    return tokens / (time.perf_counter() - started)


def _kg2text_training(backbone_name: str, steps: int, batch_size: int, dtype: str,
                      compile: bool = False, fp32_matmuls: str = "auto") -> tuple[float, float]:
    """kg2text's own training loop on the full training set for ``steps`` (+1 warm-up) steps: tokens/s, mean loss."""
    from kg2text.training import TrainConfig, train

    with tempfile.TemporaryDirectory() as tmp:
        train(TrainConfig(output=f"{tmp}/run", backbone=backbone_name, max_steps=steps + 1, batch_size=batch_size,
                          lr=5e-4, checkpoint_every=0, log_every=1, dtype=dtype, compile=compile,
                          fp32_matmuls=fp32_matmuls), backbone=load_backbone(backbone_name))
        log = [json.loads(line) for line in Path(f"{tmp}/run/train_log.jsonl").read_text().splitlines()]
    first, last = log[0], log[-1]  # the first step warms up: not counted
    return (last["tokens"] - first["tokens"]) / (last["elapsed_s"] - first["elapsed_s"]), \
        statistics.mean(entry["loss"] for entry in log)


# kg2text's training variants in the speed benchmark: name -> (backbone dtype, --compile, --fp32-matmuls, its GFLOP/s
# key); the baseline is the loop before its fp32 matmuls went through oneDNN
TRAINING_VARIANTS = {"kg2text": ("float32", False, "auto", "gflops"),
                     "baseline": ("float32", False, "torch", "baseline_gflops"),
                     "kg2text_compiled": ("float32", True, "auto", "compiled_gflops"),
                     "kg2text_bf16": ("bfloat16", False, "auto", "bf16_gflops"),
                     "kg2text_bf16_compiled": ("bfloat16", True, "auto", "bf16_compiled_gflops")}


def training(backbone_name: str, repeats: int, steps: int, batch_size: int, bf16: bool) -> dict:
    """Training tokens/s (median of ``repeats``): kg2text's loop in fp32 (and with a bf16 backbone), each also with
    ``--compile``, the baseline (fp32, torch's matmuls), PEFT's loop; plus the mean loss of the same batches per
    variant, to show they train the same."""
    samples: dict[str, list[float]] = {name: [] for name in (*TRAINING_VARIANTS, "peft")}
    losses: dict[str, float] = {}
    for repeat in range(repeats):
        for name, (dtype, compiled, matmuls, _) in TRAINING_VARIANTS.items():
            if dtype == "bfloat16" and not bf16:
                continue  # no samples: its median is None
            rate, losses[name] = _kg2text_training(backbone_name, steps, batch_size, dtype, compiled, matmuls)
            samples[name].append(rate)
        samples["peft"].append(peft_train_tokens_per_s(backbone_name, steps, batch_size))
        print(f"speed: repeat {repeat + 1}/{repeats} training tokens/s: "
              + ", ".join(f"{k} {v[-1]:.1f}" for k, v in samples.items() if v), flush=True)
    result = {k: (statistics.median(v) if v else None) for k, v in samples.items()}
    return {**result, "mean_loss": losses, "steps": steps, "batch_size": batch_size}


def training_flops_per_token(backbone: Backbone) -> float:
    """FLOPs per training token with frozen weights: 2 (forward) + 2 (input gradients) per weight of the
    transformer layers, plus the LM head on target tokens only (their share of the training set's tokens)."""
    from kg2text.training import TrainConfig, load_training_set

    head = backbone.model.get_output_embeddings().weight.numel()
    examples = load_training_set(TrainConfig(output="", backbone=backbone.name), backbone)
    targets = sum(sum(label != -100 for label in row) for row in examples["labels"])
    share = targets / sum(len(row) for row in examples["input_ids"])
    return 4 * layer_weights(backbone.model) + 4 * head * share


def layer_weights(model: torch.nn.Module) -> int:
    """The weights of a causal LM's transformer layers: all but its input embedding and an untied LM head."""
    embedding, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    untied_head = 0 if head is embedding else head.numel()
    return sum(p.numel() for p in model.parameters()) - embedding.numel() - untied_head


# kg2text's other decoding formats in the speed benchmark: --dtype -> the name after "kg2text_"
DECODE_VARIANT_NAMES = {"bfloat16": "bf16", "float16": "fp16", "int8": "int8", "int4": "int4"}


# bytes per weight that a forward of each decoder reads: (transformer layers, LM head); int4: a bf16 scale and offset
# per group of INT4_GROUP weights, its head int8 (int8's scale per output channel: a few bytes per thousand weights)
WEIGHT_BYTES = {"kg2text": (4, 4), "baseline": (4, 4), "peft": (4, 4), "kg2text_bf16": (2, 2), "kg2text_fp16": (2, 2),
                "kg2text_int8": (1, 1), "kg2text_int4": (0.5 + 4 / INT4_GROUP, 1)}


def decoding_rates(work: dict, backbone: Backbone) -> dict:
    """Each decode's ``Work`` with its rates added: ``gflops`` (2 FLOPs per weight of the transformer layers per token
    fed, and of the LM head per row it scores; attention not counted) and ``weights_gbps`` (the weight bytes its
    forwards read, ``WEIGHT_BYTES``), against which the GEMM ceiling and the memory read rate say how close it runs
    to this machine's limits."""
    head, layers = backbone.model.get_output_embeddings().weight.numel(), layer_weights(backbone.model)
    rates = {}
    for setting, by in work.items():
        rates[setting] = {}
        for name, done in by.items():
            layer_bytes, head_bytes = WEIGHT_BYTES[name]
            flops = 2 * layers * done["tokens"] + 2 * head * done["head_rows"]
            streamed = done["forwards"] * layers * layer_bytes + head * (
                (done["forwards"] - done["screened"]) * head_bytes + done["screened"] * 2)  # fp16's 2 bytes
            rates[setting][name] = {**done, "gflops": flops / done["seconds"] / 1e9,
                                    "weights_gbps": streamed / done["seconds"] / 1e9}
    return rates


def fp32_linear(backbone: Backbone) -> str:
    """Whose matmuls a backbone prepared for fp32 decoding runs: oneDNN's (``OneDnnLinear``) or torch's."""
    return "onednn" if any(isinstance(m, OneDnnLinear) for m in backbone.model.modules()) else "torch"


def _decoder_for(run: Path, dtype: str) -> tuple[Decoder, LoadedPrefix]:
    loaded = load_for_generation(run, dtype=dtype)
    return (lambda prompts, config: decode_prompts(loaded.lm, prompts, config)), loaded


def run_speed(run: Path, out: Path, command: str, repeats: int = 3, inputs: int = 64, batch1_inputs: int = 16,
              max_new_tokens: int = 60, train_steps: int = 6) -> dict:
    """The whole speed benchmark; writes ``out/speed.json`` and ``out/speed.md``."""
    _, header = read_prefix(run)
    kg2text, loaded = _decoder_for(run, "float32")
    backbone, kernels = loaded.backbone, fp32_linear(loaded.backbone)
    prompts, records = _prompts(backbone, header, inputs)
    bf16 = native_bf16()
    ceiling, bandwidth = _ceilings(backbone, bf16), memory_read_gbps()

    baseline = load_for_generation(run, onednn=False, stack=False)  # kg2text before its own loop: torch's matmuls
    print(f"speed: kg2text's fp32 matmuls: {kernels}'s", flush=True)
    peft, peft_model = _peft_decoder(run, header["backbone"], loaded.lm.virtual_tokens)
    decoders = {"kg2text": kg2text,
                "baseline": lambda prompts_, config: decode_prompts(baseline.lm, prompts_,
                                                                    replace(config, engine="hf")),
                "peft": peft}
    models = {"kg2text": backbone.model, "baseline": baseline.backbone.model, "peft": peft_model}
    runs_here = {"bfloat16": bf16, "float16": Float16Linear.available()}  # the others run on any CPU
    for dtype, name in DECODE_VARIANT_NAMES.items():
        if runs_here.get(dtype, True):
            decoders[f"kg2text_{name}"], variant = _decoder_for(run, dtype)
            models[f"kg2text_{name}"] = variant.backbone.model
    speed, outputs, work = decoding(decoders, models, prompts, repeats, max_new_tokens, batch1_inputs)
    references = [r.references for r in records]
    quality = {name: corpus_bleu(outputs["b32-beam5", name], references) for name in decoders}
    train = training(header["backbone"], repeats, train_steps, 8, bf16)
    flops = training_flops_per_token(baseline.backbone)  # its linear layers as loaded, weights counted
    ceiling = _ceilings(backbone, bf16, ceiling)  # measured at both ends of the run
    bandwidth = max(bandwidth, memory_read_gbps())
    for name, (_, _, _, key) in TRAINING_VARIANTS.items():
        train[key] = None if train[name] is None else train[name] * flops / 1e9
    train["ceiling_gflops"] = max(by[640] for name, by in ceiling.items() if name.startswith("float32"))
    train["bf16_ceiling_gflops"] = ceiling["bfloat16"][640] if bf16 else None
    data = {"cpu": cpu_info(), "command": command, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "backbone": header["backbone"], "prefix": str(run), "fp32_linear": kernels,
            "inputs": inputs, "batch1_inputs": batch1_inputs,
            "max_new_tokens": max_new_tokens, "repeats": repeats, "gemm_ceiling_gflops": ceiling,
            **speed, "train": train, "bleu_b32_beam5": quality, "memory_read_gbps": bandwidth,
            "decoding_work": decoding_rates(work, baseline.backbone),
            "full_test_beam5_minutes": WEBNLG_TEST_ENTRIES / speed["b32-beam5"]["kg2text"] / 60,
            "full_test_beam5_minutes_fastest": WEBNLG_TEST_ENTRIES / max(speed["b32-beam5"].values()) / 60}
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "speed.json", json.dumps(data, indent=2) + "\n")
    atomic_write_text(out / "speed.md", speed_markdown(data))
    return data


# the GEMM ceiling each batch-32 setting's matmuls compare with: its rows (beam search: 160, nearer 640 than 32)
LIMIT_ROWS = {"b32-greedy": 32, "b32-beam5": 640}


def limits_markdown(data: dict) -> str:
    """How close each decode ran to this machine's limit: batch 1 to the memory read rate (GB/s of weights
    streamed), batch 32 to the fp32 GEMM ceiling (GFLOP/s), with the share of each."""
    ceiling = {m: max(by[m] for name, by in data["gemm_ceiling_gflops"].items() if name.startswith("float32"))
               for m in LIMIT_ROWS.values()}
    names = list(data["decoding_work"]["b1-greedy"])
    rows = []
    for setting, by in data["decoding_work"].items():
        if setting in LIMIT_ROWS:
            limit = ceiling[LIMIT_ROWS[setting]]
            cells = [f"{by[n]['gflops']:.0f} GFLOP/s ({100 * by[n]['gflops'] / limit:.0f}%)" for n in names]
        else:
            cells = [f"{by[n]['weights_gbps']:.1f} GB/s ({100 * by[n]['weights_gbps'] / data['memory_read_gbps']:.0f}%)"
                     for n in names]
        rows.append(f"| {setting} | {' | '.join(cells)} |")
    forwards = ", ".join(f"{n} {by_name['forwards'] / data['batch1_inputs']:.1f}"
                         for n, by_name in data["decoding_work"]["b1-greedy"].items())
    return f"""How close decoding runs to this machine's limits (the last repeat's work). One row streams every weight
from memory once per forward, so batch 1 is given in GB/s of weights read (fp32 4 bytes a weight, its LM head 2 where
greedy's token comes through the head's fp16 screen, bf16/fp16 2, int8 1, int4 0.625 with its head int8) against
this machine's memory read rate, **{data['memory_read_gbps']:.1f} GB/s**
(`torch.sum` over 512 MB, 2 threads); batch 32 in GFLOP/s (2 per weight of the transformer layers per token fed,
padding included, and of the LM head per row scored; attention not counted) against the fp32 GEMM ceiling at 32
rows for greedy ({ceiling[32]:.0f}) and at 640 for beam search's 160 rows ({ceiling[640]:.0f}):

| setting | {' | '.join(names)} |
|---|{'---:|' * len(names)}
{chr(10).join(rows)}

Forwards per sentence at b1-greedy (kg2text's loop drafts by prompt lookup): {forwards}.
"""


def speed_markdown(data: dict) -> str:
    cpu = data["cpu"]
    names = list(data["b1-greedy"])
    rows = []
    for setting in SETTINGS:
        by = data[setting]
        cells = " | ".join(f"{by[n]:.2f}" for n in names)
        ratios = f"{by['kg2text'] / by['baseline']:.2f}× | {by['kg2text'] / by['peft']:.2f}×"
        fastest = max((n for n in names if n.startswith("kg2text")), key=by.get)
        rows.append(f"| {setting} | {cells} | {ratios} | {fastest}: {by[fastest] / by['baseline']:.2f}× / "
                    f"{by[fastest] / by['peft']:.2f}× |")
    bleu = " | ".join(f"{data['bleu_b32_beam5'][n]:.2f}" for n in names)
    train = data["train"]
    bf16 = "n/a (this CPU has no BF16)" if train["kg2text_bf16"] is None else (
        f"{train['kg2text_bf16']:.1f} ({train['kg2text_bf16'] / train['kg2text']:.2f}× fp32, "
        f"{train['bf16_gflops']:.0f} GFLOP/s), with `--compile` {train['kg2text_bf16_compiled']:.1f} "
        f"({train['kg2text_bf16_compiled'] / train['kg2text']:.2f}× fp32, {train['bf16_compiled_gflops']:.0f} GFLOP/s "
        f"= {100 * train['bf16_compiled_gflops'] / train['bf16_ceiling_gflops']:.0f}% of the bf16 GEMM ceiling at "
        f"M=640, {train['bf16_ceiling_gflops']:.0f} GFLOP/s)")
    losses = ", ".join(f"{k} {v:.4f}" for k, v in train["mean_loss"].items())
    ceilings = "\n".join(f"| {dtype} | " + " | ".join(f"{v:.0f}" for v in by.values()) + " |"
                          for dtype, by in data["gemm_ceiling_gflops"].items())
    sizes = " | ".join(f"M={m}" for m in data["gemm_ceiling_gflops"]["float32"])
    return f"""# Decoding and training speed: kg2text vs baseline vs PEFT

CPU: {cpu['model']} ({cpu['cores']} cores, torch threads {cpu['torch_threads']}; flags: {', '.join(cpu['flags'])}).
Backbone {data['backbone']}, prefix `{data['prefix']}`; {data['inputs']} WebNLG test prompts spread over the
split ({data['batch1_inputs']} of them at batch 1), at most {data['max_new_tokens']} new tokens; median of
{data['repeats']} alternated repeats. Date: {data['date']}.

Sentences per second. `kg2text`: our decoding loop, fp32 (the reference; its matmuls {data['fp32_linear']}'s,
measured the faster here; greedy's token below 16 rows through the LM head's fp16 screen, fp32's token);
`baseline`: transformers' `generate` with kg2text's prefix hook and torch's matmuls, i.e. kg2text before its own
loop (`--decoder hf`); `peft`: the same prefix exported to PEFT and decoded by PEFT, checked to be applied;
`kg2text_bf16` / `kg2text_fp16` / `kg2text_int8` / `kg2text_int4`: our loop with the backbone in bf16 / fp16
weights / int8 / int4 (`--dtype`), which change the numbers (BLEU below).

| setting | {' | '.join(names)} | kg2text / baseline | kg2text / PEFT | fastest kg2text / baseline / PEFT |
|---|{'---:|' * len(names)}---:|---:|---|
{chr(10).join(rows)}

BLEU (sacrebleu) of the batch-32 beam-5 outputs on these {data['inputs']} entries:

| | {' | '.join(names)} |
|---|{'---:|' * len(names)}
| BLEU | {bleu} |

{limits_markdown(data)}
Full WebNLG test (1,862 entries), beam 5, batch 32, estimated from the rates above: fp32
**{data['full_test_beam5_minutes']:.1f} minutes**, fastest variant {data['full_test_beam5_minutes_fastest']:.1f}
minutes.

Training tokens/s ({train['steps']} steps of batch {train['batch_size']} on the full WebNLG training set, after one
warm-up step): kg2text fp32 {train['kg2text']:.1f}, baseline {train['baseline']:.1f} (the loop with torch's matmuls;
{train['kg2text'] / train['baseline']:.2f}×), PEFT {train['peft']:.1f} ({train['kg2text'] / train['peft']:.2f}×),
kg2text with a bf16 backbone {bf16}. Mean loss over the same batches: {losses}. kg2text fp32 training does
{train['gflops']:.0f} GFLOP/s of useful work (frozen weights: 4 FLOPs per layer weight and token, the LM head
on target tokens only) = **{100 * train['gflops'] / train['ceiling_gflops']:.0f}%** of this machine's fp32 GEMM
ceiling at M=640 ({train['ceiling_gflops']:.0f} GFLOP/s, torch's or oneDNN's, the higher); with `--compile` (the
backbone's MLPs and norms fused by inductor) {train['kg2text_compiled']:.1f} tokens/s,
{train['compiled_gflops']:.0f} GFLOP/s = **{100 * train['compiled_gflops'] / train['ceiling_gflops']:.0f}%**. The fp32
loop runs its frozen matmuls through oneDNN where that is measured the faster at 640 rows (`--fp32-matmuls auto`;
`--compile` keeps torch's); the baseline, torch's matmuls, does {train['baseline_gflops']:.0f} GFLOP/s
= {100 * train['baseline_gflops'] / train['ceiling_gflops']:.0f}%.

GEMM ceiling (GFLOP/s, `torch.mm` at the backbone's linear shapes, and fp32 through oneDNN with reordered weights
as kg2text's `OneDnnLinear`, 2 threads, measured in this run, at its start
and its end, best of 3 each; M=1 with weights that stay in cache, so one-row decoding, which streams all weights
from memory, cannot reach it):

| dtype | {sizes} |
|---|{'---:|' * len(data['gemm_ceiling_gflops']['float32'])}
{ceilings}

Command: `{data['command']}`
"""
