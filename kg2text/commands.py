"""What each CLI command does, given parsed arguments (kept apart from argparse for testing)."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from kg2text.artifact import atomic_write_text
from kg2text.backbones import load_backbone
from kg2text.data import Record, read_records
from kg2text.generate import DecodeConfig, LoadedPrefix, generate_sentences, load_for_generation
from kg2text.inputs import read_inputs
from kg2text.metrics import scores_by_group
from kg2text.train import TrainConfig, train


def _decode_config(args: argparse.Namespace) -> DecodeConfig:
    return DecodeConfig(args.num_beams, args.length_penalty, args.no_repeat_ngram, args.max_new_tokens,
                        args.batch_size)


def _load(args: argparse.Namespace) -> LoadedPrefix:
    return load_for_generation(args.prefix, load_backbone(args.backbone) if args.backbone else None)


def run_train(args: argparse.Namespace) -> int:
    config = TrainConfig(
        output=str(args.output), backbone=args.backbone, dataset=args.dataset, split=args.split,
        format=args.format, data_dir=args.data_dir, prefix_length=args.prefix_length, mlp_hidden=args.mlp_hidden,
        epochs=args.epochs, max_steps=args.max_steps, max_examples=args.max_examples, batch_size=args.batch_size,
        grad_accum=args.grad_accum, lr=args.lr, warmup_steps=args.warmup_steps, weight_decay=args.weight_decay,
        max_grad_norm=args.max_grad_norm, mixed_precision=args.mixed_precision, seed=args.seed,
        log_every=args.log_every,
    )
    started = time.perf_counter()
    path = train(config)
    print(f"saved prefix: {path} ({path.stat().st_size / 1024:.1f} KiB) in {time.perf_counter() - started:.0f} s")
    return 0


def run_generate(args: argparse.Namespace) -> int:
    loaded = _load(args)
    inputs = read_inputs(args.inputs, args.input, loaded.format)
    sentences = generate_sentences(loaded, [items for _, items in inputs], _decode_config(args),
                                   progress=len(inputs) > args.batch_size)
    for (text, _), sentence in zip(inputs, sentences, strict=True):
        print(json.dumps({"input": text, "output": sentence}, ensure_ascii=False) if args.jsonl else sentence)
    return 0


def evenly_spaced(records: list[Record], limit: int | None) -> list[Record]:
    """``limit`` records spread over the whole split (WebNLG test is ordered seen-first)."""
    if not limit or limit >= len(records):
        return records
    return [records[i * len(records) // limit] for i in range(limit)]


def scores_markdown(title: str, scores: dict[str, dict], command: str) -> str:
    rows = "\n".join(f"| {name} | {s['bleu']:.2f} | {s['entries']} |" for name, s in scores.items())
    return f"# {title}\n\n| categories | BLEU | entries |\n|---|---:|---:|\n{rows}\n\nCommand: `{command}`\n"


def run_evaluate(args: argparse.Namespace) -> int:
    loaded = _load(args)
    records = evenly_spaced(read_records(args.dataset, args.split, Path(args.data_dir) if args.data_dir else None),
                            args.limit)
    started = time.perf_counter()
    hypotheses = generate_sentences(loaded, [r.items for r in records], _decode_config(args), progress=True)
    elapsed = time.perf_counter() - started
    scores = scores_by_group(records, hypotheses)
    name = f"{args.dataset}-{args.split}" + (f"-{len(records)}" if args.limit else "")
    out = args.output or Path(args.prefix) / "eval" / name
    command = "kg2text " + shlex.join(sys.argv[1:])
    atomic_write_text(out / "hypotheses.txt", "\n".join(hypotheses) + "\n")
    report = {"dataset": args.dataset, "split": args.split, "entries": len(records), "scores": scores,
              "metric": "sacrebleu corpus BLEU, all references", "decode": vars(_decode_config(args)),
              "backbone": loaded.header["backbone"], "prefix": str(args.prefix), "decode_seconds": round(elapsed, 1),
              "command": command}
    atomic_write_text(out / "scores.json", json.dumps(report, indent=2) + "\n")
    atomic_write_text(out / "scores.md", scores_markdown(f"{args.dataset} {args.split}: {loaded.header['backbone']}",
                                                         scores, command))
    for group, score in scores.items():
        print(f"BLEU {group:>6}: {score['bleu']:6.2f}  ({score['entries']} entries)")
    print(f"wrote {out}/scores.json, scores.md, hypotheses.txt")
    return 0
