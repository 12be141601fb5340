#!/usr/bin/env bash
# Installs Slurm's daemons and clients (Debian's slurm-wlm, 22.05 on bookworm) and munge, for
# the Slurm test cluster `dist-sqz cluster up --slurm` builds on emulated hosts. Idempotent:
# does nothing when sbatch, slurmctld, slurmd and munged are already here. Nothing is
# started or enabled: the test cluster runs its own daemons with its own config.
set -euo pipefail
if command -v sbatch >/dev/null && command -v slurmctld >/dev/null \
    && command -v slurmd >/dev/null && command -v munged >/dev/null; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "install_slurm.sh: no apt-get here; install slurm-wlm and munge with your package manager" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
# The packages' own services are not needed (and would hold the default ports).
for svc in slurmctld slurmd munge; do
    (command -v systemctl >/dev/null && systemctl disable --now "$svc" >/dev/null 2>&1) || true
done
