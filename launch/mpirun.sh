#!/usr/bin/env bash
# mpirun (Open MPI from `pip install -e '.[mpi]'`), N processes.
# BACKEND=mpi: mpi4py with bucketed non-blocking all-reduce. BACKEND=gloo: torch DDP with
# rank/world size from Open MPI's environment (MASTER_ADDR must be rank 0's host when the
# job spans machines).
# Edit: NP, HOSTS (e.g. "node1:4,node2:4" for several machines), CONFIG, BACKEND.
set -euo pipefail
NP=${NP:-2}
CONFIG=${CONFIG:-configs/squeezenet_vs_alexnet.yaml}
BACKEND=${BACKEND:-mpi}
HOSTS=${HOSTS:-}
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
exec mpirun -np "$NP" ${HOSTS:+--host "$HOSTS"} --oversubscribe \
    -x MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}" -x MASTER_PORT="${MASTER_PORT:-29500}" \
    python -m dist_sqz train --config "$CONFIG" --backend "$BACKEND" "$@"
