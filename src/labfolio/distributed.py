"""Which process of a distributed job this is, read from the launcher's environment.

labfolio never imports torch in its core, so it cannot ask ``torch.distributed``. Every common
launcher (torchrun, SLURM's srun, Open MPI's mpirun, MPICH/Intel MPI, MVAPICH) exports the
process's rank in an environment variable before the training script starts, which is also the
only moment labfolio needs it: at ``init``, to decide whether this process logs.
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = [
    "LOCAL_RANK_ENV_VARS",
    "RANK_ENV_VARS",
    "WORLD_SIZE_ENV_VARS",
    "DistributedInfo",
    "distributed_info",
    "is_main_process",
    "local_rank",
    "process_rank",
    "world_size",
]

# Order matters: torchrun launched from inside a SLURM or MPI allocation sets RANK for each worker
# while the outer launcher's variable (e.g. SLURM_PROCID) stays the same for all workers of a node,
# so the innermost launcher's variable must win.
RANK_ENV_VARS = (
    "RANK",  # torchrun, accelerate, deepspeed
    "SLURM_PROCID",  # srun
    "OMPI_COMM_WORLD_RANK",  # Open MPI
    "PMIX_RANK",  # PMIx-based launchers
    "PMI_RANK",  # MPICH, Intel MPI
    "MV2_COMM_WORLD_RANK",  # MVAPICH
)
LOCAL_RANK_ENV_VARS = (
    "LOCAL_RANK",
    "SLURM_LOCALID",
    "OMPI_COMM_WORLD_LOCAL_RANK",
    "MPI_LOCALRANKID",
    "MV2_COMM_WORLD_LOCAL_RANK",
)
WORLD_SIZE_ENV_VARS = (
    "WORLD_SIZE",
    "SLURM_NTASKS",
    "SLURM_NPROCS",
    "OMPI_COMM_WORLD_SIZE",
    "PMI_SIZE",
    "MV2_COMM_WORLD_SIZE",
)


@dataclass(frozen=True)
class DistributedInfo:
    """Where this process sits in its job; a plain single-process run is rank 0 of 1."""

    rank: int  # global rank across all nodes
    local_rank: int  # rank among the processes of this node (usually the GPU index)
    world_size: int  # number of processes in the job
    rank_source: str | None  # env var the rank was read from; None when no launcher set one

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def as_dict(self) -> dict:
        return {
            "rank": self.rank,
            "local_rank": self.local_rank,
            "world_size": self.world_size,
            "rank_source": self.rank_source,
        }


def _first_int(names: tuple[str, ...], environ: Mapping[str, str], *, minimum: int,
               default: int) -> tuple[int, str | None]:
    for name in names:
        raw = environ.get(name)
        if raw is None or raw.strip() == "":
            continue  # an exported-but-empty variable means "not set" to every launcher
        try:
            value = int(raw.strip())
        except ValueError:
            raise ValueError(
                f"environment variable {name}={raw!r} is not an integer; labfolio reads the "
                f"process rank from it. Unset {name} or set it to a whole number."
            ) from None
        if value < minimum:
            raise ValueError(
                f"environment variable {name}={raw!r} must be >= {minimum}; unset it or fix "
                f"the launcher that sets it."
            )
        return value, name
    return default, None


def distributed_info(environ: Mapping[str, str] | None = None) -> DistributedInfo:
    """Rank, local rank and world size from ``environ`` (default: ``os.environ``).

    Raises ValueError naming the variable when one is set but is not a usable integer.
    """
    env = os.environ if environ is None else environ
    rank, rank_source = _first_int(RANK_ENV_VARS, env, minimum=0, default=0)
    local, _ = _first_int(LOCAL_RANK_ENV_VARS, env, minimum=0, default=0)
    size, _ = _first_int(WORLD_SIZE_ENV_VARS, env, minimum=1, default=1)
    return DistributedInfo(rank=rank, local_rank=local, world_size=size, rank_source=rank_source)


def process_rank(environ: Mapping[str, str] | None = None) -> int:
    """Global rank of this process; 0 when no launcher set one."""
    return distributed_info(environ).rank


def local_rank(environ: Mapping[str, str] | None = None) -> int:
    """Rank of this process on its node; 0 when no launcher set one."""
    return distributed_info(environ).local_rank


def world_size(environ: Mapping[str, str] | None = None) -> int:
    """Number of processes in the job; 1 when no launcher set one."""
    return distributed_info(environ).world_size


def is_main_process(environ: Mapping[str, str] | None = None) -> bool:
    """True for global rank 0, the process that logs under DDP by default."""
    return process_rank(environ) == 0
