#!/usr/bin/env bash
# The prefixes shipped in kg2text/prefixes/: SmolLM2-135M prefix tuning trained for a wall-clock budget on
# this CPU (WebNLG train; E2E dev, the only E2E split here), saved in fp16, then scored on the full test sets
# with beam 5 (fp32 decoding, the reference). Resumable: run it again after an interruption and each
# training continues from its last checkpoint; finished steps are skipped.
#   WEBNLG_MINUTES=60 E2E_MINUTES=15 bash scripts/release.sh
set -euo pipefail
cd "$(dirname "$0")/.."
WEBNLG_MINUTES=${WEBNLG_MINUTES:-40}
E2E_MINUTES=${E2E_MINUTES:-8}
RUNS=${RUNS:-runs/release}
OUT=${OUT:-results/release}

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

score() {  # NAME DATASET: the full test split, beam 5
  if [ -f "$OUT/$1/scores.json" ]; then return; fi
  kg2text evaluate --prefix "$RUNS/$1" --dataset "$2" --split test --num-beams 5 --batch-size 32 --output "$OUT/$1"
  cp "$RUNS/$1/config.json" "$RUNS/$1/train_log.jsonl" "$OUT/$1/"
}

train webnlg "$WEBNLG_MINUTES" --dataset webnlg --warmup-steps 50
train e2e "$E2E_MINUTES" --dataset e2e --split dev --warmup-steps 20
score webnlg webnlg
score e2e e2e
mkdir -p kg2text/prefixes
cp "$RUNS/webnlg/prefix.safetensors" kg2text/prefixes/webnlg.safetensors
cp "$RUNS/e2e/prefix.safetensors" kg2text/prefixes/e2e.safetensors
ls -l kg2text/prefixes/
