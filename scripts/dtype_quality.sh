#!/usr/bin/env bash
# What each decoding --dtype costs in quality: the shipped WebNLG prefix on the same evenly spaced WebNLG dev entries
# (LIMIT, default 300), beam 5, batch 32, once per backbone format (DTYPES, default float32, the reference; bfloat16;
# int8; int4) into OUT/DTYPE/ (OUT default results/speed/dtype-dev); then a table of their BLEU in OUT/table.md.
# At batch 32 the packed formats multiply by their dequantized weights (in bf16 or fp32, whichever this CPU
# multiplies faster): the same grid as their batch-1 kernels. Resumable: a scored format is skipped. About 3-5
# minutes a format on 2 cores.
#   bash scripts/dtype_quality.sh
#   OUT=results/speed/dtype-dev-zen1 DTYPES="float32 float16" bash scripts/dtype_quality.sh   # another machine's pair
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-results/speed/dtype-dev}
LIMIT=${LIMIT:-300}
DTYPES=${DTYPES:-float32 bfloat16 int8 int4}
for dtype in $DTYPES; do
  if [ -f "$OUT/$dtype/scores.json" ]; then continue; fi
  kg2text evaluate --dataset webnlg --split dev --limit "$LIMIT" --num-beams 5 --batch-size 32 --dtype "$dtype" \
      --output "$OUT/$dtype"
done
python - "$OUT" $DTYPES <<'PY' | tee "$OUT/table.md"
import json, sys
from pathlib import Path
print("| --dtype | challenge BLEU | sacrebleu BLEU | chrF++ | coverage |\n|---|---:|---:|---:|---:|")
for dtype in sys.argv[2:]:
    s = json.loads((Path(sys.argv[1]) / dtype / "scores.json").read_text())
    print(f"| {dtype} | {s['scores_challenge']['all']['bleu']:.2f} | {s['scores']['all']['bleu']:.2f} | "
          f"{s['chrf++']:.2f} | {s['entity_coverage']:.2f} |")
PY
