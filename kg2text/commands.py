"""What each CLI command does, given parsed arguments (kept apart from argparse for testing).

What imports transformers (kg2text's api, backbones, generation, training, export) is imported in the commands
that use it: a typo in an input or a test file is refused before those seconds of importing, not after them
and the backbone's load.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from kg2text.artifact import atomic_write_text, control_categories_of, read_header, shipped_prefix
from kg2text.data import Record, evenly_spaced, file_format, file_format_of, read_pair_file, read_records
from kg2text.errors import UserError
from kg2text.inputs import read_inputs
from kg2text.linearize import Format, get_format

if TYPE_CHECKING:
    from kg2text.generate import DecodeConfig, LoadedPrefix
    from kg2text.training import TrainConfig


def _decode_config(args: argparse.Namespace) -> DecodeConfig:
    from kg2text.generate import DecodeConfig

    if args.rerank and args.num_beams < 2:
        raise UserError("--rerank chooses among the beam's sentences: it needs --num-beams 2 or more")
    return DecodeConfig(num_beams=args.num_beams, length_penalty=args.length_penalty,
                        no_repeat_ngram_size=args.no_repeat_ngram, max_new_tokens=args.max_new_tokens,
                        batch_size=args.batch_size, engine=args.decoder, rerank=args.rerank)


def _prefix_runs(specs: list[str]) -> dict[str, Path]:
    """Task name -> run: ``--prefix RUN`` once, or ``--prefix task=RUN`` several times (one base model, many
    tasks)."""
    if len(specs) == 1 and "=" not in specs[0]:
        return {Path(specs[0]).name: Path(specs[0])}
    runs = {}
    for spec in specs:
        task, separator, path = spec.partition("=")
        if not separator or not task or not path:
            raise UserError(f"--prefix {spec!r}: with several prefixes write --prefix TASK=RUN_FOLDER")
        if task in runs:
            raise UserError(f"--prefix: task {task!r} is given twice")
        runs[task] = Path(path)
    return runs


def _input_formats(args: argparse.Namespace) -> dict[str, Format]:
    """Each task's input format, from its prefix file's header alone (the backbone not loaded yet)."""
    return {task: get_format(read_header(run)["format"]) for task, run in _prefix_runs(args.prefix).items()}


def _check_category(args: argparse.Namespace) -> None:
    """``generate --category``: refused for a prefix without control prefixes, noted for a category the run did not
    train (its general control prefix serves it), from the header alone."""
    if not args.category:
        return
    header = read_header(next(iter(_prefix_runs(args.prefix).values())))
    if len(args.prefix) > 1 or header["method"] != "control":
        given = "several --prefix runs" if len(args.prefix) > 1 else f"{args.prefix[0]}, a {header['method']} run"
        raise UserError(f"--category chooses a control prefix of one --method control run, not of {given}")
    if args.category not in control_categories_of(header):
        print(f"kg2text: {args.prefix[0]} was not trained on category {args.category!r}, so its general control prefix "
              f"serves it (trained: {', '.join(control_categories_of(header)[1:])})", file=sys.stderr)


def _load(args: argparse.Namespace) -> LoadedPrefix:
    from kg2text.backbones import load_backbone
    from kg2text.generate import load_for_generation

    return load_for_generation(_prefix_runs(args.prefix), load_backbone(args.backbone) if args.backbone else None,
                               args.dtype, ensemble=[Path(run) for run in args.ensemble])


def train_config(args: argparse.Namespace) -> TrainConfig:
    """The run's settings: from the flags, or from the run folder itself when resuming."""
    from dataclasses import fields

    from kg2text.training import TrainConfig

    if args.resume:
        return TrainConfig.from_run(args.output)
    names = {f.name for f in fields(TrainConfig)} - {"output"}
    return TrainConfig(output=str(args.output), **{name: getattr(args, name) for name in names})


def _interrupt(signum: int, frame) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def run_train(args: argparse.Namespace) -> int:
    # Ctrl-C and SIGTERM (clusters, nohup runs) both end in a resumable checkpoint, whatever the parent
    # shell left us: a background job or nohup starts with SIGINT ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)
    started = time.perf_counter()
    if args.from_previous and not args.resume:
        raise UserError("--from-previous goes with --resume")
    if args.trainer == "peft":
        path = _train_peft(args)
    else:
        from kg2text.training import train

        path = train(train_config(args), resume=args.resume, from_previous=args.from_previous)
    if path is not None:  # the main process reports
        print(f"saved prefix: {path} ({path.stat().st_size / 1024:.1f} KiB) in {time.perf_counter() - started:.0f} s")
    return 0


def _train_peft(args: argparse.Namespace) -> Path:
    if args.resume:
        raise UserError("--trainer peft runs have no checkpoints: start them again instead of --resume")
    if args.share_prompts:
        raise UserError("--share-prompts is kg2text's own batching (a 4-d attention mask PEFT's prefix does not take): "
                        "leave it out with --trainer peft")
    if args.average_last:
        raise UserError("--average-last is kg2text's own loop: leave it out with --trainer peft")
    try:
        import peft  # noqa: F401
    except ImportError:
        raise UserError("--trainer peft needs peft: pip install -c constraints.txt -e '.[bench]'") from None
    from kg2text.anchors import train_peft_prefix

    return train_peft_prefix(train_config(args))


def run_generate(args: argparse.Namespace) -> int:
    inputs, skipped = read_inputs(args.inputs, args.input, _input_formats(args), skip_bad=args.skip_bad)
    _check_category(args)
    from kg2text.generate import generate_sentences

    loaded = _load(args)
    if skipped:
        print(f"kg2text: skipped {len(skipped)} bad input(s), kept {len(inputs)}; first: {skipped[0]}", file=sys.stderr)
    sentences = generate_sentences(loaded, inputs, _decode_config(args), progress=len(inputs) > args.batch_size,
                                   categories=[args.category] * len(inputs))
    for user_input, sentence in zip(inputs, sentences, strict=True):
        record = {"input": user_input.text, "output": sentence}
        if len(loaded.headers) > 1:
            record["task"] = user_input.task
        print(json.dumps(record, ensure_ascii=False) if args.jsonl else sentence)
    return 0


def scores_markdown(title: str, scores: dict, command: str) -> str:
    """The evaluation report: both BLEUs by category group, then the other scores."""
    rows = "\n".join(f"| {group} | {s['bleu']:.2f} | {scores['bleu_challenge'][group]['bleu']:.2f} | {s['entries']} |"
                     for group, s in scores["bleu"].items())
    others = "\n".join(f"- {name}: {value:.2f}" for name, value in scores.items()
                       if name not in ("bleu", "bleu_challenge", "entries"))
    head = ("| categories | BLEU (sacrebleu, all references) | BLEU (WebNLG challenge: lower-cased multi-bleu, "
            "3 references) | entries |\n|---|---:|---:|---:|")
    return f"# {title}\n\n{head}\n{rows}\n\n{others}\n\nCommand: `{command}`\n"


def _test_records(args: argparse.Namespace, decoding: bool) -> tuple[list[Record], str]:
    """The entries to score and their name: a test file's or a dataset split's (``--limit`` of them); a test file
    to be decoded must be in the prefix's input format."""
    if args.test_file:
        records, skipped = read_pair_file(args.test_file, args.skip_bad)
        if skipped:
            print(f"kg2text: skipped {len(skipped)} bad row(s); first: {skipped[0]}", file=sys.stderr)
        wanted = next(iter(_input_formats(args).values())).name if decoding else None
        if wanted and file_format(records) != file_format_of(wanted):
            raise UserError(f"--test-file {args.test_file}: its inputs are not in the prefix's format ({wanted})")
        name = Path(args.test_file).stem
    else:
        records = read_records(args.dataset, args.split, Path(args.data_dir) if args.data_dir else None)
        name = f"{args.dataset}-{args.split}"
    records = evenly_spaced(records, args.limit)
    return records, name + (f"-{len(records)}" if args.limit else "")


def run_evaluate(args: argparse.Namespace) -> int:
    if len(args.prefix) != 1:
        raise UserError("evaluate takes one --prefix run")
    records, name = _test_records(args, decoding=not args.hypotheses)
    from kg2text.api import evaluate
    from kg2text.generate import generate_sentences
    from kg2text.hardware import cpu_info

    loaded = None if args.hypotheses else _load(args)
    started = time.perf_counter()
    if loaded:
        hypotheses = generate_sentences(loaded, [r.items for r in records], _decode_config(args), progress=True,
                                        categories=[r.category for r in records])
    else:
        hypotheses = _read_hypotheses(args.hypotheses, len(records))
    elapsed = time.perf_counter() - started
    scores = evaluate(hypotheses, records)
    run = Path(args.prefix[0])
    out = args.output or (args.hypotheses.parent if args.hypotheses else
                          Path("eval") / f"{run}-{name}" if shipped_prefix(run) else run / "eval" / name)
    command = "kg2text " + shlex.join(sys.argv[1:])
    if loaded:
        atomic_write_text(out / "hypotheses.txt", "\n".join(hypotheses) + "\n")
    report = {"dataset": args.test_file or args.dataset, "split": None if args.test_file else args.split,
              "entries": len(records), "scores": scores["bleu"], "scores_challenge": scores["bleu_challenge"],
              **{k: v for k, v in scores.items() if k not in ("bleu", "bleu_challenge", "entries")},
              "metric": "scores: sacrebleu corpus BLEU, all references; scores_challenge: the WebNLG 2017 "
                        "challenge's BLEU (its preprocessing, lower-cased multi-bleu.perl, first 3 references)",
              "machine": cpu_info(), "command": command}
    if loaded:
        report |= {"decode": {**vars(_decode_config(args)), "dtype": args.dtype},
                   "backbone": loaded.header["backbone"], "prefix": args.prefix[0], "decode_seconds": round(elapsed, 1)}
        if args.ensemble:
            report["ensemble"] = args.ensemble
    else:
        report |= {"hypotheses": str(args.hypotheses)} | _kept_decode_facts(out / "scores.json")
    atomic_write_text(out / "scores.json", json.dumps(report, indent=2) + "\n")
    title = f"{name}: {report.get('backbone', args.hypotheses)}"
    atomic_write_text(out / "scores.md", scores_markdown(title, scores, command))
    for group, score in scores["bleu"].items():
        print(f"BLEU {group:>6}: {score['bleu']:6.2f}  challenge BLEU {scores['bleu_challenge'][group]['bleu']:6.2f}  "
              f"({score['entries']} entries)")
    print(f"wrote {out}/scores.json, scores.md" + ("" if args.hypotheses else ", hypotheses.txt"))
    return 0


def _read_hypotheses(path: Path, entries: int) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"--hypotheses {path}: cannot read it ({err})") from None
    if len(lines) != entries:
        raise UserError(f"--hypotheses {path}: {len(lines)} lines for {entries} entries (one sentence per entry, in "
                        "order; did --limit or --split differ from the decoding run?)")
    return lines


def _kept_decode_facts(path: Path) -> dict:
    """Re-scoring a finished evaluation keeps what its scores.json said about the decoding (settings, time)."""
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(earlier, dict):
        return {}
    keys = ("decode", "backbone", "prefix", "decode_seconds", "machine")
    kept = {key: earlier[key] for key in keys if key in earlier}
    if "command" in earlier:
        kept["decode_command"] = earlier.get("decode_command", earlier["command"])
    return kept


def run_serve(args: argparse.Namespace) -> int:
    try:
        from kg2text.serve import TOKEN_ENV, ServeLimits, check_bind, serve
    except ImportError:
        raise UserError("kg2text serve needs FastAPI and uvicorn: "
                        "pip install -c constraints.txt -e '.[serve]'") from None
    token = args.token or os.environ.get(TOKEN_ENV) or None
    check_bind(args.host, token)  # before the backbone loads: a refused bind should not take a minute
    limits = ServeLimits(args.max_inputs, args.max_input_chars, args.timeout, args.batch_window_ms / 1000,
                         args.max_batch)
    from kg2text.api import Verbalizer

    serve(Verbalizer(_load(args), _decode_config(args)), args.host, args.port, limits, token)
    return 0


def run_export(args: argparse.Namespace) -> int:
    from kg2text.export import export_peft

    out = export_peft(args.run, args.out, args.base_model)
    print(f"wrote a PEFT prefix-tuning adapter to {out}")
    return 0


def run_benchmark(args: argparse.Namespace) -> int:
    from kg2text.benchmark import preset_for
    from kg2text.benchmark import run_benchmark as benchmark

    if args.speed:
        from kg2text.speed import run_speed

        out = args.results / (args.name or "speed")
        run_speed(args.speed, out, "kg2text " + shlex.join(sys.argv[1:]), repeats=args.repeats, inputs=args.inputs,
                  batch1_inputs=max(1, args.inputs // 4))
        print(f"wrote {out}/speed.json and speed.md")
        return 0

    preset = preset_for(args.preset, args.dataset, args.steps, args.limit, args.methods)
    name = args.name or f"{args.preset}-{preset.dataset}"
    benchmark(name, preset, args.results / name, "kg2text " + shlex.join(sys.argv[1:]))
    print(f"wrote {args.results / name}/report.md, report.json and plots")
    return 0
