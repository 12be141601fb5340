#!/usr/bin/env bash
# One machine, N workers, torch.distributed DDP (gloo on CPU; nccl on GPUs).
# Edit: NPROC (workers = GPUs or CPU processes), CONFIG, and BACKEND (nccl on GPUs).
# Extra train flags pass through: launch/torchrun_single.sh --steps 50 --compression fp16
set -euo pipefail
NPROC=${NPROC:-2}
CONFIG=${CONFIG:-configs/squeezenet_vs_alexnet.yaml}
BACKEND=${BACKEND:-gloo}
exec torchrun --standalone --nproc-per-node "$NPROC" \
    -m dist_sqz train --config "$CONFIG" --backend "$BACKEND" "$@"
