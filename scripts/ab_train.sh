#!/usr/bin/env bash
# Training tokens/s of two commits side by side on this machine, alternated (machine states differ between
# runs and sessions, so a change to the training loop is only measured against its parent in one run):
#   bash scripts/ab_train.sh OLD NEW [DTYPE] [STEPS] [REPEATS]     e.g. bash scripts/ab_train.sh 88bed7d HEAD bfloat16
# Each repeat runs kg2text's loop (kg2text.speed._kg2text_training: SmolLM2-135M, batch 8, full WebNLG train,
# the first step not counted) at each commit, checked out into a temporary worktree. Prints one line per run
# and the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=$1 NEW=$2 DTYPE=${3:-bfloat16} STEPS=${4:-20} REPEATS=${5:-3}
source scripts/ab_worktrees.sh
for repeat in $(seq "$REPEATS"); do
  for side in old new; do
    (cd "$TMP" && PYTHONPATH="$TMP/$side" python -c "
from kg2text.speed import _kg2text_training
rate, loss = _kg2text_training('smollm2-135m', $STEPS, 8, '$DTYPE')
print(f'ab: repeat $repeat $side {rate:.1f} tokens/s mean loss {loss:.4f}')" 2>/dev/null | grep '^ab:')
  done
done | tee "$TMP/lines"
python - "$TMP/lines" "$OLD" "$NEW" <<'PY'
import statistics, sys
lines = [l.split() for l in open(sys.argv[1])]
old = statistics.median(float(l[4]) for l in lines if l[3] == "old")
new = statistics.median(float(l[4]) for l in lines if l[3] == "new")
print(f"ab: median tokens/s {sys.argv[2]} {old:.1f}, {sys.argv[3]} {new:.1f} ({new / old:.2f}x)")
PY
