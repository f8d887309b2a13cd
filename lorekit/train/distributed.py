"""Training in several processes of one machine, one per GPU, started by `torchrun` (or `accelerate launch`).

    torchrun --nproc-per-node 2 -m lorekit train build

The launcher sets RANK, WORLD_SIZE and LOCAL_RANK; `from_env` reads them. Every process loads the model
and the rows and computes the same batch plan (`loop.Plan.step_groups`); `shares` hands each process its
part of every optimizer step, so the global batch and the data order are those of one process. Gradients
are summed over the processes by torch's DistributedDataParallel (`parallel = "ddp"`, the model copied to
every GPU) or FullyShardedDataParallel 2 (`parallel = "fsdp"`, the model sharded across them). Only rank 0
writes (metrics, checkpoints, the adapter); checkpoints hold whole tensors, so a run resumes on any number
of processes. On the CPU the processes talk through gloo (that is how the tests run it).
"""

from __future__ import annotations

import atexit
import contextlib
import os
from dataclasses import dataclass
from typing import Any

PARALLEL = ("ddp", "fsdp")


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (one process: size 1, rank 0)."""

    size: int = 1
    rank: int = 0
    local_rank: int = 0
    parallel: str = "ddp"  # "ddp" | "fsdp"; only matters when size > 1

    @property
    def main(self) -> bool:
        """Rank 0: the one process that prints, logs metrics and writes files."""
        return self.rank == 0

    @property
    def lockstep(self) -> bool:
        """FSDP gathers each layer's weights in every forward: all processes must run the same forwards,
        with the same shapes of calls (a shared prompt or not), at the same time."""
        return self.size > 1 and self.parallel == "fsdp"


SOLO = World()


def from_env(parallel: str = "ddp") -> World:
    """The World that torchrun / accelerate launch describe in the environment (no torch import)."""
    size = int(os.environ.get("WORLD_SIZE", "1") or 1)
    rank = int(os.environ.get("RANK", "0") or 0)
    local = int(os.environ.get("LOCAL_RANK", str(rank)) or 0)
    return World(size=size, rank=rank, local_rank=local, parallel=parallel)


_CONTROL: Any = None  # gloo group for small host-side messages (the stop flag, sums); None: the default


def join(world: World, cuda: bool) -> None:
    """Join the process group (once per process; nothing to do in one process): NCCL between GPUs, gloo
    on the CPU, plus a gloo group for the flags that are read on the host every micro-batch. The group
    stays for later runs in the same process (joining again after leaving is not reliable in torch) and
    is left when the process exits."""
    global _CONTROL
    if world.size == 1:
        return
    import torch
    import torch.distributed as dist

    if cuda:
        torch.cuda.set_device(world.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
        _CONTROL = dist.new_group(backend="gloo") if cuda else None
        atexit.register(leave)


def leave() -> None:
    global _CONTROL
    import sys

    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        _CONTROL = None
        dist.destroy_process_group()


# ---- who takes which rows --------------------------------------------------------------------------------

@dataclass
class Piece:
    """Rows one process runs through the model at once."""

    rows: list[int]  # row indices
    prefix_of: list[int]  # the micro-batch whose shared system prompt these rows use
    weight: float = 1.0  # 0: a stand-in that only keeps the processes in step; its loss is not counted


def shares(group: list[list[int]], world: World) -> list[Piece]:
    """This process's part of one optimizer step (`group`: its micro-batches of row indices).

    Whole micro-batches when they divide evenly among the processes (each GPU then runs the batch shape of
    one GPU); otherwise every micro-batch is split row by row, its shared prompt still taken over the whole
    micro-batch, so each row's loss and gradient are what one process computes. Every process gets the same
    number of pieces (stand-ins of weight 0 fill the gaps): the stop flag is agreed on before each piece."""
    size, rank = world.size, world.rank
    if size == 1:
        return [Piece(mb, mb) for mb in group]
    if not world.lockstep and len(group) % size == 0:
        return [Piece(mb, mb) for mb in group[rank::size]]
    pieces = [Piece(mb[rank::size], mb) for mb in group if mb[rank::size]]
    if world.lockstep:  # in step with the others on every micro-batch, same prompt sharing
        pieces = [Piece(mb[rank::size], mb) if mb[rank::size] else Piece(mb[:1], mb, 0.0) for mb in group]
    while len(pieces) < len(group):
        pieces.append(Piece(group[0][:1], group[0], 0.0))
    return pieces


def eval_shares(batches: list[list[int]], world: World) -> list[Piece]:
    """This process's part of the eval batches: whole batches (DDP), or each batch split (FSDP lockstep)."""
    if world.size == 1:
        return [Piece(b, b) for b in batches]
    if not world.lockstep:
        return [Piece(b, b) for b in batches[world.rank::world.size]]
    return shares(batches, world)


# ---- collectives on the host -----------------------------------------------------------------------------

def agree(flag: bool, world: World) -> bool:
    """True on every process if it is True on any (a Ctrl-C that reached only some of them)."""
    if world.size == 1:
        return flag
    import torch
    import torch.distributed as dist

    t = torch.tensor([1 if flag else 0], dtype=torch.int32)
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=_CONTROL)
    return bool(t.item())


def total(values: list[float], world: World) -> list[float]:
    """Element-wise sums over the processes (float64, on the host)."""
    if world.size == 1:
        return values
    import torch
    import torch.distributed as dist

    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, group=_CONTROL)
    return t.tolist()


def gather(obj: Any, world: World) -> list[Any]:
    """Every process's `obj`, in rank order, on every process."""
    if world.size == 1:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * world.size
    dist.all_gather_object(out, obj, group=_CONTROL)
    return out


def barrier(world: World) -> None:
    if world.size > 1:
        import torch.distributed as dist

        dist.barrier(group=_CONTROL)


# ---- the model across processes --------------------------------------------------------------------------

def wrap(module, world: World, cuda: bool, bf16: bool):
    """`module` (a loss module over the LoRA model) made data parallel; itself in one process."""
    if world.size == 1:
        return module
    if world.parallel == "fsdp":
        return _fully_shard(module, world, cuda, bf16)
    import inspect

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    # Every process seeded the LoRA init alike; broadcast rank 0's anyway, and only the trainable tensors
    # (DDP's own start-up sync would also send the frozen 4-bit base weights, which every process loaded).
    for p in module.parameters():
        if p.requires_grad:
            dist.broadcast(p.data, src=0)
    # Buffers (rotary tables, scales) are alike everywhere: no sync before each forward, none at the start.
    known = inspect.signature(DistributedDataParallel).parameters
    options = {"forward_sync_buffers" if "forward_sync_buffers" in known else "broadcast_buffers": False}
    if "init_sync" in known:
        options["init_sync"] = False
    return DistributedDataParallel(module, device_ids=[world.local_rank] if cuda else None, **options)


def _fully_shard(module, world: World, cuda: bool, bf16: bool):
    """FSDP2: each decoder layer one unit, the rest (embeddings, norm, output layer) the root unit."""
    import torch
    from torch.distributed.device_mesh import init_device_mesh

    try:
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard
    except ImportError:
        from lorekit.errors import LorekitError

        raise LorekitError(f'parallel = "fsdp" needs torch >= 2.6 (FSDP2), this is {torch.__version__}; '
                           'upgrade torch or set parallel = "ddp" in [train]') from None

    mesh = init_device_mesh("cuda" if cuda else "cpu", (world.size,))
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 and cuda \
        else MixedPrecisionPolicy()
    for layer in decoder_layers(module):
        fully_shard(layer, mesh=mesh, mp_policy=policy)
    fully_shard(module, mesh=mesh, mp_policy=policy)
    return module


def decoder_layers(module) -> list:
    """The transformer blocks of the text decoder (Gemma3DecoderLayer, Gemma4TextDecoderLayer, ...)."""
    return [m for m in module.modules() if type(m).__name__.endswith("DecoderLayer")]


def sync_gradients(forward, world: World, sync: bool) -> contextlib.AbstractContextManager:
    """Accumulate this backward locally (sync False) or sum it over the processes (the step's last one)."""
    if world.lockstep:
        forward.set_requires_gradient_sync(sync)
        return contextlib.nullcontext()
    if world.size == 1 or sync:
        return contextlib.nullcontext()
    return forward.no_sync()


def inner(forward):
    """The module without DDP around it (eval runs no backward, so it needs no gradient hooks)."""
    return getattr(forward, "module", forward) if type(forward).__name__ == "DistributedDataParallel" else forward


# ---- whole tensors in checkpoints --------------------------------------------------------------------------

def full(t):
    """A whole tensor from an FSDP shard, a DTensor (every process must call this, in the same order);
    else `t` itself."""
    return t.full_tensor() if hasattr(t, "full_tensor") else t


def full_optimizer_state(optimizer) -> dict:
    """`optimizer.state_dict()` with every shard made whole: the same format as one process writes."""
    sd = optimizer.state_dict()
    sd["state"] = {k: {name: full(v) for name, v in sd["state"][k].items()} for k in sorted(sd["state"])}
    return sd


def local_optimizer_state(sd: dict, optimizer) -> dict:
    """A whole-tensor optimizer state cut to the shards this process holds (FSDP); unchanged otherwise."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    if not any(hasattr(p, "device_mesh") for p in params):
        return sd
    from torch.distributed.tensor import distribute_tensor

    state = {}
    for k, entry in sd["state"].items():
        p = params[int(k)]
        if hasattr(p, "device_mesh"):
            entry = {name: distribute_tensor(v.to(p.device), p.device_mesh, p.placements, src_data_rank=None)
                     if hasattr(v, "shape") and tuple(v.shape) == tuple(p.shape) else v
                     for name, v in entry.items()}
        state[k] = entry
    return {**sd, "state": state}
