#!/usr/bin/env bash
# Compares the tensor-core forward's tiles and reduction splits
# (csrc/cuda/conv2d_forward_mma.h, forced with CONV_EXT_MMA_TILE and
# CONV_EXT_MMA_SPLITS) on a GPU: one `python -m bench` run per combination
# and configuration, bf16 channels_last forward, results in
# bench/results/gpu_tile_<tile>_s<splits>_<config>.json (commit them). Needs
# a built extension (bench/gpu_check.sh builds one).
#
#   bash bench/gpu_tile_sweep.sh
#   COMBOS="128x64:1 64x64:2" CONFIGS="n8:--batch=8" bash bench/gpu_tile_sweep.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
RESULTS=bench/results
COMBOS=${COMBOS:-128x64:1 128x64deep:1 128x128:1 64x64:1 128x64:2 128x64:4 64x64:2}
read -r -a CONFIG_LIST <<< "${CONFIGS:-n32:--batch=32 n8:--batch=8}"
for config in "${CONFIG_LIST[@]}"; do
  name=${config%%:*}
  args=${config#*:}
  for combo in $COMBOS; do
    tile=${combo%%:*}
    splits=${combo#*:}
    echo "== tile $tile, splits $splits, $name"
    CONV_EXT_MMA_TILE=$tile CONV_EXT_MMA_SPLITS=$splits $PY -m bench --device cuda \
        --suite ${SWEEP_SUITES:-resnet50} --dtype bfloat16 --channels-last --pass forward \
        --no-plot --no-baseline2 --rounds ${SWEEP_ROUNDS:-3} ${args//=/ } --out "$RESULTS" \
        --tag "gpu_tile_${tile}_s${splits}_${name}" 2>&1 | grep -A2 "^suite "
  done
done
