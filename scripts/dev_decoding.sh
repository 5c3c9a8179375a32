#!/usr/bin/env bash
# Decoding settings for the shipped WebNLG prefix, chosen on WebNLG dev (never on test): the same evenly spaced
# dev entries (LIMIT, default 300; dev holds the seen categories only) decoded with beam 5 and each setting, into
# results/release/dev-decoding/NAME/; then the full WebNLG test decoded once, with the setting best on dev
# (challenge BLEU), into results/release/dev-chosen/webnlg/, and the release report. Needs no training: it
# decodes the prefix shipped in the package. Resumable: a scored setting is skipped. About 2-5 minutes a dev
# setting and 20 minutes for test on 2 cores.
#   bash scripts/dev_decoding.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=results/release/dev-decoding  # the report reads report.DEV_DECODING_DIR
LIMIT=${LIMIT:-300}

run() {  # NAME DECODING-ARGS...
  local name=$1
  shift
  if [ -f "$OUT/$name/scores.json" ]; then return; fi
  kg2text evaluate --dataset webnlg --split dev --limit "$LIMIT" --num-beams 5 --batch-size 32 \
      --output "$OUT/$name" "$@"
}

run base
run lp0.6 --length-penalty 0.6
run lp1.5 --length-penalty 1.5
run lp2.0 --length-penalty 2.0
run lp3.0 --length-penalty 3.0
run rerank --rerank
run lp1.5-rerank --length-penalty 1.5 --rerank
run lp2.0-rerank --length-penalty 2.0 --rerank
run nr3 --no-repeat-ngram 3

CHOSEN=results/release/dev-chosen/webnlg
if [ ! -f "$CHOSEN/scores.json" ]; then
  read -r -a BEST < <(python -c "
from pathlib import Path
from kg2text.report import dev_decoding_rows
best = dev_decoding_rows(Path('$OUT').parent)[0]
print('--length-penalty', best['length_penalty'], *(['--rerank'] if best['rerank'] else []),
      *(['--no-repeat-ngram', best['no_repeat_ngram']] if best['no_repeat_ngram'] else []))")
  kg2text evaluate --dataset webnlg --split test --num-beams 5 --batch-size 32 --output "$CHOSEN" "${BEST[@]}"
  cp results/release/amx60/webnlg/config.json results/release/amx60/webnlg/train_log.jsonl "$CHOSEN/"  # its run
fi
python scripts/release_report.py results/release
