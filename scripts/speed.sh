#!/usr/bin/env bash
# The speed benchmark behind results/speed/: trains the short-budget SmolLM2-135M WebNLG prefix it decodes
# with (the main job's settings, about 6 minutes on 2 cores), then `kg2text benchmark --speed` (about 25
# minutes): kg2text's decoding loop vs the baseline (transformers' generate) vs PEFT, and training tokens/s.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${RUN:-runs/speed-prefix}
if [ ! -f "$RUN/prefix.safetensors" ]; then
  kg2text train --backbone smollm2-135m --dataset webnlg --max-steps 60 --batch-size 8 --lr 5e-4 \
      --warmup-steps 5 --output "$RUN"
fi
kg2text benchmark --speed "$RUN" --repeats "${REPEATS:-3}"
