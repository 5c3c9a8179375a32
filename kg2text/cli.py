"""The ``kg2text`` command: train, generate, evaluate.

Every user mistake ends in one line ``kg2text: error: ...`` and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from kg2text.errors import UserError

EPILOG = """examples:
  kg2text train --backbone smollm2-135m --dataset webnlg --max-steps 200 --output runs/webnlg
  kg2text generate --prefix runs/webnlg "Harry_Potter | education | Hogwarts"
  kg2text generate --prefix runs/webnlg "Harry_Potter | education | Hogwarts ; Harry_Potter | house | Gryffindor"
  kg2text generate --prefix runs/webnlg --input triples.jsonl
  kg2text evaluate --prefix runs/webnlg --dataset webnlg --split test
"""

INPUT_HELP = """WebNLG input: 'subject | predicate | object', several triples joined by ';'.
E2E input: 'name[Alimentum], area[city centre]'. A file (--input, or '-' for stdin) has one input
per line; a .jsonl file has one JSON object per line: {"triples": [["s", "p", "o"], ...]} or
{"mr": "name[X], area[Y]"} or {"input": "<a line as above>"}; a .csv file has an 'mr' or 'input'
column; a .xml file is WebNLG XML (each entry's triples are one input)."""


def _add_decode_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("decoding")
    group.add_argument("--num-beams", type=int, default=5, help="beam width; 1 = greedy (default: 5)")
    group.add_argument("--length-penalty", type=float, default=1.0,
                       help="beam length penalty: above 1 favours longer sentences (default: 1.0; "
                       "results/release/report.md has a dev sweep)")
    group.add_argument("--no-repeat-ngram", type=int, default=0,
                       help="ban n-grams of this size that the sentence already contains (the input's stay free to "
                       "copy; 0: off)")
    group.add_argument("--max-new-tokens", type=int, default=100, help="longest sentence in tokens (default: 100)")
    group.add_argument("--batch-size", type=int, default=16, help="inputs decoded together (default: 16)")
    group.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16", "int8", "int4"],
                       help="the backbone's format for decoding: bfloat16 (faster on CPUs with AVX512-BF16 or AMX), "
                       "float16 (fp16 weights, fp32 activations, x86 CPUs: faster below 16 rows at fp32's numbers "
                       "up to the weights' rounding), "
                       "int8 (int8 weights, bf16 activations: faster at batch 1) or int4 (4-bit weights in groups "
                       "of 32, SmolLM2's own GGUF grid, LM head int8: fastest at batch 1); each changes BLEU a "
                       "little, see results/speed/speed.md (default: float32, the reference)")
    group.add_argument("--rerank", action="store_true",
                       help="of the beam's num-beams finished sentences, output the one that mentions the most input "
                       "entities (WebNLG subjects and objects, E2E values; ties: the better beam score) instead of "
                       "the best-scored one; needs --num-beams > 1 (default: off)")
    group.add_argument("--ensemble", action="append", default=[], metavar="RUN",
                       help="also decode with this run's prefix: each token is chosen by the mean next-token "
                       "probability of --prefix and every --ensemble run (runs trained apart, e.g. with another "
                       "--seed; same backbone, method, format and prefix length). Each adds the cost of one more "
                       "decode; repeat it for more runs (default: none)")
    group.add_argument("--decoder", default="kg2text", choices=["kg2text", "hf"],
                       help="kg2text: our decoding loop (fast); hf: transformers' generate, the reference it is "
                       "tested against (default: kg2text)")


DEFAULT_PREFIX = "webnlg"  # the WebNLG prefix shipped in the package (kg2text/prefixes/)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kg2text", description="Teach a frozen language model to verbalise knowledge-base triples by "
        "training only a small prefix (prefix tuning, Li & Liang 2021).",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG)
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="prefix-tune a frozen backbone on WebNLG or E2E",
                                description="Prefix-tune a frozen causal LM and write a run folder "
                                "(prefix.safetensors, config.json, train_log.jsonl).")
    train.add_argument("--output", required=True, type=Path, help="run folder to create")
    train.add_argument("--backbone", default="gpt2", help="gpt2, gpt2-medium, gpt2-large, distilgpt2 (Hub), "
                       "tiny-gpt2, tiny-llama, smollm2-135m (offline) or a local HF model folder (default: gpt2)")
    train.add_argument("--dataset", default="webnlg", choices=["webnlg", "e2e", "dart"],
                       help="webnlg and e2e ship with kg2text; dart needs --data-dir (default: webnlg)")
    train.add_argument("--split", default="train", help="split to train on (default: train; E2E ships dev only)")
    train.add_argument("--data-dir", help="read the dataset from this folder instead of the shipped copy")
    train.add_argument("--train-file", help="train on your own pairs instead of --dataset: JSONL "
                       '{"triples": [[s, p, o], ...], "text": "..."} (or "texts": [...], or "mr": "...") or CSV '
                       "with an input column (mr, triples or input) and a reference column (ref, text or reference)")
    train.add_argument("--dev-file", help="dev pairs in the same form: a dev loss every --eval-every steps; the "
                       "prefix saved is the one of the step with the lowest dev loss")
    train.add_argument("--eval-every", type=int, default=100, help="steps between dev losses (default: 100)")
    train.add_argument("--skip-bad", action="store_true",
                       help="skip bad rows of --train-file/--dev-file (counted) instead of stopping at the first")
    train.add_argument("--format", help="linearization: webnlg, webnlg-tags, webnlg-words (predicates as words: "
                       "'birth place'), e2e (default: the dataset's; a pair file's from its inputs)")
    train.add_argument("--method", default="prefix", choices=["prefix", "prompt", "prefix-hidden", "control"],
                       help="prefix: key/value prefix in every layer (Li & Liang); prompt: soft prompt on the "
                       "input embeddings only (Lester et al.); prefix-hidden: learned hidden states prepended inside "
                       "every attention layer, turned into keys/values by its frozen projections; control: a prefix "
                       "plus a short one per input category (WebNLG's), chosen by the input (Clive et al.; inputs of "
                       "an untrained or unknown category get a general one) (default: prefix)")
    train.add_argument("--prefix-length", type=int, default=10, help="virtual tokens P (default: 10)")
    train.add_argument("--control-length", type=int, default=2,
                       help="--method control: virtual tokens per category behind the shared prefix (default: 2)")
    train.add_argument("--mlp-hidden", type=int, default=512, help="prefix reparametrization MLP width (default: 512)")
    train.add_argument("--init-text", help="initialise from this text: the backbone's own keys/values (prefix) "
                       "or token embeddings (prompt); default: random (prefix) / sampled vocabulary (prompt)")
    train.add_argument("--init-from", help="start from this run's trained prefix or prompt (same backbone, method "
                       "and length): a few minutes of adaptation to a small knowledge base instead of training from "
                       "scratch")
    train.add_argument("--epochs", type=float, default=5.0, help="passes over the data (default: 5)")
    train.add_argument("--max-steps", type=int, help="optimizer steps; overrides --epochs")
    train.add_argument("--max-minutes", type=float,
                       help="train for this many minutes of wall-clock time: after --warmup-steps the learning rate "
                       "decays linearly in time and reaches 0 when the time is up (with --max-steps: whichever "
                       "comes first); resumable, but not bit for bit, since the schedule follows the clock")
    train.add_argument("--max-examples", type=int, help="train on the first N shuffled (input, sentence) pairs")
    train.add_argument("--batch-size", type=int, default=8, help="examples per step and process (default: 8)")
    train.add_argument("--grad-accum", type=int, default=1, help="gradient accumulation steps (default: 1)")
    train.add_argument("--lr", type=float, default=5e-5, help="AdamW learning rate (default: 5e-5, Li & Liang)")
    train.add_argument("--warmup-steps", type=int, default=0)
    train.add_argument("--weight-decay", type=float, default=0.0)
    train.add_argument("--max-grad-norm", type=float, default=1.0)
    train.add_argument("--mixed-precision", default="no", choices=["no", "fp16", "bf16"])
    train.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "auto"],
                       help="the frozen backbone's weights: bfloat16 trains faster on most CPUs with AVX512-BF16 or "
                       "AMX; auto times one bf16 and one fp32 matrix multiply here (about a second) and takes the "
                       "faster, recorded in the run's config.json; the prefix itself and the loss stay float32 "
                       "(default: float32)")
    train.add_argument("--fp32-matmuls", default="auto", choices=["auto", "torch", "onednn"],
                       help="who multiplies an fp32 backbone's frozen layers on a CPU: onednn (weights reordered "
                       "once; forward and backward), torch, or auto: times both at a training batch's rows (a few "
                       "tenths of a second) and takes the faster, recorded in the run's config.json so a resumed run "
                       "multiplies the same way (default: auto)")
    train.add_argument("--gradient-checkpointing", action="store_true",
                       help="recompute activations in backward: less memory, about a third more time")
    train.add_argument("--compile", action="store_true",
                       help="torch.compile the backbone's MLPs and norms: fuses their elementwise ops, after 10-20 s "
                       "of compiling; needs a C++ compiler (kg2text benchmark --speed measures whether it pays here)")
    train.add_argument("--share-prompts", action="store_true",
                       help="the sentences of one input in a batch share one pass over its prompt (a 4-d attention "
                       "mask keeps them apart; same loss): WebNLG's 2.6 sentences an input train on about 1/1.4 of "
                       "the padded tokens; prefix methods only")
    train.add_argument("--average-last", type=float, default=0.0, metavar="F",
                       help="save the mean of the trained tensor at every 50th step in the last fraction F of the run "
                       "(of its time with --max-minutes, else of its steps; e.g. 0.3) instead of the last step's, "
                       "which is saved beside it in OUTPUT/last-step/ (default: 0, the last step's)")
    train.add_argument("--save-dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                       help="dtype of the saved prefix (default: float32)")
    train.add_argument("--checkpoint-every", type=int, default=100,
                       help="save a resumable checkpoint every N steps (0: never; default: 100)")
    train.add_argument("--resume", action="store_true",
                       help="continue the unfinished run in --output from its last checkpoint, with its saved settings")
    train.add_argument("--from-previous", action="store_true",
                       help="with --resume: if the newest checkpoint is damaged, continue from the one before it")
    train.add_argument("--trainer", default="kg2text", choices=["kg2text", "peft"],
                       help="whose prefix tuning runs: kg2text's (default) or, for comparisons, Hugging Face PEFT's "
                       "PrefixTuningConfig trained with the same data, batches, optimizer and schedule (needs peft: "
                       "pip install -e '.[bench]'; no --resume); it is saved as a kg2text prefix, so evaluate reads it")
    train.add_argument("--seed", type=int, default=42)
    train.add_argument("--log-every", type=int, default=10, help="log the loss every N steps (default: 10)")

    gen = commands.add_parser("generate", help="verbalise your own triples with a trained prefix",
                              description="Generate one sentence per input.\n\n" + INPUT_HELP,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    gen.add_argument("--prefix", action="append",
                     help="run folder made by 'kg2text train', or a prefix shipped with kg2text: webnlg (the default) "
                     "or e2e; for several tasks on one base model repeat it as --prefix webnlg=RUN1 --prefix "
                     "e2e=RUN2 and start each input with its task: 'e2e:: name[X]'")
    gen.add_argument("--backbone", help="load the prefix onto this backbone (default: the one it was trained on)")
    gen.add_argument("inputs", nargs="*", help="inputs on the command line (else --input or stdin)")
    gen.add_argument("--input", help="one input per line (.txt) or one JSON object per line (.jsonl); '-' = stdin")
    gen.add_argument("--skip-bad", action="store_true",
                     help="skip inputs that do not parse (reported with a count on stderr) instead of stopping")
    gen.add_argument("--jsonl", action="store_true", help="print JSON lines {input, output} instead of plain text")
    gen.add_argument("--category", default="",
                     help="a --method control run: the WebNLG category whose control prefix every input gets (e.g. "
                     "Airport, Food); default, or a category the run did not train: its general one")
    _add_decode_args(gen)

    ev = commands.add_parser("evaluate", help="decode a dataset split or your own test file and score it",
                             description="Decode a split (or --test-file), write hypotheses.txt, scores.json and "
                             "scores.md: sacrebleu BLEU with all references and the WebNLG challenge's BLEU (lower-"
                             "cased multi-bleu, at most 3 references; what Li & Liang and DART report), all / seen / "
                             "unseen for WebNLG; chrF++; entity coverage (triples) or slot error rate (E2E).")
    ev.add_argument("--prefix", action="append",
                    help="run folder made by 'kg2text train', or a shipped prefix: webnlg (the default) or e2e")
    ev.add_argument("--backbone", help="load the prefix onto this backbone (default: the one it was trained on)")
    ev.add_argument("--dataset", default="webnlg", choices=["webnlg", "e2e", "dart"])
    ev.add_argument("--split", default="test")
    ev.add_argument("--data-dir", help="read the dataset from this folder instead of the shipped copy")
    ev.add_argument("--test-file", help="score your own pairs (JSONL or CSV, as for train --train-file) instead of "
                    "--dataset")
    ev.add_argument("--skip-bad", action="store_true", help="skip bad rows of --test-file (counted)")
    ev.add_argument("--limit", type=int, help="score N entries spread evenly over the split (a quick slice)")
    ev.add_argument("--output", type=Path, help="folder for the results (default: RUN/eval/DATASET-SPLIT)")
    ev.add_argument("--hypotheses", type=Path, help="score these sentences (one per line, in the entries' order) "
                    "instead of decoding: re-score a finished run, or score another system's outputs; no model loads "
                    "(default --output: the file's folder)")
    _add_decode_args(ev)
    srv = commands.add_parser("serve", help="serve sentences over HTTP (FastAPI): batching, limits, a page",
                              description="Load the backbone and the prefixes once and serve POST /generate, "
                              "GET /info, GET /health, a page at / and OpenAPI docs at /docs. Requests that arrive "
                              "together are decoded as one batch; SIGTERM finishes the requests in flight. Needs the "
                              "serve extra: pip install -c constraints.txt -e '.[serve]'.")
    srv.add_argument("--prefix", action="append",
                     help="run folder or shipped prefix (webnlg, the default; e2e), or TASK=RUN several times for "
                     "several tasks on one backbone")
    srv.add_argument("--backbone", help="load the prefixes onto this backbone (default: the one they were trained on)")
    srv.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only; "
                     "any other address needs a token)")
    srv.add_argument("--port", type=int, default=8000, help="port (default: 8000)")
    srv.add_argument("--token", help="require 'Authorization: Bearer TOKEN' on every API request (default: the "
                     "KG2TEXT_TOKEN environment variable, else none)")
    srv.add_argument("--max-inputs", type=int, default=64, help="inputs per request (default: 64)")
    srv.add_argument("--max-input-chars", type=int, default=2000, help="characters per input (default: 2000)")
    srv.add_argument("--timeout", type=float, default=120.0, help="seconds a request may wait for its sentences "
                     "(default: 120)")
    srv.add_argument("--batch-window-ms", type=float, default=20.0,
                     help="how long to wait for more requests to decode together (default: 20)")
    srv.add_argument("--max-batch", type=int, default=32, help="inputs decoded together at most (default: 32)")
    _add_decode_args(srv)

    export = commands.add_parser("export", help="write a trained prefix in another tool's format",
                                 description="Write a kg2text prefix as a Hugging Face PEFT prefix-tuning adapter "
                                 "(prefix_projection off; PeftModel.from_pretrained loads it).")
    export.add_argument("run", type=Path, help="run folder made by 'kg2text train'")
    export.add_argument("out", type=Path, help="folder to write the adapter to")
    export.add_argument("--format", default="peft", choices=["peft"], help="target format (default: peft)")
    export.add_argument("--base-model", help="base_model_name_or_path to record (default: the run's backbone)")
    bench = commands.add_parser("benchmark", help="kg2text vs PEFT on one machine: report with tables and plots",
                                description="Train and evaluate kg2text prefix/prompt tuning, PEFT prefix/prompt "
                                "tuning, zero-shot (and full fine-tuning where the preset allows) with the same "
                                "backbone, data, budget, seed and decoding; write results/NAME/report.md, "
                                "report.json and PNG plots. Needs: pip install -e '.[bench]'.")
    bench.add_argument("--preset", default="cpu-quick", help="cpu-quick (SmolLM2-135M, CPU), gpu, paper "
                       "(Li & Liang's GPT-2 medium setting; needs the Hub), tiny (smoke test) (default: cpu-quick)")
    bench.add_argument("--dataset", choices=["webnlg", "e2e"], help="override the preset's dataset")
    bench.add_argument("--steps", type=int, help="override the preset's training steps")
    bench.add_argument("--limit", type=int, help="override the number of evaluation entries")
    bench.add_argument("--methods", nargs="+", help="run only these of: kg2text-prefix kg2text-prompt "
                       "kg2text-prefix-hidden peft-prefix peft-prompt zero-shot full-ft (default: the preset's)")
    bench.add_argument("--speed", type=Path, metavar="RUN",
                       help="instead of the quality comparison: decoding (4 settings) and training speed of kg2text, "
                       "the baseline (transformers' generate) and PEFT on this trained run, median of --repeats "
                       "alternated runs, with this CPU's measured GEMM ceiling and memory read rate and how close each "
                       "decode and training run to them; writes results/speed/")
    bench.add_argument("--repeats", type=int, default=3, help="--speed: alternated repeats (default: 3)")
    bench.add_argument("--inputs", type=int, default=64,
                       help="--speed: WebNLG test prompts decoded at batch 32, a quarter of them at batch 1 "
                       "(default: 64)")
    bench.add_argument("--name", help="report folder name under --results (default: PRESET-DATASET)")
    bench.add_argument("--results", type=Path, default=Path("results"), help="where reports go (default: results)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "prefix", False) is None:  # generate/evaluate/serve without --prefix: the shipped one
        args.prefix = [DEFAULT_PREFIX]
    try:
        from kg2text import commands

        return getattr(commands, f"run_{args.command}")(args)
    except UserError as err:
        print(f"kg2text: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        print(f"kg2text: interrupted{'; ' + str(interrupt) if str(interrupt) else ''}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
