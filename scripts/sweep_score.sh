#!/usr/bin/env bash
# Scores the prefixes of a recipe sweep (scripts/gpu_sweep.sh) on WebNLG dev, never on test: the same evenly
# spaced dev entries as scripts/dev_decoding.sh (LIMIT, default 300), beam 5, into SWEEP/NAME/dev/, then keeps
# each run's settings, logs and scores under results/release/gpu-sweep/NAME/. Resumable: a scored run is skipped.
# About 3 minutes a run on 2 cores. Runs are scored in the order given (default: every run folder in SWEEP).
#   bash scripts/sweep_score.sh SWEEP [NAME...]
set -euo pipefail
cd "$(dirname "$0")/.."
SWEEP=${1:?usage: bash scripts/sweep_score.sh SWEEP [NAME...]}
shift
LIMIT=${LIMIT:-300}
KEEP=results/release/gpu-sweep
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  for run in "$SWEEP"/*/; do names+=("$(basename "$run")"); done
fi
for name in "${names[@]}"; do
  if [ ! -f "$SWEEP/$name/dev/scores.json" ]; then
    kg2text evaluate --prefix "$SWEEP/$name" --dataset webnlg --split dev --limit "$LIMIT" --num-beams 5 \
        --batch-size 32 --output "$SWEEP/$name/dev"
  fi
  mkdir -p "$KEEP/$name"
  cp "$SWEEP/$name/config.json" "$SWEEP/$name/train_log.jsonl" "$KEEP/$name/"
  cp -r "$SWEEP/$name/dev/." "$KEEP/$name/"
  if [ -f "$SWEEP/$name.log" ]; then  # gpu_sweep.sh's log: where the run trained and how long it took
    tr '\r' '\n' <"$SWEEP/$name.log" | grep -E '^(kg2text: training|saved prefix)' >"$KEEP/$name/train.txt" || true
  fi
done
