#!/usr/bin/env bash
# Several machines: run this once on every node, with the same MASTER_ADDR and JOB_ID.
# Edit: NNODES, NPROC (workers per node), MASTER_ADDR (a host every node can reach; node 0
# serves the c10d rendezvous there), MASTER_PORT, CONFIG, BACKEND (nccl on GPUs).
# Elastic: MAX_RESTARTS restarts failed workers, which resume from checkpoints/last.pt when
# the config sets checkpoint_every.
set -euo pipefail
NNODES=${NNODES:-2}
NPROC=${NPROC:-1}
MASTER_ADDR=${MASTER_ADDR:?set MASTER_ADDR to the address of node 0}
MASTER_PORT=${MASTER_PORT:-29400}
JOB_ID=${JOB_ID:-dist_sqz}
CONFIG=${CONFIG:-configs/squeezenet_vs_alexnet.yaml}
BACKEND=${BACKEND:-gloo}
exec torchrun --nnodes "$NNODES" --nproc-per-node "$NPROC" \
    --rdzv-backend c10d --rdzv-endpoint "$MASTER_ADDR:$MASTER_PORT" --rdzv-id "$JOB_ID" \
    --max-restarts "${MAX_RESTARTS:-0}" \
    -m dist_sqz train --config "$CONFIG" --backend "$BACKEND" "$@"
