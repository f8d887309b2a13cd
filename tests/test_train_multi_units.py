"""The parts of multi-process training that need no second process: who takes which rows, what the
launcher's environment says, and the settings several processes refuse or change."""

from __future__ import annotations

import pytest

from lorekit.errors import LorekitError
from lorekit.train.distributed import World, eval_shares, from_env, shares

GROUPS = [
    [[0, 1, 2, 3], [4, 5, 6, 7]],  # 2 micro-batches: whole ones for 2 processes
    [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10]],  # 3 for 2 processes: split row by row
    [[0, 1, 2]],  # a last step of one micro-batch
    [[0], [1, 2, 3, 4]],  # a 1-row micro-batch: some process has no row of it
]


@pytest.mark.parametrize("size", [2, 3, 4])
@pytest.mark.parametrize("parallel", ["ddp", "fsdp"])
def test_every_row_of_a_step_runs_once_on_some_process(size, parallel):
    for group in GROUPS:
        per_rank = [shares(group, World(size, rank, parallel=parallel)) for rank in range(size)]
        counted = sorted(i for pieces in per_rank for p in pieces if p.weight for i in p.rows)
        assert counted == sorted(i for mb in group for i in mb), (group, size)
        # the same number of pieces everywhere: the stop flag is agreed on before each one
        assert len({len(pieces) for pieces in per_rank}) == 1
        for pieces in per_rank:
            for p in pieces:
                assert set(p.rows) <= set(p.prefix_of) and p.prefix_of in group  # the whole micro-batch's prompt
        if parallel == "fsdp":  # lockstep: piece k of every process comes from micro-batch k
            for k in range(len(group)):
                assert {tuple(pieces[k].prefix_of) for pieces in per_rank} == {tuple(group[k])}


def test_whole_micro_batches_when_they_divide_evenly():
    group = GROUPS[0]
    assert [p.rows for p in shares(group, World(2, 0))] == [[0, 1, 2, 3]]
    assert [p.rows for p in shares(group, World(2, 1))] == [[4, 5, 6, 7]]
    assert [p.rows for p in shares(group, World(1, 0))] == group
    # FSDP splits every micro-batch so that all processes run the same calls at the same time
    assert [p.rows for p in shares(group, World(2, 1, parallel="fsdp"))] == [[1, 3], [5, 7]]


def test_eval_batches_are_shared_out():
    batches = [[0, 1], [2, 3], [4]]
    ddp = [[p.rows for p in eval_shares(batches, World(2, r))] for r in (0, 1)]
    assert ddp == [[[0, 1], [4]], [[2, 3]]]
    fsdp = [eval_shares(batches, World(2, r, parallel="fsdp")) for r in (0, 1)]
    assert sorted(i for pieces in fsdp for p in pieces if p.weight for i in p.rows) == [0, 1, 2, 3, 4]
    assert all(len(pieces) == 3 for pieces in fsdp)


def test_world_from_the_launchers_environment(monkeypatch):
    for var in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert from_env() == World(1, 0, 0) and from_env().main
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("LOCAL_RANK", "3")
    world = from_env("fsdp")
    assert (world.size, world.rank, world.local_rank, world.main, world.lockstep) == (4, 3, 3, False, True)


@pytest.mark.torch
def test_settings_that_several_processes_refuse_or_change():
    from lorekit.train.config import TrainConfig
    from lorekit.train.recipe import _check_world

    two = World(2, 0)
    assert _check_world(TrainConfig(backend="auto"), World(1, 0), cuda=False).backend == "auto"
    assert _check_world(TrainConfig(backend="auto"), two, cuda=False).backend == "transformers"
    with pytest.raises(LorekitError, match="unsloth trains on one GPU only"):
        _check_world(TrainConfig(backend="unsloth"), two, cuda=False)
    fsdp = World(2, 1, parallel="fsdp")
    with pytest.raises(LorekitError, match='optimizer = "adamw"'):
        _check_world(TrainConfig(optimizer="adamw_8bit", parallel="fsdp"), fsdp, cuda=False)
    changed = _check_world(TrainConfig(parallel="fsdp"), fsdp, cuda=False)
    assert (changed.optimizer, changed.load_in_4bit) == ("adamw", False)
