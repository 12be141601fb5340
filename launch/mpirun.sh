#!/usr/bin/env bash
# mpirun (Open MPI from `pip install -e '.[mpi]'`), N processes.
# BACKEND=mpi: mpi4py with bucketed non-blocking all-reduce. BACKEND=gloo: torch DDP with
# rank/world size from Open MPI's environment (MASTER_ADDR must be rank 0's host when the
# job spans machines).
# Preemption: Open MPI's mpirun kills its ranks right after it forwards SIGTERM, so this
# script passes a SIGTERM or SIGINT it receives on to mpirun as SIGUSR1, which mpirun only
# forwards: every rank stops after its current step with a checkpoint (exit 138), and
# `--resume RUN_DIR` continues. (Under Slurm, `#SBATCH --signal=B:USR1@120` does the same.)
# Edit: NP, HOSTS (e.g. "node1:4,node2:4" for several machines), CONFIG, BACKEND.
set -uo pipefail
NP=${NP:-2}
CONFIG=${CONFIG:-}
case " $* " in
*" --resume "*) ;;  # a resumed run keeps its own config unless CONFIG is set
*) CONFIG=${CONFIG:-configs/squeezenet_vs_alexnet.yaml} ;;
esac
BACKEND=${BACKEND:-mpi}
HOSTS=${HOSTS:-}
if [ "$(id -u)" = 0 ]; then export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1; fi
mpirun -np "$NP" ${HOSTS:+--host "$HOSTS"} --oversubscribe \
    -x MASTER_ADDR="${MASTER_ADDR:-127.0.0.1}" -x MASTER_PORT="${MASTER_PORT:-29500}" \
    python -m dist_sqz train ${CONFIG:+--config "$CONFIG"} --backend "$BACKEND" "$@" &
pid=$!
trap 'kill -USR1 "$pid" 2>/dev/null' TERM INT
wait "$pid"
rc=$?
while kill -0 "$pid" 2>/dev/null; do  # a trapped signal ends `wait` early
    wait "$pid"
    rc=$?
done
exit "$rc"
