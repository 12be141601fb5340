"""Every launcher's environment, translated in one place to (rank, world_size, local_rank).

torchrun sets RANK/WORLD_SIZE/LOCAL_RANK; Open MPI's mpirun sets OMPI_COMM_WORLD_*; MPICH and
Intel MPI set PMI_RANK/PMI_SIZE; horovodrun sets HOROVOD_*; srun sets SLURM_PROCID/NTASKS.
With none of them the run is a single worker.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from dist_sqz.errors import UsageError

# Workers on this host, by launcher.
_LOCAL_SIZE_VARS = (
    "LOCAL_WORLD_SIZE",
    "HOROVOD_LOCAL_SIZE",
    "OMPI_COMM_WORLD_LOCAL_SIZE",
    "MPI_LOCALNRANKS",
    "SLURM_NTASKS_PER_NODE",
)

# (launcher, rank var, world-size var, local-rank var), first match wins.
_LAUNCHERS = (
    ("torchrun", "RANK", "WORLD_SIZE", "LOCAL_RANK"),
    ("horovodrun", "HOROVOD_RANK", "HOROVOD_SIZE", "HOROVOD_LOCAL_RANK"),
    ("openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"),
    ("pmi", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID"),
    ("slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),
)


@dataclass(frozen=True)
class LaunchEnv:
    launcher: str
    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _int(env: Mapping[str, str], var: str, default: int | None = None) -> int:
    raw = env.get(var)
    if raw is None or raw == "":
        if default is None:
            raise UsageError(f"environment variable {var} is not set")
        return default
    try:
        return int(raw)
    except ValueError:
        raise UsageError(f"environment variable {var}={raw!r} is not an integer") from None


def rank_hint(env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """(rank, local rank) as the launcher set them, (0, 0) alone; never raises (for error
    reporting, which must work even when the environment is what is wrong)."""
    env = os.environ if env is None else env
    for _, rvar, _, lvar in _LAUNCHERS:
        rank = env.get(rvar, "")
        if rank.isdigit():
            local = env.get(lvar, "")
            return int(rank), int(local) if local.isdigit() else int(rank)
    return 0, 0


def is_main_process() -> bool:
    return rank_hint()[0] == 0


def launch_env(env: Mapping[str, str] | None = None) -> LaunchEnv:
    """Read rank, world size, local rank and the rendezvous address from the launcher."""
    env = os.environ if env is None else env
    launcher, rank, world, local = "single", 0, 1, 0
    for name, rvar, wvar, lvar in _LAUNCHERS:
        if rvar in env and wvar in env:
            launcher = name
            rank, world = _int(env, rvar), _int(env, wvar)
            local = _int(env, lvar, default=rank)
            break
    if world < 1:
        raise UsageError(f"world size must be >= 1, got {world} from the {launcher} environment")
    if not 0 <= rank < world:
        raise UsageError(
            f"rank {rank} is outside world size {world} (from the {launcher} environment); "
            "check the launcher's process count",
            rank=rank,
        )
    port = _int(env, "MASTER_PORT", default=29500)
    if not 0 < port < 65536:
        raise UsageError(f"MASTER_PORT={port} is not a valid TCP port")
    return LaunchEnv(
        launcher=launcher,
        rank=rank,
        world_size=world,
        local_rank=local,
        master_addr=env.get("MASTER_ADDR", "127.0.0.1"),
        master_port=port,
        local_world_size=next(
            (_int(env, v) for v in _LOCAL_SIZE_VARS if env.get(v, "").isdigit()), 1
        ),
    )


def share_cpu_threads(env: LaunchEnv) -> int:
    """Give each of this host's workers its share of the cores, as torchrun does by default
    (OMP_NUM_THREADS=1): mpirun and horovodrun set nothing, and N workers with all cores each
    thrash (Horovod's step time was 80x slower that way). An explicit OMP_NUM_THREADS wins."""
    if "OMP_NUM_THREADS" in os.environ or env.local_world_size <= 1:
        return torch.get_num_threads()
    n = max(1, (os.cpu_count() or 1) // env.local_world_size)
    torch.set_num_threads(n)
    return n
