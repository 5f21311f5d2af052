"""How long a rank waiting in a collective may sleep between polls (``_dist.poll_max``).

Pure logic over a given environment: no MPI.
"""

from __future__ import annotations

import pytest

from hpckpt._dist import poll_max


@pytest.mark.parametrize(
    "name", ["OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS", "PMI_LOCAL_SIZE"]
)
def test_short_sleeps_when_the_node_has_a_core_for_every_one_or_two_ranks(name: str) -> None:
    assert poll_max({name: "4"}, cores=2) == 5e-4
    assert poll_max({name: "2"}, cores=2) == 5e-4
    assert poll_max({name: "64"}, cores=64) == 5e-4


def test_long_sleeps_when_many_ranks_share_a_core_or_nothing_is_known() -> None:
    assert poll_max({"OMPI_COMM_WORLD_LOCAL_SIZE": "5"}, cores=2) == 2e-3
    assert poll_max({"OMPI_COMM_WORLD_LOCAL_SIZE": "64"}, cores=2) == 2e-3
    assert poll_max({}, cores=2) == 2e-3
    assert poll_max({"OMPI_COMM_WORLD_LOCAL_SIZE": "many"}, cores=2) == 2e-3
    assert poll_max({"OMPI_COMM_WORLD_LOCAL_SIZE": "0"}, cores=2) == 2e-3


def test_the_first_variable_that_is_a_number_decides() -> None:
    env = {"OMPI_COMM_WORLD_LOCAL_SIZE": "x", "MPI_LOCALNRANKS": "64", "PMI_LOCAL_SIZE": "1"}
    assert poll_max(env, cores=2) == 2e-3
