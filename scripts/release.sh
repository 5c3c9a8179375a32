#!/usr/bin/env bash
# The prefixes shipped in kg2text/prefixes/: SmolLM2-135M prefix tuning trained for a wall-clock budget on
# this CPU (WebNLG train, 60 minutes; E2E dev, the only E2E split here, 8 minutes), saved in fp16, then scored on
# the full test sets with beam 5 (fp32 decoding, the reference). Beside them, the anchor: PEFT's prefix tuning
# trained with the same data, budget and schedule (kg2text train --trainer peft) and scored by the same decoder
# and metrics. Resumable: run it again after an interruption and each kg2text training continues from its last
# checkpoint (a PEFT run, which has no checkpoints, starts again); finished steps are skipped.
#   WEBNLG_MINUTES=60 E2E_MINUTES=8 bash scripts/release.sh
# WebNLG trains with a bf16 backbone where bf16 matrix multiplies measure faster than fp32 ones on this CPU
# (measured once here, as `kg2text train --dtype auto` does; fp32 elsewhere, or set WEBNLG_DTYPE): at an equal
# budget it gave more steps and higher BLEU (the explore stage's bf16-10min, and the fp32 pair below); a BF16 flag
# alone is not enough (an Intel Xeon without AMX exposed trained bf16 at 0.76x fp32). The prefix itself trains in
# fp32 and decoding stays fp32. E2E's 8-minute runs train in fp32 (bf16 not measured there).
# Stage "pairs" (bash scripts/release.sh pairs): the earlier recipes' WebNLG pairs (kg2text and PEFT) on the
# full test, 40 minutes each: bf16 backbone (40min/, shipped before the 60-minute prefix) and fp32 (fp32/).
# Stage "rerank" (bash scripts/release.sh rerank, after the main stage): the main pair's WebNLG prefixes on the
# full test again with --rerank (of the 5 finished beams, the one that mentions the most entities), in rerank/.
# Stage "amx" (bash scripts/release.sh amx): the recipe with --compile (the backbone's MLPs and norms compiled) for
# 60 minutes, and its PEFT anchor with the same settings, in amx60/ (and decoded with --rerank, in rerank/amx60/): run
# on an Intel Xeon with AMX, where bf16 training is fastest.
# Stage "p40" (bash scripts/release.sh p40): the recipe with the prefix length the GPU sweep ranked first on WebNLG
# dev (scripts/gpu_sweep.sh, scripts/sweep_score.sh: 40 virtual tokens) and --compile, 60 minutes on this CPU, on
# the full test, in p40/ (and decoded with --rerank, in rerank/p40/); it is the shipped WebNLG prefix (full test
# +0.91 BLEU-A over the AMX run's); then its PEFT anchor with the same settings (40 positions), in p40/peft-webnlg/
# (and decoded with --rerank, in rerank/p40/peft-webnlg/).
# Stage "control" (bash scripts/release.sh control): the shipped prefix's recipe plus control prefixes (--method
# control: 2 positions per WebNLG category behind the 40 shared ones, control.py; second on dev in the GPU sweep),
# 60 minutes on this CPU, on the full test, in control40/ (and decoded with --rerank, in rerank/control40/).
# Stage "b4" (bash scripts/release.sh b4): the shipped prefix's recipe with half the batch (4) at lr 3.5e-4 (5e-4 over
# sqrt 2), 60 minutes on this CPU, on the full test, in b4/ (and decoded with --rerank, in rerank/b4/).
# Stage "shared" (bash scripts/release.sh shared): the shipped prefix's recipe with --share-prompts (the sentences of
# one input in a batch share one pass over its prompt: about 1.2x the sentences a minute), 60 minutes on this CPU,
# on the full test, in shared/ (and decoded with --rerank, in rerank/shared/).
# Stage "average" (bash scripts/release.sh average): the shipped prefix's recipe once more, every checkpoint kept
# (scripts/average_probe.py); the mean of the trained tensor over the run's last 10/20/30/50% of time (as
# `kg2text train --average-last F` saves it) and the last step scored on 300 WebNLG dev entries; the best of them
# on the full test in averaged/ (and decoded with --rerank, in rerank/averaged/), the last step in average/.
# Stage "avg40" (bash scripts/release.sh avg40): the shipped prefix's recipe with --average-last 0.3 itself (the share
# best on dev in the average stage), on the full test in avg40/ (and decoded with --rerank, in rerank/avg40/), and the
# same run's last step (OUTPUT/last-step/, a run folder of its own by score_averaged) on the full test, in avg40-last/.
# Stage "ctlavg" (bash scripts/release.sh ctlavg): the two best plain changes together, control prefixes (the control
# stage) and --average-last 0.3 (the avg40 stage), 60 minutes on this CPU; scored by score_averaged as avg40 is, in
# ctlavg/, rerank/ctlavg/ and ctlavg-last/.
# Stage "ctlhi" (bash scripts/release.sh ctlhi): the ctlavg stage at --lr 7e-4 instead of 5e-4: the run sees each
# sentence about once, so a faster schedule may learn more of it, and the mean over the last 30% damps the noise a
# higher rate adds; scored as ctlavg is, in ctlhi/, rerank/ctlhi/ and ctlhi-last/.
# Stage "e2e-average" (bash scripts/release.sh e2e-average): the E2E recipe above with --average-last 0.3, its saved
# mean on the full E2E test, in e2e-average/ (and decoded with --rerank, in rerank/e2e-average/), and its last step, in
# e2e-average-last/; the shipped E2E prefix (the mean beat its last step and the E2E prefix shipped before on every
# score).
# Stage "e2e-shared" (bash scripts/release.sh e2e-shared): the E2E recipe with --share-prompts
# (E2E dev has 8.5 sentences an input), on the full E2E test, in e2e-shared/.
# Stage "e2e40" (bash scripts/release.sh e2e40): the shipped WebNLG prefix's recipe (40 positions, --compile, the
# WebNLG backbone dtype) on E2E dev for E2E's 8 minutes, and its PEFT anchor trained the same way, on the full E2E
# test, in e2e40/.
# Stage "ensemble" (bash scripts/release.sh ensemble): decoding with two prefixes at once (--ensemble: each token by
# their mean next-token probability): the shipped prefix's recipe trained twice for 30 minutes (p40-30min of the
# explore stage and p40-30min-seed2, --seed 43: 60 minutes of training in all), in ensemble/2x30min/, on the
# exploration's slice and on the full test; the shipped prefix with the avg40 stage's (two 60-minute runs, 120 minutes
# of training), in ensemble/2x60min/, on the slice and on the full test (plain and with --rerank).
# Stage "ctlavg2" (bash scripts/release.sh ctlavg2): the ctlavg stage's recipe again with another seed (--seed 43: the
# examples' order and the prefix's initialisation), 60 minutes on this CPU; its mean on the full test, in ctlavg2/
# (and decoded with --rerank, in rerank/ctlavg2/): the best recipe of one run, run twice. Stage "ctlavg3" (bash
# scripts/release.sh ctlavg3): the same with --seed 44, in ctlavg3/ and rerank/ctlavg3/: the recipe's third run.
# Stage "explore" (bash scripts/release.sh explore): the recipe's neighbours at short budgets and the recipe at
# 10 and 20 minutes (the curve, with each backbone dtype; and the shipped prefix's recipe, p40, at 10, 20, 30, 40),
# each scored on the same evenly spaced slice of WebNLG test (EXPLORE_LIMIT entries, beam 5); the full-test runs are
# scored on that slice from their sentences, and two short runs on the full test (full-20min, full-40min).
set -euo pipefail
cd "$(dirname "$0")/.."
WEBNLG_MINUTES=${WEBNLG_MINUTES:-60}
E2E_MINUTES=${E2E_MINUTES:-8}
RUNS=${RUNS:-runs/release}
AVERAGE_LAST=${AVERAGE_LAST:-0.1 0.2 0.3 0.5}
OUT=${OUT:-results/release}
WEBNLG_DTYPE=${WEBNLG_DTYPE:-$(python -c "import torch; from kg2text.backbones import load_backbone
from kg2text.hardware import faster_training_dtype
print(faster_training_dtype(load_backbone('smollm2-135m').model.config, torch.device('cpu'))[0])")}
# the shipped WebNLG prefix's recipe (stage p40) beside train's and train_peft's common settings; the 60-minute
# WebNLG stages after it each change one thing of it
P40_RECIPE=(--dataset webnlg --warmup-steps 50 --dtype "$WEBNLG_DTYPE" --compile --prefix-length 40)

train() {  # NAME MINUTES ARGS...: train once; resume an interrupted run
  local name=$1 minutes=$2
  shift 2
  if [ -f "$RUNS/$name/prefix.safetensors" ]; then return; fi
  if [ -f "$RUNS/$name/latest_checkpoint" ]; then
    kg2text train --output "$RUNS/$name" --resume
  else
    rm -rf "$RUNS/$name"
    kg2text train --backbone smollm2-135m --max-minutes "$minutes" --batch-size 8 --lr 5e-4 \
        --save-dtype float16 --checkpoint-every 50 --log-every 10 --output "$RUNS/$name" "$@"
  fi
}

train_peft() {  # NAME MINUTES ARGS...: the PEFT anchor with the same settings
  local name=$1 minutes=$2
  shift 2
  if [ -f "$RUNS/$name/prefix.safetensors" ]; then return; fi
  rm -rf "$RUNS/$name"
  kg2text train --trainer peft --backbone smollm2-135m --max-minutes "$minutes" --batch-size 8 --lr 5e-4 \
      --save-dtype float16 --log-every 10 --output "$RUNS/$name" "$@"
}

score() {  # NAME DATASET [FOLDER DECODING-ARGS...]: the full test split, beam 5, into $OUT/FOLDER/NAME
  local out="$OUT/${3:+$3/}$1"
  if [ -f "$out/scores.json" ]; then return; fi
  kg2text evaluate --prefix "$RUNS/$1" --dataset "$2" --split test --num-beams 5 --batch-size 32 --output "$out" \
      "${@:4}"
  # the prefix (fp16: 226 KiB at 10 positions, 901 KiB at 40) beside its scores: runs/ stays on the machine that
  # trained it, and a later decoding setting (e.g. --rerank for an anchor) needs the prefix, not its sentences
  cp "$RUNS/$1/config.json" "$RUNS/$1/train_log.jsonl" "$RUNS/$1/prefix.safetensors" "$out/"
}

check_peft() {  # NAME: PEFT's own generate on 16 of the entries says what kg2text's decoder said
  if [ -f "$OUT/$1/peft_decode_check.json" ]; then return; fi
  python scripts/check_peft_decode.py "$RUNS/$1" "$OUT/$1" --limit 16
}

averaged_stage() {  # FOLDER ARGS...: the shipped prefix's recipe with ARGS and --average-last 0.3, 60 minutes,
  # scored by score_averaged; then the report
  train "$1/webnlg" 60 "${P40_RECIPE[@]}" "${@:2}" --average-last 0.3
  score_averaged "$1" webnlg
  python scripts/release_report.py "$OUT"
}

score_averaged() {  # FOLDER TASK: an --average-last run on TASK's full test: its mean plain and with --rerank, and
  # its last step (OUTPUT/last-step/) made a run folder of its own, FOLDER-last/TASK, with the run's config and log
  # beside the tensor, so it scores and reports like any run
  local run="$RUNS/$1/$2" last="$RUNS/$1-last/$2"
  if [ ! -d "$last" ]; then
    mkdir -p "$last.tmp"
    cp "$run/config.json" "$run/train_log.jsonl" "$run/last-step/prefix.safetensors" "$last.tmp/"
    mv "$last.tmp" "$last"
  fi
  score "$1/$2" "$2"
  score "$1-last/$2" "$2"
  score "$1/$2" "$2" rerank --rerank
}

explore() {  # NAME MINUTES ARGS...: a WebNLG run at a short budget, scored on the test slice
  local name=$1
  if [ -f "$OUT/$EXPLORE/$name/scores.json" ]; then return; fi  # scored already: not trained again
  train "$EXPLORE/$name" "$2" --dataset webnlg --warmup-steps 50 "${@:3}"
  kg2text evaluate --prefix "$RUNS/$EXPLORE/$name" --dataset webnlg --split test --limit "$EXPLORE_LIMIT" \
      --num-beams 5 --batch-size 32 --output "$OUT/$EXPLORE/$name"
  cp "$RUNS/$EXPLORE/$name/config.json" "$RUNS/$EXPLORE/$name/train_log.jsonl" "$OUT/$EXPLORE/$name/"
}

full_test() {  # NAME MINUTES: an explore run on the full WebNLG test, beam 5, into $OUT/full-MINUTESmin
  local out="$OUT/full-${2}min"
  if [ -f "$out/scores.json" ]; then return; fi
  kg2text evaluate --prefix "$RUNS/$EXPLORE/$1" --dataset webnlg --split test --num-beams 5 --batch-size 32 \
      --output "$out"
  cp "$RUNS/$EXPLORE/$1/config.json" "$RUNS/$EXPLORE/$1/train_log.jsonl" "$out/"
}

members() {  # NAME RUN...: the runs an ensemble decodes, copied (prefix, config, log) into $OUT/ensemble/NAME/member-K,
  # so that its decodes and report need only results/
  local k=0
  for run in "${@:2}"; do
    k=$((k + 1))
    local dest="$OUT/ensemble/$1/member-$k"
    if [ -f "$dest/prefix.safetensors" ]; then continue; fi
    mkdir -p "$dest.tmp"
    cp "$run/config.json" "$run/train_log.jsonl" "$run/prefix.safetensors" "$dest.tmp/"
    mv "$dest.tmp" "$dest"
  done
}

decode_ensemble() {  # NAME FOLDER LIMIT [DECODING-ARGS...]: NAME's two members decoded together (--ensemble) on WebNLG
  # test, beam 5, LIMIT entries evenly spaced (0: all), into $OUT/ensemble/NAME/FOLDER
  local dir="$OUT/ensemble/$1" slice=()
  if [ -f "$dir/$2/scores.json" ]; then return; fi
  if [ "$3" != 0 ]; then slice=(--limit "$3"); fi
  kg2text evaluate --prefix "$dir/member-1" --ensemble "$dir/member-2" --dataset webnlg --split test "${slice[@]}" \
      --num-beams 5 --batch-size 32 --output "$dir/$2" "${@:4}"
}

pair() {  # FOLDER DTYPE: a 40-minute WebNLG pair (kg2text and PEFT) on the full test
  train "$1/webnlg" 40 --dataset webnlg --warmup-steps 50 --dtype "$2"
  train_peft "$1/peft-webnlg" 40 --dataset webnlg --warmup-steps 50 --dtype "$2"
  score "$1/webnlg" webnlg
  score "$1/peft-webnlg" webnlg
  check_peft "$1/peft-webnlg"
}

if [ "${1:-}" = pairs ]; then
  pair 40min bfloat16
  pair fp32 float32
  python scripts/release_report.py "$OUT"
  exit 0
fi

if [ "${1:-}" = rerank ]; then
  score webnlg webnlg rerank --rerank
  score peft-webnlg webnlg rerank --rerank
  python scripts/release_report.py "$OUT"
  exit 0
fi

if [ "${1:-}" = amx ]; then  # the recipe with --compile, 60 minutes (run on an AMX Xeon), on the full test
  train amx60/webnlg 60 --dataset webnlg --warmup-steps 50 --dtype "$WEBNLG_DTYPE" --compile
  score amx60/webnlg webnlg
  train_peft amx60/peft-webnlg 60 --dataset webnlg --warmup-steps 50 --dtype "$WEBNLG_DTYPE" --compile
  score amx60/peft-webnlg webnlg
  check_peft amx60/peft-webnlg
  score amx60/webnlg webnlg rerank --rerank
  score amx60/peft-webnlg webnlg rerank --rerank
  python scripts/release_report.py "$OUT"
  exit 0
fi

if [ "${1:-}" = p40 ]; then
  train p40/webnlg 60 "${P40_RECIPE[@]}"
  score p40/webnlg webnlg
  score p40/webnlg webnlg rerank --rerank
  cp "$RUNS/p40/webnlg/prefix.safetensors" kg2text/prefixes/webnlg.safetensors  # the shipped one since it scored best
  train_peft p40/peft-webnlg 60 "${P40_RECIPE[@]}"
  score p40/peft-webnlg webnlg
  check_peft p40/peft-webnlg
  score p40/peft-webnlg webnlg rerank --rerank
  python scripts/release_report.py "$OUT"
  exit 0
fi

if [ "${1:-}" = control ]; then
  train control40/webnlg 60 "${P40_RECIPE[@]}" --method control
  score control40/webnlg webnlg
  score control40/webnlg webnlg rerank --rerank
  python scripts/release_report.py "$OUT"
  exit 0
fi

if [ "${1:-}" = b4 ]; then
  train b4/webnlg 60 "${P40_RECIPE[@]}" --batch-size 4 --lr 3.5e-4
  score b4/webnlg webnlg
  score b4/webnlg webnlg rerank --rerank
  python scripts/release_report.py "$OUT"
  exit 0
fi

if [ "${1:-}" = shared ]; then
  train shared/webnlg 60 "${P40_RECIPE[@]}" --share-prompts
  score shared/webnlg webnlg
  score shared/webnlg webnlg rerank --rerank
  python scripts/release_report.py "$OUT"
  exit 0
fi

if [ "${1:-}" = average ]; then
  python scripts/average_probe.py train "$RUNS/average/webnlg"  # the p40 recipe, every checkpoint kept
  python scripts/average_probe.py average "$RUNS/average/webnlg" --last $AVERAGE_LAST
  for name in webnlg $(for f in $AVERAGE_LAST; do echo "webnlg-avg$f"; done); do  # chosen on WebNLG dev, never test
    if [ ! -f "$OUT/average-dev/$name/scores.json" ]; then
      kg2text evaluate --prefix "$RUNS/average/$name" --dataset webnlg --split dev --limit 300 --num-beams 5 \
          --batch-size 32 --output "$OUT/average-dev/$name"
    fi
  done
  best=$(python -c "import json, pathlib
scores = {p.parent.name: json.loads(p.read_text())['scores_challenge']['all']['bleu']
          for p in pathlib.Path('$OUT/average-dev').glob('*/scores.json')}
print(max(sorted(scores), key=scores.get))")
  if [ ! -d "$RUNS/averaged/webnlg" ]; then
    mkdir -p "$RUNS/averaged" && cp -r "$RUNS/average/$best" "$RUNS/averaged/webnlg.tmp"
    mv "$RUNS/averaged/webnlg.tmp" "$RUNS/averaged/webnlg"
  fi
  score averaged/webnlg webnlg  # the average best on dev (or the last step, where none beat it)
  score average/webnlg webnlg  # the same run's last step
  score averaged/webnlg webnlg rerank --rerank
  python scripts/release_report.py "$OUT"
  exit 0
fi

if [ "${1:-}" = avg40 ]; then  # --average-last itself in a 60-minute WebNLG run
  averaged_stage avg40
  exit 0
fi

if [ "${1:-}" = ctlavg ]; then  # control prefixes and --average-last together
  averaged_stage ctlavg --method control
  exit 0
fi

if [ "${1:-}" = ctlavg2 ] || [ "${1:-}" = ctlavg3 ]; then  # the ctlavg stage's recipe with seed 43 / 44
  train "$1/webnlg" 60 "${P40_RECIPE[@]}" --method control --average-last 0.3 --seed $((41 + ${1#ctlavg}))
  score "$1/webnlg" webnlg
  score "$1/webnlg" webnlg rerank --rerank
  python scripts/release_report.py "$OUT"
  exit 0
fi

if [ "${1:-}" = ctlhi ]; then  # the ctlavg stage with a faster schedule
  averaged_stage ctlhi --method control --lr 7e-4
  exit 0
fi

if [ "${1:-}" = e2e-average ]; then  # --average-last itself in a real run: the E2E recipe with it
  train e2e-average/e2e "$E2E_MINUTES" --dataset e2e --split dev --warmup-steps 20 --average-last 0.3
  score_averaged e2e-average e2e
  cp "$RUNS/e2e-average/e2e/prefix.safetensors" kg2text/prefixes/e2e.safetensors  # the shipped one: it scored best
  python scripts/release_report.py "$OUT"
  exit 0
fi

if [ "${1:-}" = e2e-shared ]; then
  train e2e-shared/e2e "$E2E_MINUTES" --dataset e2e --split dev --warmup-steps 20 --share-prompts
  score e2e-shared/e2e e2e
  python scripts/release_report.py "$OUT"
  exit 0
fi

if [ "${1:-}" = e2e40 ]; then
  train e2e40/e2e "$E2E_MINUTES" --dataset e2e --split dev --warmup-steps 20 --dtype "$WEBNLG_DTYPE" --compile \
      --prefix-length 40
  score e2e40/e2e e2e
  train_peft e2e40/peft-e2e "$E2E_MINUTES" --dataset e2e --split dev --warmup-steps 20 --dtype "$WEBNLG_DTYPE" \
      --compile --prefix-length 40
  score e2e40/peft-e2e e2e
  python scripts/release_report.py "$OUT"
  exit 0
fi

if [ "${1:-}" = ensemble ]; then
  EXPLORE=explore EXPLORE_LIMIT=${EXPLORE_LIMIT:-400}
  # the curve's 30-minute point again with another seed: two 30-minute runs are the 60-minute budget
  explore p40-30min-seed2 30 --dtype bfloat16 --compile --prefix-length 40 --seed 43
  members 2x30min "$RUNS/explore/p40-30min" "$RUNS/explore/p40-30min-seed2"
  members 2x60min "$OUT/p40/webnlg" "$OUT/avg40/webnlg"  # the shipped prefix and the avg40 stage's: 120 minutes
  decode_ensemble 2x30min slice "$EXPLORE_LIMIT"
  decode_ensemble 2x60min slice "$EXPLORE_LIMIT"
  decode_ensemble 2x60min test 0
  decode_ensemble 2x60min test-rerank 0 --rerank
  decode_ensemble 2x30min test 0
  python scripts/release_report.py "$OUT"
  exit 0
fi

if [ "${1:-}" = explore ]; then
  EXPLORE=explore EXPLORE_LIMIT=${EXPLORE_LIMIT:-400}
  explore recipe-10min 10 --dtype float32  # recipe-*: the recipe before bf16 (fp32 backbone)
  explore words-10min 10 --dtype float32 --format webnlg-words
  explore bf16-10min 10 --dtype bfloat16
  explore control-10min 10 --dtype bfloat16 --method control  # + 2 positions per WebNLG category (control.py)
  explore lr1e-3-10min 10 --dtype bfloat16 --lr 1e-3  # a faster schedule (BLEU follows the steps closely)
  explore p20-10min 10 --dtype bfloat16 --prefix-length 20  # twice Li & Liang's prefix
  explore p40-20min 20 --dtype bfloat16 --compile --prefix-length 40  # p40-*: the shipped prefix's recipe (curve)
  explore p80-20min 20 --dtype bfloat16 --compile --prefix-length 80  # twice its length, beside it
  explore p40-30min 30 --dtype bfloat16 --compile --prefix-length 40  # the curve's 30- and 40-minute points
  explore p40-40min 40 --dtype bfloat16 --compile --prefix-length 40
  explore p40-words-40min 40 --dtype bfloat16 --compile --prefix-length 40 --format webnlg-words  # beside it
  explore p40-10min 10 --dtype bfloat16 --compile --prefix-length 40
  explore p40-b4-10min 10 --dtype bfloat16 --compile --prefix-length 40 --batch-size 4 --lr 3.5e-4  # half the batch
  explore recipe-20min 20 --dtype float32
  explore bf16-20min 20 --dtype bfloat16
  full_test bf16-20min 20
  full_test p40-40min 40
  python scripts/release_report.py "$OUT"
  exit 0
fi

train webnlg "$WEBNLG_MINUTES" --dataset webnlg --warmup-steps 50 --dtype "$WEBNLG_DTYPE"
train e2e "$E2E_MINUTES" --dataset e2e --split dev --warmup-steps 20
score webnlg webnlg
score e2e e2e
train_peft peft-webnlg "$WEBNLG_MINUTES" --dataset webnlg --warmup-steps 50 --dtype "$WEBNLG_DTYPE"
train_peft peft-e2e "$E2E_MINUTES" --dataset e2e --split dev --warmup-steps 20
score peft-webnlg webnlg
check_peft peft-webnlg
score peft-e2e e2e
python scripts/release_report.py "$OUT"
mkdir -p kg2text/prefixes
cp "$RUNS/webnlg/prefix.safetensors" kg2text/prefixes/webnlg.safetensors
cp "$RUNS/e2e/prefix.safetensors" kg2text/prefixes/e2e.safetensors
ls -l kg2text/prefixes/
