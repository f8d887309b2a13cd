"""Checkpoints: whole tensors, written by rank 0, read by any number of processes.

A checkpoint folder holds the LoRA weights (`adapter.safetensors`), the best ones so far
(`best.safetensors`), the optimizer, scheduler and random states (`trainer.pt`, with one random state
per process when there were several) and the `State` (`state.json`), taken at an optimizer-step
boundary. Under FSDP the shards are made whole before writing and cut again on reading, so the format
is the same for one process, DDP and FSDP.
"""

from __future__ import annotations

import json
import logging
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from lorekit.atomic import replace_dir
from lorekit.train import distributed
from lorekit.train.distributed import SOLO, World

log = logging.getLogger(__name__)


@dataclass
class State:
    """Where the run is; saved in every checkpoint."""

    step: int = 0
    epoch: int = 0
    group: int = 0  # next optimizer-step group inside the epoch
    tokens: int = 0
    best_eval: float | None = None
    best_step: int = 0
    evals: list = field(default_factory=list)  # [step, train_loss_since_last_eval, eval_loss]
    overfit_warned: bool = False
    wall_s: float = 0.0
    since_eval: list = field(default_factory=list)  # train losses since the last eval
    eval_rows: int = -1  # how many eval rows the run scores (-1: a checkpoint from before this was kept)


def trainable_state(model) -> dict[str, torch.Tensor]:
    """Whole copies of the trainable tensors, on the CPU (under FSDP every process must call it)."""
    return {n: distributed.full(p.detach()).to("cpu", copy=True).contiguous()
            for n, p in model.named_parameters() if p.requires_grad}


def load_trainable_state(model, tensors: dict[str, torch.Tensor]) -> None:
    """Copy whole tensors into the model's parameters (before any FSDP sharding)."""
    params = dict(model.named_parameters())
    for name, value in tensors.items():
        params[name].data.copy_(value.to(params[name].device, params[name].dtype))


def rng_state() -> dict:
    state = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(folder: Path, model, optimizer, scheduler, state: State, rng: dict, best: dict | None,
                    world: World = SOLO) -> None:
    """Rank 0 writes whole tensors, so any number of processes can resume; the others wait until it is on
    disk (a process that left early would make the launcher stop the writer)."""
    from safetensors.torch import save_file

    adapter = trainable_state(model) if world.main or world.lockstep else {}
    blob = {"optimizer": distributed.full_optimizer_state(optimizer) if world.lockstep else optimizer.state_dict(),
            "scheduler": scheduler.state_dict(), "rng": rng}
    ranks = distributed.gather(rng, world)
    if world.size > 1:
        blob["rng_ranks"] = ranks
    if world.main:
        with replace_dir(folder) as tmp:
            save_file(adapter, str(tmp / "adapter.safetensors"))
            if best is not None:
                save_file(best, str(tmp / "best.safetensors"))
            torch.save(blob, tmp / "trainer.pt")
            (tmp / "state.json").write_text(json.dumps(asdict(state), indent=1), encoding="utf-8")
        log.info("checkpoint saved at step %d in %s", state.step, folder)
    distributed.barrier(world)


@dataclass
class Checkpoint:
    adapter: dict
    trainer: dict
    state: State
    best: dict | None


def read_checkpoint(folder: Path) -> Checkpoint:
    from safetensors.torch import load_file

    best = load_file(str(folder / "best.safetensors")) if (folder / "best.safetensors").exists() else None
    return Checkpoint(load_file(str(folder / "adapter.safetensors")),
                      torch.load(folder / "trainer.pt", weights_only=False),
                      State(**json.loads((folder / "state.json").read_text(encoding="utf-8"))), best)


def rng_for(ckpt: Checkpoint, world: World, seed: int) -> dict:
    """This process's random state on resume: its own if the checkpoint has one per process of this many,
    else rank 0's, the other ranks then re-seeded apart (dropout masks differ from the first run then)."""
    ranks = ckpt.trainer.get("rng_ranks")
    if ranks and len(ranks) == world.size:
        return ranks[world.rank]
    if world.rank:
        torch.manual_seed(seed * 1_000_003 + ckpt.state.step * 1_009 + world.rank)
        return {**rng_state(), "python": ckpt.trainer["rng"]["python"]}
    return ckpt.trainer["rng"]
