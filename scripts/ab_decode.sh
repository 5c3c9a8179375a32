#!/usr/bin/env bash
# Decoding sentences/s of two commits side by side on this machine, alternated input by input between two processes
# that keep their model loaded (scripts/ab_decode.py: machine states differ between runs and move within minutes, so
# a change to the decoding loop is only measured against its parent in one run, taking turns):
#   bash scripts/ab_decode.sh OLD NEW [DTYPE] [SETTING] [REPEATS]    e.g. bash scripts/ab_decode.sh a8c8a2a HEAD float16 b1-greedy 5
# SETTING is one of the speed benchmark's (b1-greedy, b32-greedy, b1-beam5, b32-beam5), on its prompts (kg2text.speed:
# the main job's prefix, 32 evenly spaced WebNLG test prompts; at batch 1 the first 16 of them, where
# `bash scripts/speed.sh` takes the first 8), at most 60 new tokens after one warm-up decode, by kg2text's loop in the
# backbone format DTYPE, at each commit checked out into a temporary worktree. Prints one line per run and side (a
# run: every input once; with a digest of the sentences, which must agree) and the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
OLD=$1 NEW=$2 DTYPE=${3:-float16} SETTING=${4:-b1-greedy} REPEATS=${5:-5}
ROOT=$(pwd)
source scripts/ab_worktrees.sh
python scripts/ab_decode.py "$TMP/old" "$TMP/new" "$DTYPE" "$SETTING" "$REPEATS" "$ROOT/results/main-job" "$OLD" "$NEW"
