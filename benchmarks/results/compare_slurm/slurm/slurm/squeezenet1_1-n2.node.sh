#!/bin/bash
# One node of a dist-sqz compare row (written by dist_sqz/compare/slurm.py).
node_addr() { scontrol show node "$1" | sed -n 's/.*NodeAddr=\([^ ]*\).*/\1/p'; }
head=$(scontrol show hostnames "$SLURM_STEP_NODELIST" | head -n1)
head_addr=$(node_addr "$head" | head -n1); head_addr=${head_addr:-$head}
my_addr=$(node_addr "$SLURMD_NODENAME" | head -n1); my_addr=${my_addr:-$SLURMD_NODENAME}
is_host=$([ "$SLURMD_NODENAME" = "$head" ] && echo 1 || echo 0)
port=$(( 20000 + (SLURM_JOB_ID * 7 + SLURM_STEP_ID) % 20000 ))
exec /root/.pyenv/versions/3.11.7/bin/python -m torch.distributed.run --nnodes=$SLURM_STEP_NUM_NODES --nproc-per-node=1 --rdzv-backend=c10d --rdzv-endpoint="$head_addr:$port" --rdzv-id="$SLURM_JOB_ID.$SLURM_STEP_ID" --local-addr="$my_addr" --rdzv-conf="is_host=$is_host" --max-restarts=0 -m dist_sqz train --config benchmarks/results/compare_slurm/slurm/configs/squeezenet1_1-n2.yaml
