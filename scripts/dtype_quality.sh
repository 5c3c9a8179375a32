#!/usr/bin/env bash
# What each decoding --dtype costs in quality: the shipped WebNLG prefix on the same evenly spaced WebNLG dev entries
# (LIMIT, default 300), beam 5, batch 32, once per backbone format (float32, the reference; bfloat16; int8; int4),
# into results/speed/dtype-dev/DTYPE/; then a table of their BLEU. At batch 32 the packed formats multiply by their
# dequantized weights (in bf16 or fp32, whichever this CPU multiplies faster): the same grid as their batch-1 kernels. Resumable: a scored format is skipped. About
# 3-5 minutes a format on 2 cores.
#   bash scripts/dtype_quality.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=results/speed/dtype-dev
LIMIT=${LIMIT:-300}
for dtype in float32 bfloat16 int8 int4; do
  if [ -f "$OUT/$dtype/scores.json" ]; then continue; fi
  kg2text evaluate --dataset webnlg --split dev --limit "$LIMIT" --num-beams 5 --batch-size 32 --dtype "$dtype" \
      --output "$OUT/$dtype"
done
python - "$OUT" <<'PY' | tee "$OUT/table.md"
import json, sys
from pathlib import Path
print("| --dtype | challenge BLEU | sacrebleu BLEU | chrF++ | coverage |\n|---|---:|---:|---:|---:|")
for dtype in ("float32", "bfloat16", "int8", "int4"):
    s = json.loads((Path(sys.argv[1]) / dtype / "scores.json").read_text())
    print(f"| {dtype} | {s['scores_challenge']['all']['bleu']:.2f} | {s['scores']['all']['bleu']:.2f} | "
          f"{s['chrf++']:.2f} | {s['entity_coverage']:.2f} |")
PY
