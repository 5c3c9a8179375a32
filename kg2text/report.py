"""Benchmark reports: ``report.json`` (all numbers), ``report.md`` (tables, targets, notes) and PNG plots."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path

from kg2text.artifact import atomic_write_text

SPEED_KEYS = ("batch1_beam1", "batch32_beam1", "batch1_beam5", "batch32_beam5")


def _fmt(value, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def summary_line(result: dict) -> str:
    q = result["quality"]
    faithful = (f"coverage {q['entity_coverage']:.1f}%" if "entity_coverage" in q
                else f"SER {q.get('slot_error_rate', 0):.1f}%")
    return (f"{result['method']:>15}: BLEU {q['bleu']['all']['bleu']:5.2f}  chrF++ {q['chrf++']:5.2f}  {faithful}  "
            f"train {_fmt(result.get('train_tokens_per_s'))} tok/s  peak {result['peak_rss_mb']:.0f} MB  "
            f"gen b32 {result['speed']['batch32_beam1']['sentences_per_s']:.2f} sent/s  "
            f"artifact {result['artifact_bytes'] / 1024:.1f} KiB")


def _quality_table(results: list[dict]) -> str:
    first = results[0]["quality"]
    faithful = "entity coverage %" if "entity_coverage" in first else "slot error rate % ↓"
    nist_head, nist_rule = (" NIST |", "---:|") if "nist" in first else ("", "")
    lines = [f"| method | BLEU all | seen | unseen | chrF++ | TER ↓ | ROUGE-L |{nist_head} {faithful} |",
             f"|---|---:|---:|---:|---:|---:|---:|{nist_rule}---:|"]
    for r in results:
        q, bleu = r["quality"], r["quality"]["bleu"]
        nist_cell = f" {q['nist']:.2f} |" if "nist" in q else ""
        lines.append(f"| {r['method']} | {bleu['all']['bleu']:.2f} | {_fmt(bleu.get('seen', {}).get('bleu'), 2)} | "
                     f"{_fmt(bleu.get('unseen', {}).get('bleu'), 2)} | {q['chrf++']:.2f} | {q['ter']:.2f} | "
                     f"{q['rouge_l']:.2f} |{nist_cell} {q.get('entity_coverage', q.get('slot_error_rate')):.1f} |")
    return "\n".join(lines)


def _cost_table(results: list[dict], peak: float) -> str:
    lines = ["| method | trainable params | artifact bytes | train tokens/s | train s | GFLOP/s (% of the 100% below) "
             "| peak RSS MB |", "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        gflops = r.get("train_gflops")
        share = f"{gflops:.1f} ({100 * gflops / peak:.0f}%)" if gflops else "–"
        lines.append(f"| {r['method']} | {r['trainable_params']:,} | {r['artifact_bytes']:,} | "
                     f"{_fmt(r.get('train_tokens_per_s'))} | {_fmt(r['train_seconds'])} | {share} | "
                     f"{r['peak_rss_mb']:.0f} |")
    return "\n".join(lines)


def _speed_table(results: list[dict]) -> str:
    head = " | ".join(f"{k.replace('_', ' ')} sent/s (words/s)" for k in SPEED_KEYS)
    lines = [f"| method | {head} |", "|---|" + "---:|" * len(SPEED_KEYS)]
    for r in results:
        cells = " | ".join(f"{r['speed'][k]['sentences_per_s']:.2f} ({r['speed'][k]['words_per_s']:.1f})"
                           for k in SPEED_KEYS)
        lines.append(f"| {r['method']} | {cells} |")
    return "\n".join(lines)


def targets(results: list[dict]) -> list[str]:
    """The CPU-preset targets against PEFT prefix tuning; a missed target is reported as missed."""
    by = {r["method"]: r for r in results}
    ours, theirs = by.get("kg2text-prefix"), by.get("peft-prefix")
    if not ours or not theirs:
        return ["(targets need both kg2text-prefix and peft-prefix in the run)"]
    rows = []

    def check(name: str, ratio: float, goal: str, met: bool) -> None:
        rows.append(f"| {name} | {ratio:.2f}× | {goal} | {'met' if met else '**not met**'} |")

    train_ratio = ours["train_tokens_per_s"] / theirs["train_tokens_per_s"]
    check("training throughput, kg2text / PEFT", train_ratio, "≥ 1.5×", train_ratio >= 1.5)
    for key in SPEED_KEYS:  # generated words/s: the two methods' sentences differ in length
        ratio = ours["speed"][key]["words_per_s"] / theirs["speed"][key]["words_per_s"]
        check(f"generation {key.replace('_', ' ')} (words/s), kg2text / PEFT", ratio, "≥ 2×", ratio >= 2)
    memory = ours["peak_rss_mb"] / theirs["peak_rss_mb"]
    check("peak memory, kg2text / PEFT", memory, "≤ 0.8×", memory <= 0.8)
    bleu = ours["quality"]["bleu"]["all"]["bleu"] - theirs["quality"]["bleu"]["all"]["bleu"]
    rows.append(f"| BLEU all, kg2text − PEFT | {bleu:+.2f} | ≥ 0 | {'met' if bleu >= 0 else '**not met**'} |")
    return ["| target | measured | goal | |", "|---|---:|---|---|", *rows]


def plots(data: dict, out: Path) -> list[str]:
    """Loss curves, BLEU vs artifact size, BLEU by number of triples, seen vs unseen (PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results, names = data["results"], []

    def save(fig, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        names.append(name)

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in results:
        if r["loss_curve"]:
            ax.plot([e["step"] for e in r["loss_curve"]], [e["loss"] for e in r["loss_curve"]], label=r["method"])
    ax.set(xlabel="optimizer step", ylabel="training loss (target tokens)", title="Loss curves")
    ax.legend()
    save(fig, "loss_curves.png")

    fig, ax = plt.subplots(figsize=(6, 4))
    for r in results:
        ax.scatter(max(r["artifact_bytes"], 1), r["quality"]["bleu"]["all"]["bleu"], label=r["method"])
    ax.set(xscale="log", xlabel="artifact bytes on disk (log)", ylabel="BLEU (all)", title="BLEU vs artifact size")
    ax.legend()
    save(fig, "bleu_vs_size.png")

    if "bleu_by_triples" in results[0]["quality"]:
        fig, ax = plt.subplots(figsize=(6, 4))
        for r in results:
            sizes = r["quality"]["bleu_by_triples"]
            ax.plot([int(n) for n in sizes], list(sizes.values()), marker="o", label=r["method"])
        ax.set(xlabel="triples in the input", ylabel="BLEU", title="BLEU by number of triples")
        ax.legend()
        save(fig, "bleu_by_triples.png")

        fig, ax = plt.subplots(figsize=(6, 4))
        width = 0.8 / len(results)
        for i, r in enumerate(results):
            bleu = r["quality"]["bleu"]
            values = [bleu.get(g, {}).get("bleu", 0) for g in ("seen", "unseen")]
            ax.bar([x + i * width for x in (0, 1)], values, width, label=r["method"])
        ax.set_xticks([0.4 - width / 2, 1.4 - width / 2], ["seen", "unseen"])
        ax.set(ylabel="BLEU", title="Seen vs unseen categories")
        ax.legend()
        save(fig, "seen_unseen.png")
    return names


def _ceiling(data: dict) -> tuple[float, str]:
    """The GFLOP/s that 100% means: this run's measured fp32 GEMM ceiling (older reports: a datasheet peak)."""
    if "gemm_ceiling_gflops" in data:
        ceiling = data["gemm_ceiling_gflops"]
        return ceiling, (f"this machine's fp32 GEMM ceiling, {ceiling:.0f} GFLOP/s (torch.mm at the backbone's shapes, "
                         "640 rows, measured in this run)")
    peak = data["cpu_peak_gflops"]
    return peak, f"a 2-core Zen 3's fp32 peak of {peak:.0f} GFLOP/s (datasheet; older reports)"


def write_report(data: dict, out: Path) -> None:
    """Write report.json, report.md, the plots, and each method's hypotheses; print one line per method."""
    results = data["results"]
    for r in results:
        atomic_write_text(out / r["method"] / "hypotheses.txt", "\n".join(r.pop("hypotheses")) + "\n")
    images = plots(data, out)
    preset = data["preset"]
    ceiling, ceiling_note = _ceiling(data)
    md = [f"# Benchmark `{data['name']}`: kg2text vs PEFT", "",
          f"Command: `{data['command']}`", "",
          f"Date: {data['date']}. Machine: {data['machine']}. Versions: "
          + ", ".join(f"{k} {v}" for k, v in data["versions"].items()) + ".", "",
          f"Held equal: backbone `{preset['backbone']}`, {preset['dataset']} ({preset['train_split']} → "
          f"{preset['eval_split']}), {preset['steps']} steps × batch {preset['batch_size']} "
          f"(= {preset['steps'] * preset['batch_size']} training sentences), lr {preset['lr']}, "
          f"P = {preset['prefix_length']}, MLP width {preset['mlp_hidden']}, seed {preset['seed']}, fp32; "
          f"evaluation on {preset['eval_limit'] or 'all'} entries spread over the split, beam {preset['eval_beams']}, "
          f"at most {preset['max_new_tokens']} new tokens.", "",
          "## Quality", "", _quality_table(results), "",
          "BLEU, chrF++ and TER: sacrebleu with all references. Entity coverage: share of triple subjects and "
          "objects found in the output (case, underscores and quotes normalised); slot error rate: MR values "
          "missing from the output.", "",
          "## Cost", "", _cost_table(results, ceiling), "",
          f"GFLOP/s counts 4 FLOPs per backbone weight and training token (forward + input gradients; frozen "
          f"weights need no weight gradients; 6 for full fine-tuning), against {ceiling_note}.", "",
          "## Generation speed", "", _speed_table(results), "",
          "## Targets (kg2text prefix vs PEFT prefix)", "", *targets(results), "",
          "## Plots", "", *[f"![{name}]({name})" for name in images], ""]
    if data["notes"]:
        md += ["## Notes", "", *[f"- {note}" for note in data["notes"]], ""]
    atomic_write_text(out / "report.md", "\n".join(md))
    atomic_write_text(out / "report.json", json.dumps(data, indent=1) + "\n")
    for r in results:
        print(summary_line(r))


# The release report (scripts/release.sh): the shipped prefixes and the PEFT anchor on the full test sets,
# and the short-budget exploration scored on one slice of WebNLG test.

RELEASE_TASKS = ("webnlg", "e2e")
EXPLORE_DIR = "explore"
ENSEMBLE_DIR = "ensemble"  # release.sh's ensemble stage: NAME/member-K/ (the runs), NAME/FOLDER/ (their decodes)
DEV_DECODING_DIR = "dev-decoding"
GPU_SWEEP_DIR = "gpu-sweep"  # scripts/gpu_sweep.sh's runs, scored on WebNLG dev by scripts/sweep_score.sh
# The pairs beside the main one, each laid out like it in a folder: report key -> (folder, release-table name).
# The earlier recipes' (scripts/release.sh pairs), 40 minutes each: bf16 backbone (shipped before the 60-minute
# prefix), fp32 backbone; the main pair's prefixes decoded with --rerank (scripts/release.sh rerank); and the recipe
# with --compile for 60 minutes on an AMX Xeon and its PEFT anchor trained the same way there, and those decoded with
# --rerank (scripts/release.sh amx); that AMX prefix (shipped before) decoded with the settings best on WebNLG dev
# (scripts/dev_decoding.sh); the recipe with the prefix length the GPU sweep ranked first on dev
# (scripts/release.sh p40) and its PEFT anchor trained the same way, and it decoded with --rerank; that recipe with
# control prefixes, plain and decoded with --rerank (scripts/release.sh control); that recipe with half the batch (4)
# at lr 3.5e-4, plain and decoded with --rerank (scripts/release.sh b4); that recipe with --share-prompts, plain and
# decoded with --rerank (scripts/release.sh shared); that recipe's prefix averaged over the run's last 30% (the share
# best on dev), plain and decoded with --rerank, and the same run's last step (scripts/release.sh average); a second
# run with --average-last 0.3 itself, plain, with --rerank and its last step (scripts/release.sh avg40); control
# prefixes and --average-last 0.3 together, the same three (scripts/release.sh ctlavg); those at lr 7e-4, the same
# three (scripts/release.sh ctlhi); control prefixes and --average-last 0.3 with another seed, plain and decoded with
# --rerank (scripts/release.sh ctlavg2), and with a third seed (scripts/release.sh ctlavg3).
OTHER_PAIRS = {"forty_minutes": ("40min", "40 minutes"), "fp32_backbone": ("fp32", "fp32 backbone"),
               "reranked": ("rerank", "--rerank"), "amx_compiled": ("amx60", "60 minutes, AMX Xeon, --compile"),
               "amx_compiled_reranked": ("rerank/amx60", "60 minutes, AMX Xeon, --compile, --rerank"),
               "dev_chosen": ("dev-chosen", "60 minutes, AMX Xeon, --compile, decoding chosen on dev"),
               "prefix_40": ("p40", "60 minutes, prefix length 40, --compile"),
               "prefix_40_reranked": ("rerank/p40", "60 minutes, prefix length 40, --compile, --rerank"),
               "control_40": ("control40", "60 minutes, prefix length 40, --compile, control prefixes"),
               "control_40_reranked": ("rerank/control40",
                                       "60 minutes, prefix length 40, --compile, control prefixes, --rerank"),
               "batch_4": ("b4", "60 minutes, prefix length 40, --compile, batch 4"),
               "batch_4_reranked": ("rerank/b4", "60 minutes, prefix length 40, --compile, batch 4, --rerank"),
               "shared_prompts": ("shared", "60 minutes, prefix length 40, --compile, --share-prompts"),
               "shared_prompts_reranked": ("rerank/shared",
                                           "60 minutes, prefix length 40, --compile, --share-prompts, --rerank"),
               "averaged": ("averaged", "60 minutes, prefix length 40, --compile, --average-last 0.3"),
               "averaged_reranked": ("rerank/averaged",
                                     "60 minutes, prefix length 40, --compile, --average-last 0.3, --rerank"),
               "averaged_last_step": ("average", "60 minutes, prefix length 40, --compile, that run's last step"),
               "averaged_2": ("avg40", "60 minutes, prefix length 40, --compile, --average-last 0.3, second run"),
               "averaged_2_reranked": ("rerank/avg40",
                                       "60 minutes, prefix length 40, --compile, --average-last 0.3, second run, "
                                       "--rerank"),
               "averaged_2_last_step": ("avg40-last",
                                        "60 minutes, prefix length 40, --compile, the second run's last step"),
               "control_averaged": ("ctlavg", "60 minutes, prefix length 40, --compile, control prefixes, "
                                    "--average-last 0.3"),
               "control_averaged_reranked": ("rerank/ctlavg", "60 minutes, prefix length 40, --compile, control "
                                             "prefixes, --average-last 0.3, --rerank"),
               "control_averaged_last_step": ("ctlavg-last", "60 minutes, prefix length 40, --compile, control "
                                              "prefixes, that run's last step"),
               "control_averaged_lr7": ("ctlhi", "60 minutes, prefix length 40, --compile, control prefixes, "
                                        "--average-last 0.3, lr 7e-4"),
               "control_averaged_lr7_reranked": ("rerank/ctlhi", "60 minutes, prefix length 40, --compile, control "
                                                 "prefixes, --average-last 0.3, lr 7e-4, --rerank"),
               "control_averaged_lr7_last_step": ("ctlhi-last", "60 minutes, prefix length 40, --compile, control "
                                                  "prefixes, lr 7e-4, that run's last step")}
# The ctlavg stage's reruns with other seeds (scripts/release.sh ctlavg2, ctlavg3): seed -> stage
CTLAVG_SEEDS = {43: "ctlavg2", 44: "ctlavg3"}
CTLAVG_NAME = "60 minutes, prefix length 40, --compile, control prefixes, --average-last 0.3, seed {}"
OTHER_PAIRS |= {f"control_averaged_seed_{seed}{suffix}": (f"{folder}{stage}", CTLAVG_NAME.format(seed) + decoded)
                for seed, stage in CTLAVG_SEEDS.items()
                for suffix, folder, decoded in (("", "", ""), ("_reranked", "rerank/", ", --rerank"))}
# E2E pairs, laid out the same way with E2E runs: the shipped WebNLG prefix's recipe on E2E (scripts/release.sh e2e40),
# the E2E recipe with --share-prompts (scripts/release.sh e2e-shared); with --average-last 0.3, the shipped E2E prefix,
# plain and decoded with --rerank, and that run's last step (scripts/release.sh e2e-average)
E2E_PAIRS = {"e2e_prefix_40": ("e2e40", "8 minutes, prefix length 40, --compile"),
             "e2e_shared_prompts": ("e2e-shared", "8 minutes, --share-prompts"),
             "e2e_averaged": ("e2e-average", "8 minutes, --average-last 0.3"),
             "e2e_averaged_reranked": ("rerank/e2e-average", "8 minutes, --average-last 0.3, --rerank"),
             "e2e_averaged_last_step": ("e2e-average-last", "8 minutes, that run's last step")}
PAIRS_BY_TASK = {"webnlg": OTHER_PAIRS, "e2e": E2E_PAIRS}


def pair_runs(task: str) -> dict[str, str]:
    """Trainer -> its run folder inside a pair's folder, release.sh's naming (``webnlg``, ``peft-webnlg``)."""
    return {"kg2text": task, "peft": f"peft-{task}"}


FULL_TEST_RUNS = tuple((f"{folder}/{run}" if folder else run, trainer)
                       for folder in ("", *(folder for folder, _ in OTHER_PAIRS.values()))
                       for trainer, run in pair_runs("webnlg").items())
# The other pairs whose targets the report states too: report key -> what the target lines add to their name.
TARGET_PAIRS = {"reranked": " (both decoded with --rerank)",
                "amx_compiled": " (the AMX prefix: 60 minutes with --compile on an AMX Xeon, PEFT trained the same "
                                "way there)",
                "amx_compiled_reranked": " (the AMX prefix decoded with --rerank)",
                "dev_chosen": " (the AMX prefix decoded with the settings best on dev)",
                "prefix_40": " (the shipped prefix: length 40, ranked first on dev by the GPU sweep; 60 minutes with "
                             "--compile)",
                "prefix_40_reranked": " (the shipped prefix decoded with --rerank)",
                "control_40": " (the shipped prefix's recipe with control prefixes)",
                "control_40_reranked": " (the shipped prefix's recipe with control prefixes, decoded with --rerank)",
                "batch_4": " (the shipped prefix's recipe with batch 4 at lr 3.5e-4)",
                "batch_4_reranked": " (the shipped prefix's recipe with batch 4 at lr 3.5e-4, decoded with --rerank)",
                "shared_prompts": " (the shipped prefix's recipe with --share-prompts)",
                "shared_prompts_reranked": " (the shipped prefix's recipe with --share-prompts, decoded with --rerank)",
                "averaged": " (the shipped prefix's recipe, averaged over the run's last 30%)",
                "averaged_reranked": " (the shipped prefix's recipe, averaged over the run's last 30%, decoded with "
                                     "--rerank)",
                "averaged_2": " (the shipped prefix's recipe with --average-last 0.3, a second run)",
                "averaged_2_reranked": " (the shipped prefix's recipe with --average-last 0.3, a second run, decoded "
                                       "with --rerank)",
                "control_averaged": " (the shipped prefix's recipe with control prefixes and --average-last 0.3)",
                "control_averaged_reranked": " (the shipped prefix's recipe with control prefixes and --average-last "
                                             "0.3, decoded with --rerank)",
                "control_averaged_lr7": " (the shipped prefix's recipe with control prefixes, --average-last 0.3 and "
                                        "lr 7e-4)",
                "control_averaged_lr7_reranked": " (the shipped prefix's recipe with control prefixes, --average-last "
                                                 "0.3 and lr 7e-4, decoded with --rerank)"}
CTLAVG_RECIPE = "the shipped prefix's recipe with control prefixes and --average-last 0.3, seed {}"
TARGET_PAIRS |= {f"control_averaged_seed_{seed}{suffix}": f" ({CTLAVG_RECIPE.format(seed)}{decoded})"
                 for seed in CTLAVG_SEEDS for suffix, decoded in (("", ""), ("_reranked", ", decoded with --rerank"))}
# Recipes besides the recipe itself that the curve follows over training minutes: its changes -> the line's name.
CURVE_RECIPES = {"prefix_length 40, compile True": "prefix length 40, --compile"}  # the shipped prefix's (p40)
CHANGE_KEYS = ("method", "lr", "warmup_steps", "prefix_length", "control_length", "mlp_hidden", "batch_size", "format",
               "init_text", "dtype", "compile", "share_prompts", "average_last", "max_steps", "seed")
# Runs the curve leaves out: a second run of the shipped prefix's recipe (scripts/release.sh average), so that each
# budget keeps one point, the shipped run's
CURVE_LEFT_OUT = ("average/webnlg",)


def _read_json(path: Path):
    return json.loads(path.read_text())


def _train_facts(folder: Path) -> dict:
    config = _read_json(folder / "config.json")
    last = json.loads((folder / "train_log.jsonl").read_text().splitlines()[-1])
    return {"train_minutes": config["max_minutes"], "dtype": config.get("dtype", "float32"),
            "train_steps": last["step"], "train_tokens": last["tokens"], "train_tokens_per_s": last["tokens_per_s"],
            "final_loss": last["loss"]}


def release_entry(folder: Path) -> dict:
    """One scored run in the report's schema: WebNLG BLEU by category group, E2E BLEU and its other scores."""
    scores = _read_json(folder / "scores.json")
    entry = {"entries": scores["entries"], "num_beams": scores["decode"]["num_beams"]}
    if scores["dataset"] == "webnlg":
        entry |= {"bleu": _bleus(scores["scores"]), "bleu_challenge": _bleus(scores["scores_challenge"]),
                  "chrf": scores["chrf++"], "coverage": scores["entity_coverage"]}
    else:
        entry |= {"bleu": scores["scores"]["all"]["bleu"], "nist": scores.get("nist"),
                  "rouge_l": scores.get("rouge_l"), "cider": scores.get("cider"), "chrf": scores["chrf++"],
                  "ser": scores["slot_error_rate"]}
    commands = {"command": scores.get("decode_command", scores["command"])}
    if "decode_command" in scores:  # re-scored from its sentences (evaluate --hypotheses)
        commands["scored_by"] = scores["command"]
    return entry | {"decode_minutes": round(scores["decode_seconds"] / 60, 1), "machine": scores["machine"]} \
        | commands | _train_facts(folder)


def _changes(config: dict, recipe: dict, decode: dict) -> str:
    """What a run's config.json sets unlike the recipe's (a setting older than a config file: its default), and
    whether its sentences were reranked (``decode``: its scores.json's decoding settings)."""
    from kg2text.training import TrainConfig

    defaults = {f.name: f.default for f in fields(TrainConfig)}
    changes = [f"{k} {config.get(k, defaults[k])}" for k in CHANGE_KEYS
               if config.get(k, defaults[k]) != recipe.get(k, defaults[k])]
    changes += [f"length penalty {decode['length_penalty']:g}"] if decode.get("length_penalty", 1.0) != 1.0 else []
    changes += [f"no-repeat n-gram {decode['no_repeat_ngram_size']}"] if decode.get("no_repeat_ngram_size") else []
    changes += ["decoded with --rerank"] if decode.get("rerank") else []
    return ", ".join(changes) or "the recipe"


def _bleus(groups: dict) -> dict:
    """``{group: {"bleu": x, ...}}`` (scores.json's and ``evaluate``'s form) -> ``{group: x}``."""
    return {group: score["bleu"] for group, score in groups.items()}


def _row(folder: Path, name: str, trainer: str, recipe: dict, challenge: dict, bleu: dict, entries: int) -> dict:
    changes = _changes(_read_json(folder / "config.json"), recipe, _read_json(folder / "scores.json")["decode"])
    return {"name": name, "trainer": trainer, "changes": changes,
            "bleu_challenge": _bleus(challenge), "bleu": bleu["all"]["bleu"], "entries": entries} | _train_facts(folder)


def exploration_rows(out: Path) -> list[dict]:
    """Every exploration run, plus the full-test runs (kg2text and PEFT, this recipe's and the fp32 pair's) scored
    on the same slice from their full-test sentences (decoding is batch-independent, so they are what decoding
    the slice alone gives)."""
    from kg2text.api import evaluate
    from kg2text.data import evenly_spaced, read_records

    recipe = _read_json(out / "webnlg" / "config.json")
    rows = []
    for folder in sorted(path.parent for path in (out / EXPLORE_DIR).glob("*/scores.json")):
        scores = _read_json(folder / "scores.json")
        trainer = "peft" if folder.name.startswith("peft-") else "kg2text"  # release.sh's naming, as peft-webnlg
        rows.append(_row(folder, folder.name, trainer, recipe, scores["scores_challenge"], scores["scores"],
                         scores["entries"]))
    records = read_records("webnlg", "test")
    picked = evenly_spaced(list(range(len(records))), rows[0]["entries"] if rows else 400)
    for name, trainer in FULL_TEST_RUNS:
        if (out / name / "scores.json").exists():
            hypotheses = (out / name / "hypotheses.txt").read_text().splitlines()
            scores = evaluate([hypotheses[i] for i in picked], [records[i] for i in picked])
            rows.append(_row(out / name, name, trainer, recipe, scores["bleu_challenge"], scores["bleu"],
                             len(picked)))
    return sorted(rows, key=lambda r: (r["train_minutes"], r["trainer"], r["name"]))


def ensemble_rows(out: Path) -> list[dict]:
    """Each decode of an ensemble (``--ensemble``): its scores beside its members' training (minutes in all, steps
    each), from ``ENSEMBLE_DIR/NAME/FOLDER/scores.json`` and ``ENSEMBLE_DIR/NAME/member-K/``."""
    rows = []
    for path in sorted((out / ENSEMBLE_DIR).glob("*/*/scores.json")):
        scores, members = _read_json(path), sorted(path.parent.parent.glob("member-*"))
        trained = [_train_facts(member) for member in members]
        rows.append({"name": f"{path.parent.parent.name}/{path.parent.name}", "members": len(members),
                     "train_minutes": sum(t["train_minutes"] for t in trained),
                     "train_steps": [t["train_steps"] for t in trained], "entries": scores["entries"],
                     "rerank": scores["decode"]["rerank"], "bleu_challenge": _bleus(scores["scores_challenge"]),
                     "bleu": _bleus(scores["scores"]), "chrf": scores["chrf++"], "coverage": scores["entity_coverage"],
                     "decode_minutes": round(scores["decode_seconds"] / 60, 1), "command": scores["command"]})
    return rows


def _ensemble_table(rows: list[dict]) -> str:
    lines = ["| ensemble | members' training | steps | entries | decoding | challenge BLEU all / seen / unseen | "
             "BLEU (sacrebleu) all / seen / unseen | chrF++ | coverage | decode time |",
             "|---|---:|---|---:|---|---|---|---:|---:|---:|"]
    for r in rows:
        challenge = " / ".join(f"{r['bleu_challenge'][g]:.2f}" for g in ("all", "seen", "unseen"))
        bleu = " / ".join(f"{r['bleu'][g]:.2f}" for g in ("all", "seen", "unseen"))
        steps = " + ".join(f"{s:,}" for s in r["train_steps"])
        lines.append(f"| {r['name']} | {r['train_minutes']:g} min | {steps} | {r['entries']:,} | "
                     f"beam 5{', --rerank' if r['rerank'] else ''} | {challenge} | {bleu} | {r['chrf']:.2f} | "
                     f"{r['coverage']:.2f}% | {r['decode_minutes']:.1f} min |")
    return "\n".join(lines)


def dev_decoding_rows(out: Path) -> list[dict]:
    """The shipped prefix's decoding settings scored on WebNLG dev (scripts/dev_decoding.sh), best first: where
    the settings for test are chosen."""
    rows = []
    for path in (out / DEV_DECODING_DIR).glob("*/scores.json"):
        scores = _read_json(path)
        decode = scores["decode"]
        rows.append({"name": path.parent.name, "length_penalty": decode["length_penalty"], "rerank": decode["rerank"],
                     "no_repeat_ngram": decode["no_repeat_ngram_size"], "entries": scores["entries"],
                     "bleu_challenge": scores["scores_challenge"]["all"]["bleu"],
                     "bleu": scores["scores"]["all"]["bleu"], "coverage": scores["entity_coverage"]})
    return sorted(rows, key=lambda r: (-r["bleu_challenge"], r["name"]))


def gpu_sweep_rows(out: Path) -> list[dict]:
    """The recipe's neighbours trained at once on a GPU (scripts/gpu_sweep.sh) and scored on WebNLG dev
    (scripts/sweep_score.sh), best first: where the recipe is chosen, never on test."""
    folders = sorted(path.parent for path in (out / GPU_SWEEP_DIR).glob("*/scores.json"))
    if not folders:
        return []
    recipe = _read_json(out / GPU_SWEEP_DIR / "recipe" / "config.json")
    rows = []
    for folder in folders:
        config, scores = _read_json(folder / "config.json"), _read_json(folder / "scores.json")
        facts = _train_facts(folder)
        rows.append({"name": folder.name, "changes": _changes(config, recipe, scores["decode"]),
                     "steps": facts["train_steps"], "sentences": facts["train_steps"] * config["batch_size"],
                     "final_loss": facts["final_loss"], "bleu_challenge": scores["scores_challenge"]["all"]["bleu"],
                     "bleu": scores["scores"]["all"]["bleu"], "coverage": scores["entity_coverage"],
                     "entries": scores["entries"]})
    return sorted(rows, key=lambda r: (-r["bleu_challenge"], r["name"]))


def _dev_table(columns: str, alignment: str, rows: list[dict], cells: Callable[[dict], str]) -> str:
    """A table of runs or settings scored on dev: each row's own columns, then its four dev scores."""
    lines = [f"| {columns} | challenge BLEU | BLEU (sacrebleu) | coverage | entries |",
             f"|{alignment}---:|---:|---:|---:|"]
    lines += [f"| {cells(r)} | {r['bleu_challenge']:.2f} | {r['bleu']:.2f} | {r['coverage']:.2f}% | {r['entries']} |"
              for r in rows]
    return "\n".join(lines)


def _gpu_sweep_table(rows: list[dict]) -> str:
    return _dev_table("run | what differs from the recipe | steps | sentences seen | final loss",
                      "---|---|---:|---:|---:|", rows,
                      lambda r: f"{r['name']} | {r['changes']} | {r['steps']:,} | {r['sentences']:,} | "
                                f"{r['final_loss']:.3f}")


def _dev_decoding_table(rows: list[dict]) -> str:
    return _dev_table("setting | length penalty | --rerank | --no-repeat-ngram", "---|---:|---|---:|", rows,
                      lambda r: f"{r['name']} | {r['length_penalty']:g} | {'yes' if r['rerank'] else 'no'} | "
                                f"{r['no_repeat_ngram']}")


def _curve_series(row: dict) -> str | None:
    """Which line of the curve a run is a point of: the recipe with its backbone dtype, or the shipped prefix's
    recipe (CURVE_RECIPES); None for any other change (a method, a decoding setting, PEFT)."""
    if row["trainer"] != "kg2text" or row["name"] in CURVE_LEFT_OUT:
        return None
    if row["changes"] in ("the recipe", f"dtype {row['dtype']}"):
        return f"{row['dtype']} backbone"
    if row["changes"] in CURVE_RECIPES:
        return f"{CURVE_RECIPES[row['changes']]}, {row['dtype']} backbone"
    return None


def _curve(rows: list[dict]) -> list[dict]:
    """BLEU-A against training minutes, one line per recipe and backbone dtype (kg2text only)."""
    return [{"minutes": r["train_minutes"], "dtype": r["dtype"], "series": series,
             **{g: r["bleu_challenge"][g] for g in ("all", "seen", "unseen")}}
            for r in rows if (series := _curve_series(r))]


def _release_targets(report: dict) -> list[str]:
    """The quality targets against the main pair, the same prefixes decoded with --rerank, the AMX
    prefix's pair and the shipped prefix."""
    lines = _targets(report["webnlg"], report["peft"].get("webnlg"), "")
    for key, decoded in TARGET_PAIRS.items():
        pair = report.get(key, {})
        if "kg2text" in pair:
            lines += _targets(pair["kg2text"], pair.get("peft"), decoded)
    return lines


def _targets(ours: dict, theirs: dict | None, decoded: str) -> list[str]:
    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**not met**"

    ours = ours["bleu_challenge"]
    lines = [f"- WebNLG challenge BLEU-A >= 55{decoded}: {ours['all']:.2f}, {verdict(ours['all'] >= 55)}",
             f"- WebNLG challenge BLEU unseen >= 46{decoded}: {ours['unseen']:.2f}, {verdict(ours['unseen'] >= 46)}"]
    if theirs:
        theirs = theirs["bleu_challenge"]
        gain = ours["all"] - theirs["all"]
        lines.append(f"- +2 BLEU-A over PEFT at the same budget{decoded}: {ours['all']:.2f} vs {theirs['all']:.2f} "
                     f"({gain:+.2f}), {verdict(gain >= 2)}")
    return lines


def write_release_report(out: Path) -> dict:
    """``results/release/report.json`` and ``report.md`` (+ ``curve.png``) from the scored runs in ``out``."""
    report: dict = {task: release_entry(out / task) for task in RELEASE_TASKS if (out / task / "scores.json").exists()}
    report["peft"] = {task: release_entry(out / f"peft-{task}") for task in RELEASE_TASKS
                      if (out / f"peft-{task}" / "scores.json").exists()}
    report["train_minutes"] = report["webnlg"]["train_minutes"]
    report["dtype"] = report["webnlg"]["dtype"]
    for task, pairs in PAIRS_BY_TASK.items():
        for key, (folder, _) in pairs.items():
            report[key] = {trainer: release_entry(out / folder / run) for trainer, run in pair_runs(task).items()
                           if (out / folder / run / "scores.json").exists()}
    report["exploration"] = exploration_rows(out)
    report["curve"] = _curve(report["exploration"])
    report["ensembles"] = ensemble_rows(out)
    report["dev_decoding"] = dev_decoding_rows(out)
    report["gpu_sweep"] = gpu_sweep_rows(out)
    stages = ("pairs", "rerank", "amx", "p40", "control", "b4", "shared", "average", "avg40", "ctlavg", "ctlhi",
              *CTLAVG_SEEDS.values(), "e2e40", "e2e-shared", "e2e-average", "explore", "ensemble")
    report["command"] = " && ".join(["bash scripts/release.sh", *(f"bash scripts/release.sh {s}" for s in stages),
                                     "bash scripts/dev_decoding.sh"])
    machine = report["webnlg"]["machine"]
    md = ["# Release report: the shipped prefixes, the PEFT anchor, the short-budget exploration", "",
          f"Command: `{report['command']}` (each ends with `python scripts/release_report.py`). Machine: "
          f"{machine['model']}, {machine['cores']} cores ({', '.join(machine['flags'])}).", "",
          "## Full test sets, beam 5, fp32 decoding", "", f"WebNLG backbone during training: {report['dtype']}.", "",
          _release_table(report), "", *_release_notes(out), "",
          "## Targets", "", *_release_targets(report), "",
          "## Exploration (WebNLG, short budgets, one slice of the test set)", "", _exploration_table(report), "",
          "Each run trains for its budget with the schedule decaying to 0 on time and is scored on the same "
          "evenly spaced entries of WebNLG test (beam 5); the rows named like the full-test runs above (webnlg, "
          "peft-webnlg, 40min/..., fp32/..., rerank/...) are scored on those entries from their full-test "
          "sentences.", ""]
    if report["curve"]:
        md += ["![challenge BLEU against training minutes](curve.png)", ""]
        _curve_plot(report["curve"], out / "curve.png")
    if report["ensembles"]:
        md += ["## Ensembles of prefixes (`--ensemble`), WebNLG test", "",
               "`bash scripts/release.sh ensemble`: two runs' prefixes decoded together, each token chosen by their "
               "mean next-token probability (kg2text/decoding.py), on the exploration's slice and on the full test; "
               "each ensemble's runs (prefix, config, log) are in its member-1/ and member-2/.", "",
               _ensemble_table(report["ensembles"]), ""]
    if report["dev_decoding"]:
        md += ["## Decoding settings for the AMX prefix (shipped before the prefix of length 40), on WebNLG dev", "",
               "`bash scripts/dev_decoding.sh`: evenly spaced WebNLG dev entries (seen categories only), beam 5, one "
               "setting a row, best first; test is decoded only with settings chosen here.", "",
               _dev_decoding_table(report["dev_decoding"]), ""]
    if report["gpu_sweep"]:
        md += ["## The recipe's neighbours at a 60-minute budget, trained on a GPU, scored on WebNLG dev", "",
               "`STEPS=3000 MINUTES=7 bash scripts/gpu_sweep.sh SWEEP` on one NVIDIA H200 (lent for one session; "
               "each run's train.txt says where it trained), then `bash scripts/sweep_score.sh SWEEP` here: the "
               "dev entries and decoding of the table above (beam 5), best first. All runs trained at once and "
               "shared the GPU, so each ended on its 7 minutes (the schedule decays to 0 on time) rather than at "
               "3,000 steps. A GPU's numerics differ from a CPU's: this ranks recipes; the 60-minute CPU run of the "
               "one chosen is the figure that counts (the full-test table above). `recipe` and `long` differ only "
               "in their schedule's planned end and both ended on time: their gap is this sweep's noise.", "",
               _gpu_sweep_table(report["gpu_sweep"]), ""]
    atomic_write_text(out / "report.md", "\n".join(md))
    atomic_write_text(out / "report.json", json.dumps(report, indent=1) + "\n")
    return report


def reference_slot_error_rate() -> float:
    """E2E test's own first references scored as a system's output: what SER's string matching counts as
    errors in human sentences (paraphrased values)."""
    from kg2text.data import read_records
    from kg2text.metrics import e2e_slot_error_rate

    records = read_records("e2e", "test")
    return e2e_slot_error_rate(records, [r.references[0] for r in records])


def _release_notes(out: Path) -> list[str]:
    notes = ["Both trainers see the same examples in the same order with the same optimizer and time schedule; "
             "PEFT's prefix is saved in kg2text's layout and decoded by the same decoder with the same settings.",
             f"SER is a strict string match of each slot value: E2E test's own first references, scored the same "
             f"way, miss {reference_slot_error_rate():.2f}% of their slots. NIST, ROUGE-L and CIDEr(-D) are ours on "
             "whitespace tokens."]
    for name, trainer in FULL_TEST_RUNS:
        check = out / name / "peft_decode_check.json"
        if trainer == "peft" and check.exists():
            data = _read_json(check)
            notes.append(f"{name}: PEFT's own `generate` (beam {data['num_beams']}) on {data['entries']} of those "
                         f"entries gives {data['identical']} identical sentences (`{data['command']}`).")
    return [f"- {note}" for note in notes]


def _release_table(report: dict) -> str:
    rows = ["| trainer | task | entries | BLEU all / seen / unseen | challenge BLEU all / seen / unseen | chrF++ | "
            "faithfulness / other | trained | decoding |", "|---|---|---:|---|---|---:|---|---|---:|"]
    pairs = [("kg2text", report, RELEASE_TASKS), ("PEFT", report["peft"], RELEASE_TASKS),
             *((f"{shown}, {name}", {task: report[key].get(trainer)}, (task,))
               for task, named in PAIRS_BY_TASK.items() for key, (_, name) in named.items()
               for trainer, shown in (("kg2text", "kg2text"), ("peft", "PEFT")))]
    for trainer, runs, tasks in pairs:
        for task in tasks:
            if not runs.get(task):
                continue
            e = runs[task]
            trained = f"{e['train_minutes']:g} min, {e['train_steps']:,} steps, {e['train_tokens_per_s']:.0f} tok/s"
            if task == "webnlg":
                bleu = " / ".join(f"{e['bleu'][g]:.2f}" for g in ("all", "seen", "unseen"))
                challenge = " / ".join(f"{e['bleu_challenge'][g]:.2f}" for g in ("all", "seen", "unseen"))
                other = f"coverage {e['coverage']:.2f}%"
            else:
                bleu, challenge = f"{e['bleu']:.2f}", "–"
                other = (f"SER {e['ser']:.2f}%, NIST {_fmt(e['nist'], 2)}, ROUGE-L {_fmt(e['rouge_l'], 2)}, "
                         f"CIDEr {_fmt(e['cider'], 2)}")
            rows.append(f"| {trainer} | {task} | {e['entries']:,} | {bleu} | {challenge} | {e['chrf']:.2f} | "
                        f"{other} | {trained} | {e['decode_minutes']:.1f} min |")
    return "\n".join(rows)


def _exploration_table(report: dict) -> str:
    rows = ["| run | trainer | minutes | what differs from the recipe | steps | final loss | challenge BLEU "
            "all / seen / unseen | BLEU (sacrebleu) | entries |", "|---|---|---:|---|---:|---:|---|---:|---:|"]
    for r in report["exploration"]:
        challenge = " / ".join(f"{r['bleu_challenge'][g]:.2f}" for g in ("all", "seen", "unseen"))
        rows.append(f"| {r['name']} | {r['trainer']} | {r['train_minutes']:g} | {r['changes']} | "
                    f"{r['train_steps']:,} | {r['final_loss']:.3f} | {challenge} | {r['bleu']:.2f} | {r['entries']} |")
    return "\n".join(rows)


def _curve_plot(curve: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for i, series in enumerate(sorted({p["series"] for p in curve})):
        style = ("-", "--", ":", "-.")[i % 4]
        points = [p for p in curve if p["series"] == series]
        for group, color in (("all", "C0"), ("unseen", "C1")):
            ax.plot([p["minutes"] for p in points], [p[group] for p in points], style, color=color, marker="o",
                    label=f"{group}, {series}")
    ax.set(xlabel="training minutes (2 CPU cores)", ylabel="challenge BLEU (test slice)",
           title="WebNLG: BLEU against training time")
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1))  # beside the lines, never over them
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
