"""Rank, local rank and world size are read from the launcher's environment."""
from __future__ import annotations

import pytest

from labfolio.distributed import (
    DistributedInfo,
    distributed_info,
    is_main_process,
    local_rank,
    process_rank,
    world_size,
)


def test_without_a_launcher_the_process_is_rank_0_of_1():
    assert distributed_info({}) == DistributedInfo(0, 0, 1, None)
    assert is_main_process({})


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "8"}, (3, 1, 8, "RANK")),
        ({"SLURM_PROCID": "5", "SLURM_LOCALID": "1", "SLURM_NTASKS": "8"},
         (5, 1, 8, "SLURM_PROCID")),
        ({"OMPI_COMM_WORLD_RANK": "2", "OMPI_COMM_WORLD_LOCAL_RANK": "0",
          "OMPI_COMM_WORLD_SIZE": "4"}, (2, 0, 4, "OMPI_COMM_WORLD_RANK")),
        ({"PMI_RANK": "1", "MPI_LOCALRANKID": "1", "PMI_SIZE": "2"}, (1, 1, 2, "PMI_RANK")),
    ],
)
def test_each_launcher_family_is_understood(environ, expected):
    info = distributed_info(environ)
    assert (info.rank, info.local_rank, info.world_size, info.rank_source) == expected
    assert process_rank(environ) == expected[0]
    assert local_rank(environ) == expected[1]
    assert world_size(environ) == expected[2]
    assert not is_main_process(environ)


def test_torchrun_inside_slurm_uses_torchrun_rank():
    # srun starts one torchrun per node (SLURM_PROCID=1 on node 2); torchrun sets RANK per worker.
    environ = {"SLURM_PROCID": "1", "SLURM_NTASKS": "2", "RANK": "4", "LOCAL_RANK": "0",
               "WORLD_SIZE": "8", "SLURM_LOCALID": "0"}
    assert distributed_info(environ) == DistributedInfo(4, 0, 8, "RANK")


def test_empty_variable_counts_as_unset():
    assert distributed_info({"RANK": "", "SLURM_PROCID": "2"}).rank == 2
    assert distributed_info({"RANK": "  "}).rank == 0


@pytest.mark.parametrize(("name", "value"), [("RANK", "zero"), ("LOCAL_RANK", "-1"),
                                             ("WORLD_SIZE", "0")])
def test_malformed_variable_is_refused_with_its_name(name, value):
    with pytest.raises(ValueError, match=name):
        distributed_info({name: value})


def test_default_environment_is_the_process_environment(monkeypatch):
    for name in ("RANK", "SLURM_PROCID", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "PMI_RANK",
                 "MV2_COMM_WORLD_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert is_main_process()
    monkeypatch.setenv("RANK", "1")
    assert process_rank() == 1 and not is_main_process()


def test_info_serialises_to_a_plain_dict():
    info = distributed_info({"RANK": "0", "WORLD_SIZE": "2"})
    assert info.is_main
    assert info.as_dict() == {"rank": 0, "local_rank": 0, "world_size": 2, "rank_source": "RANK"}
