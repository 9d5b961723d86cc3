#!/usr/bin/env bash
# GPU check: on a machine with a CUDA GPU and the project installed, runs the GPU parts of the
# benchmark (a few minutes) and prints the figures; JSON goes to ${1:-bench/results}.
set -euo pipefail
cd "$(dirname "$0")/.."
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv || true
export PYTHONUNBUFFERED=1
python3 -m bench.gpu_check --out "${1:-bench/results}"
# print sizes: coarse to fine against one scale, each precision (bench/coarse_to_fine.py); at
# 2048 px two pairs, whose sheets are the ones to look at (a CPU runs them only capped)
for size in 1024 2048 4096; do
    pairs=(tubingen:starry_night)
    [ "$size" = 2048 ] && pairs+=(golden_gate:the_scream)
    for precision in fp32 bf16; do
        python3 -m bench.coarse_to_fine --device cuda --precision "$precision" --size "$size" \
            --pairs "${pairs[@]}" --out "${1:-bench/results}"
    done
done
# the L-BFGS step, compact form against the two-loop recursion, per history size
exec python3 -m bench.lbfgs_cost --device cuda --out "${1:-bench/results}"
