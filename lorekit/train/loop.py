"""The training loop: plain PyTorch over a peft LoRA model, readable top to bottom.

One optimizer step = `grad_accum` micro-batches, the loss normalised by the trainable tokens of the
whole step. The output layer (262,144 words for Gemma) runs only at positions that have a label:
on chat rows that is a small fraction of the tokens, and it is most of the compute otherwise.

Resuming is exact: a checkpoint holds the LoRA weights, optimizer, scheduler, RNG states and the
position in the (seeded, per-epoch) data order, taken at an optimizer-step boundary.

In several processes (torchrun, see distributed.py) each one runs its share of every step through a
DDP or FSDP wrapper of `LossModule`; losses, eval sums and the stop flag are summed or agreed on over all
of them, so every process holds the same State, and only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import logging
import math
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from lorekit.errors import LorekitError
from lorekit.train import distributed
from lorekit.train.checkpoint import (
    State,
    load_trainable_state,
    read_checkpoint,
    rng_for,
    rng_state,
    save_checkpoint,
    set_rng_state,
    trainable_state,
)
from lorekit.train.data import IGNORE, Example, batch_order, collate, shared_prefix
from lorekit.train.distributed import SOLO, Piece, World

log = logging.getLogger(__name__)


@dataclass
class Plan:
    """What the loop needs to know, already resolved by the recipe."""

    epochs: float
    batch_size: int
    grad_accum: int
    lr: float
    warmup_ratio: float
    schedule: str
    weight_decay: float
    optimizer: str  # "adamw" | "adamw_8bit"
    bf16: bool
    max_steps: int
    eval_every: int
    log_every: int
    seed: int
    keep_best: bool
    pad_id: int
    last_lr: float = 0.0
    pad_multiple: int = 1
    share_prefix: bool = False
    eval_batch_size: int = 0  # 0: batch_size

    def step_groups(self, rows: list[Example], epoch: int) -> list[list[list[int]]]:
        """The optimizer steps of `epoch`, each a list of micro-batches of row indices (the same for the
        same seed and epoch, so a resumed run sees the same data)."""
        lengths = [len(e.input_ids) for e in rows]
        groups = [e.group for e in rows] if self.share_prefix else None
        batches = batch_order(lengths, self.batch_size, self.seed, epoch, True, groups)
        return [batches[i:i + self.grad_accum] for i in range(0, len(batches), self.grad_accum)]

    def epoch_steps(self, rows: list[Example], epoch: int) -> int:
        """Optimizer steps in `epoch`, counted from the batches `train` uses: with a shared system prompt a
        batch holds one NPC's rows only, so an epoch has more batches than rows / batch size."""
        return len(self.step_groups(rows, epoch))

    def total_steps(self, rows: list[Example]) -> int:
        whole = int(self.epochs)
        total = sum(self.epoch_steps(rows, e) for e in range(whole))
        if self.epochs > whole:  # a fractional last epoch
            total += math.ceil((self.epochs - whole) * self.epoch_steps(rows, whole))
        return min(total, self.max_steps) if self.max_steps else total


class Interrupted(Exception):
    """Training stopped on request (Ctrl-C); a checkpoint was saved."""


def masked_loss(model, batch: dict, bf16: bool) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy over labelled positions, and how many there were.

    With batch["prefix_len"] = P > 0, the P leading tokens that every row shares (the system prompt)
    run once, without gradient, and the rows continue from that cache. The loss is the same; LoRA
    just gets no gradient through the prompt's keys and values. On chat rows whose system prompt is
    most of the tokens, this is most of the CPU time saved.

    On a GPU the loss itself does not wait for the device: which positions carry a label is worked out
    from the batch's CPU tensors, and the inputs go over in pinned memory (a mask picked on the device
    made the host wait for the whole forward pass). The model's own waits remain (transformers' mask
    check, the per-layer lookup); on the H200 the E2B step took as long either way
    (bench/results/build_e2b_gpu.md, 2026-12-05).
    """
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    device = next(model.parameters()).device
    prefix = int(batch.get("prefix_len", 0))
    ids, mask = _to(batch["input_ids"], device), _to(batch["attention_mask"], device)
    labels = batch["labels"][:, prefix + 1:]
    keep = labels != IGNORE
    # flat positions of the labelled tokens in the decoder's (rows x columns) output: position t predicts t + 1
    width = ids.shape[1] - prefix
    rows, cols = keep.nonzero(as_tuple=True)
    n = len(rows)
    where, targets = _to(rows * width + cols, device), _to(labels[keep], device)
    with _autocast(device, bf16):
        if prefix:
            hidden = _hidden_after_prefix(causal.model, ids, mask, prefix)
        else:
            hidden = causal.model(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state
        logits = causal.lm_head(hidden.reshape(-1, hidden.shape[-1]).index_select(0, where))
    logits = logits.float()
    cap = getattr(causal.config.get_text_config(), "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return F.cross_entropy(logits, targets, reduction="sum"), n


def _to(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A CPU tensor on `device`; to a GPU through pinned memory, so the host does not wait for the copy."""
    if device.type != "cuda":
        return tensor.to(device)
    return tensor.pin_memory().to(device, non_blocking=True)


def _hidden_after_prefix(decoder, ids: torch.Tensor, mask: torch.Tensor, prefix: int) -> torch.Tensor:
    import inspect

    # transformers renamed `past_key_values` to `cache` in 5.2x; accept both
    name = "cache" if "cache" in inspect.signature(decoder.forward).parameters else "past_key_values"
    with torch.no_grad():
        out = decoder(input_ids=ids[:1, :prefix], use_cache=True)
    cache = getattr(out, "cache", None) or out.past_key_values
    cache.batch_repeat_interleave(ids.shape[0])
    positions = torch.arange(prefix, ids.shape[1], device=ids.device).expand(ids.shape[0], -1)
    return decoder(input_ids=ids[:, prefix:], attention_mask=mask, position_ids=positions, use_cache=True,
                   **{name: cache}).last_hidden_state


def _autocast(device: torch.device, bf16: bool):
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


class LossModule(torch.nn.Module):
    """`masked_loss` as a module, so that DDP / FSDP see the forward that computes the loss."""

    def __init__(self, model, bf16: bool):
        super().__init__()
        self.model, self.bf16 = model, bf16

    def forward(self, batch: dict) -> tuple[torch.Tensor, int]:
        return masked_loss(self.model, batch, self.bf16)


def _as_forward(model, plan: Plan):
    """The loss module for `model` (a LoRA model, or a loss module already, possibly wrapped)."""
    if isinstance(model, (LossModule, torch.nn.parallel.DistributedDataParallel)):
        return model
    return LossModule(model, plan.bf16)


def _batch(rows: list[Example], piece: Piece, plan: Plan) -> dict:
    examples = [rows[i] for i in piece.rows]
    batch = collate(examples, plan.pad_id, plan.pad_multiple, plan.share_prefix)
    if plan.share_prefix and piece.prefix_of != piece.rows:  # part of a micro-batch: the whole one's prompt
        batch["prefix_len"] = shared_prefix([rows[i] for i in piece.prefix_of])
    return batch


@torch.no_grad()
def evaluate(model, examples: list[Example], plan: Plan, world: World = SOLO) -> float:
    """Mean loss per trainable token over the eval rows (each process scores its share; sums are shared)."""
    if not examples:
        return float("nan")
    forward = distributed.inner(_as_forward(model, plan))
    was_training = forward.training
    forward.eval()
    total, count = 0.0, 0
    groups = [e.group for e in examples] if plan.share_prefix else None
    size = plan.eval_batch_size or plan.batch_size
    batches = batch_order([len(e.input_ids) for e in examples], size, 0, 0, False, groups)
    for piece in distributed.eval_shares(batches, world):
        loss, n = forward(_batch(examples, piece, plan))
        total, count = total + float(loss) * piece.weight, count + n * int(piece.weight)
    forward.train(was_training)
    total, count = distributed.total([total, count], world)
    return total / max(count, 1)


def make_optimizer(model, plan: Plan):
    params = [p for p in model.parameters() if p.requires_grad]
    if plan.optimizer == "adamw_8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, lr=plan.lr, weight_decay=plan.weight_decay)
    return torch.optim.AdamW(params, lr=plan.lr, weight_decay=plan.weight_decay)


def make_scheduler(optimizer, plan: Plan, total_steps: int):
    warmup = max(1, round(plan.warmup_ratio * total_steps)) if plan.warmup_ratio > 0 else 0

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / (warmup + 1)
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        if plan.schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * progress))
        if plan.schedule == "linear":
            return 1.0 - progress
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class StopFlag:
    """The first Ctrl-C asks the loop to stop at the next micro-batch and save; a second one aborts."""

    def __init__(self):
        self.requested = False
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("stopping: saving a checkpoint (Ctrl-C again to abort without one)")

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


Callback = Callable[[dict], None]


def train(model, train_rows: list[Example], eval_rows: list[Example], plan: Plan, checkpoint: Path,
          resume: bool = False, on_log: Callback | None = None, on_step: Callback | None = None,
          world: World = SOLO, cuda: bool = False) -> tuple[State, dict]:
    """Train `model` in place. Returns the final state and the LoRA tensors to keep (best or last).
    In several processes every one calls this with the same arguments (callbacks: rank 0's only)."""
    on_log, on_step = on_log or (lambda r: None), on_step or (lambda r: None)
    total = plan.total_steps(train_rows)
    ckpt = read_checkpoint(checkpoint) if resume else None
    if ckpt:  # before wrapping: FSDP shards the weights it is given
        load_trainable_state(model, ckpt.adapter)
    forward = distributed.wrap(LossModule(model, plan.bf16), world, cuda, plan.bf16)
    optimizer = make_optimizer(model, plan)
    scheduler = make_scheduler(optimizer, plan, total)
    state, best, rng = State(eval_rows=len(eval_rows)), None, None
    if ckpt:
        check_resume(ckpt.state, ckpt.trainer["optimizer"], plan.optimizer, len(eval_rows), checkpoint)
        optimizer.load_state_dict(distributed.local_optimizer_state(ckpt.trainer["optimizer"], optimizer))
        scheduler.load_state_dict(ckpt.trainer["scheduler"])
        state, best = ckpt.state, ckpt.best
        set_rng_state(rng_for(ckpt, world, plan.seed))
        log.info("resumed at step %d of %d (epoch %d)", state.step, total, state.epoch + 1)
    forward.train()
    started = time.perf_counter() - state.wall_s
    with StopFlag() as stop:
        while state.step < total:
            groups = plan.step_groups(train_rows, state.epoch)
            while state.group < len(groups) and state.step < total:
                rng = rng_state()
                loss, n_all = _step(forward, optimizer, scheduler, train_rows, groups[state.group], plan, stop, world)
                if loss is None:  # stop requested mid-step: drop its gradients, keep the last good state
                    state.wall_s = time.perf_counter() - started
                    save_checkpoint(checkpoint, model, optimizer, scheduler, state, rng, best, world)
                    raise Interrupted(f"stopped at step {state.step} of {total}")
                state.step, state.group, state.tokens = state.step + 1, state.group + 1, state.tokens + n_all
                state.since_eval.append(loss)
                record = _record(state, total, loss, plan.last_lr, started)
                on_step(record)
                if state.step % plan.log_every == 0 or state.step == total:
                    on_log(record)
                if plan.eval_every and state.step % plan.eval_every == 0 and state.group < len(groups):
                    best = _eval(forward, model, eval_rows, plan, state, best, on_log, world)
            if state.group >= len(groups):
                state.epoch, state.group = state.epoch + 1, 0
            best = _eval(forward, model, eval_rows, plan, state, best, on_log, world)
            state.wall_s = time.perf_counter() - started
            save_checkpoint(checkpoint, model, optimizer, scheduler, state, rng_state(), best, world)
            if distributed.agree(stop.requested, world):
                raise Interrupted(f"stopped at step {state.step} of {total}")
    keep = best if (plan.keep_best and best is not None) else trainable_state(model)
    return state, keep


def check_resume(saved: State, optimizer_state: dict, optimizer: str, n_eval: int, checkpoint: Path) -> None:
    """A checkpoint resumes only into the run that wrote it: the same optimizer (another one's state does
    not load) and the same number of eval rows (the best eval loss so far was taken over those)."""
    kinds = {"state1": "adamw_8bit", "exp_avg": "adamw"}  # a key only that optimizer's per-tensor state has
    found = {kinds[k] for per_param in optimizer_state.get("state", {}).values() for k in per_param if k in kinds}
    if found and optimizer not in found:
        was = found.pop()
        raise LorekitError(f'{checkpoint}: written with optimizer = "{was}", this run uses "{optimizer}"; set '
                           f'[train] optimizer = "{was}" to resume, or train without --resume')
    if saved.eval_rows >= 0 and saved.eval_rows != n_eval:
        raise LorekitError(f"{checkpoint}: its eval loss was taken over {saved.eval_rows} eval rows, this run has "
                           f"{n_eval}; set [train] eval_rows = {saved.eval_rows} (and keep eval.jsonl) to resume, "
                           "or train without --resume")


def _step(model, optimizer, scheduler, rows, group, plan: Plan, stop: StopFlag, world: World = SOLO):
    """One optimizer step over a group of micro-batches: (mean loss per trained token, row tokens), or
    (None, 0) if a stop came in between. Token counts are the whole step's, on every process: each one
    scales its loss by processes / tokens, and DDP / FSDP average the gradients, which gives their sum."""
    forward = _as_forward(model, plan)
    n_tok = sum(rows[i].n_trainable for idx in group for i in idx)
    n_all = sum(len(rows[i].input_ids) for idx in group for i in idx)
    pieces = distributed.shares(group, world)
    losses = []  # kept on the device until the step is queued: reading one makes the host wait
    for k, piece in enumerate(pieces):
        if distributed.agree(stop.requested, world):  # a Ctrl-C on any process stops all at the same piece
            optimizer.zero_grad(set_to_none=True)
            return None, 0
        with distributed.sync_gradients(forward, world, sync=k == len(pieces) - 1):
            loss, _ = forward(_batch(rows, piece, plan))
            (loss * (piece.weight * world.size) / n_tok).backward()
        losses.append(loss.detach() * piece.weight)
    torch.nn.utils.clip_grad_norm_([p for p in forward.parameters() if p.requires_grad], 1.0)
    plan.last_lr = optimizer.param_groups[0]["lr"]  # the rate this step used, for the metrics
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    (total_loss,) = distributed.total([float(sum(losses))], world)
    return total_loss / n_tok, n_all


def _record(state: State, total: int, loss: float, lr: float, started: float) -> dict:
    elapsed = time.perf_counter() - started
    record = {"step": state.step, "total_steps": total, "epoch": state.epoch + 1, "loss": round(loss, 5),
              "lr": lr, "tokens": state.tokens,
              "tokens_per_s": round(state.tokens / max(elapsed, 1e-9), 1), "elapsed_s": round(elapsed, 2),
              "eta_s": round(elapsed / state.step * (total - state.step), 1), "memory_mb": _memory_mb()}
    return record


def _eval(forward, model, eval_rows, plan: Plan, state: State, best, on_log: Callback, world: World = SOLO):
    if not eval_rows:
        return best
    eval_loss = evaluate(forward, eval_rows, plan, world)
    since = state.since_eval
    train_loss = sum(since) / len(since) if since else float("nan")
    state.since_eval = []
    state.evals.append([state.step, train_loss, eval_loss])
    if len(state.evals) >= 2 and not state.overfit_warned:
        (_, prev_train, prev_eval), (_, cur_train, cur_eval) = state.evals[-2], state.evals[-1]
        if cur_eval > prev_eval and cur_train < prev_train:
            state.overfit_warned = True
            log.warning("eval loss rose (%.3f -> %.3f) while train loss fell: the model is starting to "
                        "memorise; the best checkpoint is kept, try fewer epochs or a lower --lr",
                        prev_eval, cur_eval)
    if state.best_eval is None or eval_loss < state.best_eval:
        state.best_eval, state.best_step = eval_loss, state.step
        if plan.keep_best:
            best = trainable_state(model)
    on_log({"step": state.step, "epoch": state.epoch, "eval_loss": round(eval_loss, 5),
            "best_eval_loss": round(state.best_eval, 5), "best_step": state.best_step})
    return best


def _memory_mb() -> float:
    if torch.cuda.is_available():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    import resource

    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
