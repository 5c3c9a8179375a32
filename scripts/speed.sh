#!/usr/bin/env bash
# The speed benchmark behind results/speed/: `kg2text benchmark --speed` (about 17 minutes on 2 cores) on the
# main job's committed SmolLM2-135M WebNLG prefix (results/main-job; RUN=another run folder to change it):
# kg2text's decoding loop (fp32, bf16, fp16 weights, int8, int4) vs the baseline (transformers' generate) vs PEFT, 4 settings,
# alternated 3 times, median; training tokens/s; this CPU's GEMM ceiling.
set -euo pipefail
cd "$(dirname "$0")/.."
kg2text benchmark --speed "${RUN:-results/main-job}" --repeats "${REPEATS:-3}" --inputs "${INPUTS:-32}"
