#!/usr/bin/env bash
# Training tokens/s of the shipped prefix's recipe without and with extra `kg2text train` flags, alternated on this
# machine (machine states differ between runs, so a training option is only measured against the recipe in one run):
#   bash scripts/ab_train_flags.sh "FLAGS" [STEPS] [REPEATS]      e.g. bash scripts/ab_train_flags.sh --share-prompts
# Each run: SmolLM2-135M, the recipe (bf16 backbone, --compile, 40 positions, batch 8, lr 5e-4), STEPS steps; tokens/s
# counts the examples' own tokens from step 20 on (compiling and warm-up excluded). Prints one line per run and the
# medians; the run folders stay in runs/ab-flags/.
set -euo pipefail
cd "$(dirname "$0")/.."
FLAGS=$1 STEPS=${2:-80} REPEATS=${3:-2}
RECIPE="--backbone smollm2-135m --dataset webnlg --max-steps $STEPS --batch-size 8 --lr 5e-4 --warmup-steps 50
        --dtype bfloat16 --compile --prefix-length 40 --log-every 10 --checkpoint-every 0"
mkdir -p runs/ab-flags
for repeat in $(seq "$REPEATS"); do
  for side in recipe flags; do
    out=runs/ab-flags/$side-$repeat
    rm -rf "$out"
    # shellcheck disable=SC2086  # the recipe and FLAGS are word lists
    kg2text train $RECIPE --output "$out" $([ $side = flags ] && echo "$FLAGS") > "$out.log" 2>&1
    python - "$out/train_log.jsonl" "$repeat" "$side" <<'PY'
import json, sys
log = [json.loads(line) for line in open(sys.argv[1])]
start, end = next(e for e in log if e["step"] == 20), log[-1]
rate = (end["tokens"] - start["tokens"]) / (end["elapsed_s"] - start["elapsed_s"])
steps = (end["step"] - start["step"]) / (end["elapsed_s"] - start["elapsed_s"])
print(f"ab: repeat {sys.argv[2]} {sys.argv[3]} {rate:.1f} tokens/s {steps * 60:.1f} steps/min "
      f"losses {[e['loss'] for e in log[1::2]]}")
PY
  done
done | tee runs/ab-flags/lines
python - runs/ab-flags/lines "$FLAGS" <<'PY'
import statistics, sys
lines = [l.split() for l in open(sys.argv[1])]
old = statistics.median(float(l[4]) for l in lines if l[3] == "recipe")
new = statistics.median(float(l[4]) for l in lines if l[3] == "flags")
print(f"ab: median tokens/s recipe {old:.1f}, with {sys.argv[2]} {new:.1f} ({new / old:.2f}x)")
PY
