#!/usr/bin/env bash
# horovodrun with the Gloo controller (Horovod from launch/install_horovod.sh).
# Edit: NP, HOSTS (e.g. "node1:4,node2:4"; needs password-less ssh), CONFIG.
# Horovod's own fp16 compression: --compression fp16.
set -euo pipefail
NP=${NP:-2}
CONFIG=${CONFIG:-configs/squeezenet_vs_alexnet.yaml}
HOSTS=${HOSTS:-localhost:$NP}
exec horovodrun -np "$NP" -H "$HOSTS" --gloo \
    python -m dist_sqz train --config "$CONFIG" --backend horovod "$@"
