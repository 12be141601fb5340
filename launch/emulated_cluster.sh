#!/usr/bin/env bash
# K emulated hosts on this machine (network namespaces, shaped links; root), one worker each,
# as a torchrun multi-node job. Wire bytes per step come from each host's interface.
# Edit: HOSTS, LINK (e.g. 100mbit, 1gbit), CONFIG.
set -euo pipefail
HOSTS=${HOSTS:-3}
LINK=${LINK:-1gbit}
CONFIG=${CONFIG:-configs/squeezenet_vs_alexnet.yaml}
exec dist-sqz cluster run --hosts "$HOSTS" --link "$LINK" -- \
    -m dist_sqz train --config "$CONFIG" "$@"
