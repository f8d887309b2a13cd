"""`lorekit.train.run(out, cfg)`: load base -> attach LoRA -> tokenize rows -> train -> save.

Reads `OUT/dataset/{train,eval}.jsonl`; writes `OUT/adapter/` (PEFT adapter + tokenizer with the
chat template) and `OUT/train/` (metrics.jsonl, loss.png, run.json). The adapter folder is swapped
in only after training succeeded, so a failed or interrupted run never replaces a good adapter.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import time
from dataclasses import dataclass, replace
from pathlib import Path

from lorekit import chat_formats
from lorekit import config as config_mod
from lorekit.atomic import replace_dir, write_text
from lorekit.errors import LorekitError
from lorekit.train import checkpoint, distributed, fused, init_adapter, loop, ple_offload, speed, token_rows
from lorekit.train.config import TrainConfig
from lorekit.train.data import encode_rows, read_rows
from lorekit.train.stopwatch import Stopwatch, part

log = logging.getLogger(__name__)

OOM_HELP = ("out of GPU memory; try, in this order: --batch-size 1 with a larger grad_accum, "
            "load_in_4bit = true, gradient_checkpointing = true, a shorter max_length, or a smaller --model")


@dataclass
class TrainResult:
    adapter: Path
    run_json: Path
    steps: int
    train_loss: float | None
    eval_loss: float | None
    wall_s: float
    backend: str
    choice: speed.Choice | None = None


def run(out: Path, cfg: TrainConfig | None = None, resume: bool = False,
        on_log=None, on_step=None, on_choice=None) -> TrainResult:
    """Train; started by torchrun / accelerate launch, every process calls this (see distributed.py)."""
    started = time.perf_counter()
    clock = Stopwatch()
    out = Path(out)
    train_file, eval_file = _dataset_files(out)
    cfg = cfg or config_mod.load(TrainConfig, "train", config_mod.lore_dir_of(out))
    import torch

    cuda = torch.cuda.is_available()
    world = distributed.from_env(cfg.parallel)
    _check_backend(cfg, cuda)
    cfg = _check_world(resolve_defaults(cfg, cuda), world, cuda)
    if not world.main:  # progress, metrics and choices are rank 0's to report
        on_log = on_step = on_choice = None
    distributed.join(world, cuda)
    torch.manual_seed(cfg.seed)
    raw_rows = read_rows(train_file)
    with clock.part("backend choice"):
        choice = choose_backend(cfg, "cuda" if cuda else "cpu", raw_rows)
    if world.size > 1:
        choice.reason = f"{world.size} processes ({world.parallel}): the plain loop, Unsloth trains on one GPU"
    log.info("backend %s", choice.summary())
    if on_choice:
        on_choice(choice)
    cfg = replace(cfg, compile=choice.compile)
    # a resumed run's checkpoint holds the LoRA already
    start = init_adapter.for_model(cfg.init_adapter, cfg.model) if cfg.init_adapter and not resume else None
    try:
        model, tok, profile, backend = _load(cfg, choice.backend, cuda, world, clock)
        if start:
            with clock.part("LoRA"):
                init_adapter.load_into(model, start, cfg.lora_r, cfg.lora_alpha)
            log.info("LoRA starts from %s", start)
        fmt = chat_formats.get(profile.family)
        with clock.part("rows"):
            train_rows = encode_rows(tok, fmt, raw_rows, cfg.max_length, str(train_file))
            eval_raw = eval_sample(read_rows(eval_file), cfg.eval_rows) if eval_file.exists() else []
            eval_rows = encode_rows(tok, fmt, eval_raw, cfg.max_length, str(eval_file))
        if not train_rows:
            raise LorekitError(f"{train_file}: no rows to train on; check the lore and run `lorekit compile`")
        plan = _plan(cfg, cuda, tok)
        # compiled kernels recompile for every new shape: round widths up to few shapes
        plan.pad_multiple = (64 if backend == "unsloth" and cfg.compile else 8) if cuda else 1
        plan.share_prefix = cfg.share_prompt if cfg.share_prompt is not None else not cuda
        # no activations are kept for a backward pass when scoring: twice the rows, half the launches (not
        # where checkpointing says memory is tight: the eval's logits grow with its batch)
        plan.eval_batch_size = 2 * plan.batch_size if cuda and not cfg.gradient_checkpointing else 0
        fuse = fuses(cfg, cuda, backend, world.size)
        if fuse:
            with clock.part("fuse"):
                log.info("fewer launches a step: %s", fused.apply(model, autocast=plan.bf16).summary())
        log.info("start-up %.1f s: %s", time.perf_counter() - started, clock.summary())
        # run.json records what ran, not "auto"
        cfg = replace(cfg, optimizer=plan.optimizer, precision="bf16" if plan.bf16 else "fp32", fuse=fuse,
                      share_prompt=plan.share_prefix, compile=backend == "unsloth" and cfg.compile,
                      offload_ple=ple_offload.offloaded(model))
        log.info("training %s (%s, %s backend) on %d rows, %d eval rows, %d steps%s",
                 profile.name, profile.family, backend, len(train_rows), len(eval_rows),
                 plan.total_steps(train_rows), f", {world.size} processes ({world.parallel})" if world.size > 1 else "")
        ckpt, partial = out / "train" / "checkpoint", out / "train" / ".metrics.partial.jsonl"
        _prepare_logs(ckpt, partial, resume, world)
        distributed.barrier(world)  # rank 0 cleared an old checkpoint before anyone trains
        try:
            state, keep = loop.train(model, train_rows, eval_rows, plan, ckpt, resume=resume,
                                     on_log=_chain(_appender(partial) if world.main else None, on_log),
                                     on_step=on_step, world=world, cuda=cuda)
        finally:
            if fuse:
                fused.undo(model)
    except torch.OutOfMemoryError:
        raise LorekitError(OOM_HELP) from None
    if world.main:
        _save_adapter(out / "adapter", model, tok, keep, profile, sharded=world.lockstep)
        _write_train_folder(out, cfg, profile, backend, state, partial, train_file, eval_file,
                            time.perf_counter() - started, {**choice.to_dict(), "ran": backend}, world,
                            clock.rounded())
    distributed.barrier(world)  # every process returns once the adapter is on disk
    wall = time.perf_counter() - started
    last = [r for r in map(json.loads, (out / "train" / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    return TrainResult(out / "adapter", out / "train" / "run.json", state.step,
                       last[-1]["loss"] if last else None, state.best_eval, wall, backend, choice)


def _dataset_files(out: Path) -> tuple[Path, Path]:
    train_file, eval_file = out / "dataset" / "train.jsonl", out / "dataset" / "eval.jsonl"
    if not train_file.is_file():
        raise LorekitError(f"{train_file}: missing; run `lorekit compile LORE_DIR --out {out}` first")
    return train_file, eval_file


def _check_backend(cfg: TrainConfig, cuda: bool) -> None:
    if cfg.backend == "unsloth" and not cuda:
        raise LorekitError("--backend unsloth needs a CUDA GPU and none was found; use --backend transformers "
                           "(or auto) to train on the CPU")


def _check_world(cfg: TrainConfig, world: distributed.World, cuda: bool) -> TrainConfig:
    """Settings that several processes change or cannot run; one process: `cfg` as it is."""
    if world.size == 1:
        return cfg
    if cfg.backend == "unsloth":
        raise LorekitError(f"--backend unsloth trains on one GPU only, and this is one of {world.size} processes "
                           "(torchrun); use --backend transformers (or auto), or start one process")
    if cuda:
        import torch

        found = torch.cuda.device_count()
        if world.local_rank >= found:
            raise LorekitError(f"{world.size} processes on this machine but {found} CUDA GPU(s); "
                               f"start at most {found}: torchrun --nproc-per-node {found} -m lorekit train ...")
    if world.parallel == "fsdp":
        if cfg.optimizer == "adamw_8bit":
            raise LorekitError('optimizer adamw_8bit cannot update FSDP shards; set optimizer = "adamw" '
                               'or parallel = "ddp" in [train]')
        if cuda and cfg.load_in_4bit:
            log.warning("parallel = fsdp shards the model in bf16: load_in_4bit is not used")
        cfg = replace(cfg, load_in_4bit=False, optimizer=optimizer_of(cfg))
    return replace(cfg, backend="transformers")


def choose_backend(cfg: TrainConfig, device: str, rows: list[dict], table: dict | None = None,
                   unsloth_installed: bool | None = None) -> speed.Choice:
    """The path to train on (see lorekit/train/speed.py), with every candidate's estimated wall time.
    `table` and `unsloth_installed` default to the shipped (or configured) table and what is installed."""
    import importlib.util

    from lorekit.train.load import model_dir

    source, profile = model_dir(cfg.model)
    lengths, counted = speed.dataset_lengths(str(source), profile.family, rows, cfg.max_length)
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and (device == "cuda" or CPU_BF16))
    if unsloth_installed is None:
        unsloth_installed = importlib.util.find_spec("unsloth") is not None
    choice = speed.choose(
        backend=cfg.backend, compile=cfg.compile, model=cfg.model, family=profile.family, device=device,
        precision=speed.precision_key(device, cfg.load_in_4bit, bf16), batch_size=cfg.batch_size,
        tokens=speed.run_tokens(lengths, cfg.epochs, cfg.max_steps, cfg.batch_size * cfg.grad_accum),
        unsloth_installed=unsloth_installed,
        table=table if table is not None else speed.load_table(cfg.speed_table or None))
    choice.reason += f"; dataset tokens {counted}"
    return choice


# CPU: batch 8 x 1 (fewer, fuller steps; bench/results/train_cpu.md). Epochs stay at 3 on the CPU too:
# at the estimated ~500 tokens/s of 2 idle cores, a few hundred sample rows take ~2 min an epoch,
# so 8 epochs (what field-notes used on 50 short rows) would not fit the README's 15-minute build.
# A GPU follows the guide (batch 2 x 4, 3 epochs).
CPU_DEFAULTS = {"batch_size": 8, "grad_accum": 1, "epochs": 3.0}
GPU_DEFAULTS = {"batch_size": 2, "grad_accum": 4, "epochs": 3.0}


def fuses(cfg: TrainConfig, cuda: bool, backend: str, processes: int = 1) -> bool:
    """Whether the plain loop on CUDA runs `fused.apply` (Unsloth has its own kernels): as `[train] fuse`
    says, or, unset, in one process on a base that is not 4-bit (timed so on the H200 in bf16; not yet with
    4-bit layers, nor under DDP or FSDP)."""
    if not cuda or backend != "transformers":
        return False
    return cfg.fuse if cfg.fuse is not None else not cfg.load_in_4bit and processes == 1


def resolve_defaults(cfg: TrainConfig, cuda: bool) -> TrainConfig:
    """Fill the fields left at None with the device's defaults."""
    base = GPU_DEFAULTS if cuda else CPU_DEFAULTS
    return replace(cfg, **{k: v for k, v in base.items() if getattr(cfg, k) is None})


def _load(cfg: TrainConfig, backend: str, cuda: bool, world: distributed.World = distributed.SOLO,
          clock: Stopwatch | None = None):
    """Load and attach LoRA; an Unsloth failure falls back to the plain path with a warning. For FSDP the
    model loads in CPU memory (bf16 on CUDA) and the shards go to each GPU when training starts."""
    from lorekit.train import load

    lora = {"r": cfg.lora_r, "alpha": cfg.lora_alpha, "dropout": cfg.lora_dropout,
            "turn_tokens": cfg.train_turn_tokens}
    if backend == "unsloth":
        try:
            with part(clock, "base model and LoRA (Unsloth)"):
                model, tok, profile = load.load_unsloth(cfg.model, cfg.max_length, cfg.load_in_4bit, lora,
                                                        cfg.seed, cfg.gradient_checkpointing, cfg.compile)
            with part(clock, "per-layer tables"):
                _offload_ple(model, cfg, cuda)
            return model, tok, profile, "unsloth"
        except LorekitError:
            raise
        except Exception as e:  # noqa: BLE001 - any Unsloth failure: the plain path still works
            if cfg.backend == "unsloth":
                raise LorekitError(f"Unsloth could not load {cfg.model}: {e}; try --backend transformers") from None
            log.warning("Unsloth failed (%s); falling back to transformers + peft", str(e).splitlines()[0][:200])
    if world.lockstep:
        import torch

        model, tok, profile = load.load_model(cfg.model, "cpu", dtype=torch.bfloat16 if cuda else None, clock=clock)
    else:
        model, tok, profile = load.load_model(cfg.model, "cuda" if cuda else "cpu",
                                              load_in_4bit=cuda and cfg.load_in_4bit, clock=clock)
    with part(clock, "per-layer tables"):
        _offload_ple(model, cfg, cuda)
    with part(clock, "LoRA"):
        model = attach_lora(model, profile, lora, cuda and cfg.gradient_checkpointing, tok)
    return model, tok, profile, "transformers"


def _offload_ple(model, cfg: TrainConfig, cuda: bool) -> None:
    """Gemma 4's per-layer embedding tables to CPU memory (lorekit/train/ple_offload.py), on CUDA only,
    as `[train] offload_ple` says or, unset, when they would take over an eighth of the card (`wanted`);
    on the CPU they are in memory already. run.json records `ple_offload.offloaded(model)`."""
    if not cuda or cfg.offload_ple is False:
        return
    import torch

    tables = ple_offload.table_bytes(model)
    card = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    if not ple_offload.wanted(cfg.offload_ple, tables, card):
        if tables:
            log.info("per-layer embeddings: %.2f GiB stay on the GPU (%.0f GiB card; offload_ple = true moves "
                     "them to CPU memory)", tables / 2**30, card / 2**30)
        return
    ple_offload.offload(model, "cuda")


def attach_lora(model, profile, lora: dict, checkpointing: bool, tok=None):
    """LoRA on every projection of the text decoder; with `lora["turn_tokens"]` and a tokenizer, also
    the embedding rows of the turn tokens (see `load.turn_token_indices`)."""
    from peft import LoraConfig, get_peft_model

    from lorekit.train.load import lora_target_regex, token_row_kwargs

    # No prepare_model_for_kbit_training: it upcasts every unquantized weight to fp32, which for
    # Gemma 4's per-layer embeddings alone is 8 GB.
    if checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    config = LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"], bias="none",
                        target_modules=lora_target_regex(profile), task_type="CAUSAL_LM",
                        **token_row_kwargs(tok, profile, lora))
    model = get_peft_model(model, config)
    token_rows.speed_up(model)
    return model


def eval_sample(rows: list, limit: int, seed: int = 0) -> list:
    """The eval rows the loop scores: all of them (`limit` 0 or less), or `limit` picked by `seed`, in
    file order, the same rows at every eval of the run (and of runs with another `[train] seed`, whose
    eval losses then compare). The whole sample world's 564 eval rows, scored at every epoch's end, took
    12 s of an E2B build's 190 s train stage on the H200; 256 of them, 7.8 s (bench/results/
    build_e2b_gpu.md). The eval loss picks the kept epoch and warns of memorising."""
    if limit <= 0 or len(rows) <= limit:
        return rows
    keep = sorted(random.Random(seed).sample(range(len(rows)), limit))
    return [rows[i] for i in keep]


def optimizer_of(cfg: TrainConfig) -> str:
    """The optimizer a run uses: `auto` is torch AdamW on every device (LoRA's state is small)."""
    return "adamw" if cfg.optimizer == "auto" else cfg.optimizer


def _plan(cfg: TrainConfig, cuda: bool, tok) -> loop.Plan:
    optimizer = optimizer_of(cfg)
    if optimizer == "adamw_8bit" and not cuda:
        raise LorekitError("optimizer adamw_8bit needs a CUDA GPU; use optimizer = \"adamw\" on the CPU")
    bf16 = cfg.precision == "bf16" or (cfg.precision == "auto" and (cuda or CPU_BF16))
    return loop.Plan(epochs=cfg.epochs, batch_size=cfg.batch_size, grad_accum=cfg.grad_accum, lr=cfg.lr,
                     warmup_ratio=cfg.warmup_ratio, schedule=cfg.schedule, weight_decay=cfg.weight_decay,
                     optimizer=optimizer, bf16=bf16, max_steps=cfg.max_steps, eval_every=cfg.eval_every,
                     log_every=cfg.log_every, seed=cfg.seed, keep_best=cfg.keep_best, pad_id=tok.pad_token_id)


# bf16 autocast on the CPU: off. On this AVX2-only CPU (no AVX512-BF16) bf16 matmuls fell back to a
# slow generic kernel: 3 steps did not finish in 9 minutes (bench/results/train_cpu.md).
CPU_BF16 = False


def _prepare_logs(ckpt: Path, partial: Path, resume: bool, world: distributed.World = distributed.SOLO) -> None:
    """Check the checkpoint to resume from (every process), then rank 0 trims or starts the metrics."""
    if resume and not (ckpt / "state.json").is_file():
        raise LorekitError(f"{ckpt}: no checkpoint to resume from; run `lorekit train` without --resume")
    if not world.main:
        return
    if resume:
        step = json.loads((ckpt / "state.json").read_text())["step"]
        lines = partial.read_text().splitlines() if partial.exists() else []
        write_text(partial, "".join(x + "\n" for x in lines if json.loads(x)["step"] <= step))
        return
    shutil.rmtree(ckpt, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    partial.write_text("")


def _appender(path: Path):
    def append(record: dict) -> None:
        with path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
    return append


def _chain(*fns):
    fns = [f for f in fns if f]
    return lambda record: [f(record) for f in fns]


def _save_adapter(target: Path, model, tok, keep: dict, profile, sharded: bool = False) -> Path:
    """The PEFT adapter of the `keep` tensors. Under FSDP (`sharded`) the model holds shards, so PEFT is
    handed the whole tensors instead of reading them from the model."""
    if not sharded:
        checkpoint.load_trainable_state(model, keep)
    with replace_dir(target) as tmp:
        model.save_pretrained(tmp, **({"state_dict": keep} if sharded else {}))
        tok.save_pretrained(tmp)
        write_text(tmp / "lorekit.json", json.dumps(
            {"model": profile.name, "family": profile.family, "base": profile.source,
             "stop": list(chat_formats.get(profile.family).stop)}, indent=1))
    return target


def _write_train_folder(out, cfg, profile, backend, state, partial, train_file, eval_file, wall,
                        choice: dict, world: distributed.World = distributed.SOLO,
                        startup: dict | None = None) -> Path:
    from lorekit.train.metrics import plot_losses

    folder = out / "train"
    metrics = partial.read_text(encoding="utf-8")
    write_text(folder / "metrics.jsonl", metrics)
    plot_losses([json.loads(x) for x in metrics.splitlines()], folder / "loss.png")
    run_info = {
        "model": profile.name, "family": profile.family, "base": profile.source, "backend": backend,
        "backend_choice": choice,
        "config": config_mod.to_dict(cfg), "dataset_sha256": _dataset_sha(out, train_file, eval_file),
        "steps": state.step, "best_step": state.best_step, "best_eval_loss": state.best_eval,
        "overfitting_warning": state.overfit_warned, "versions": _versions(), "wall_s": round(wall, 2),
        "train_wall_s": round(state.wall_s, 2), "startup_s": startup or {}, "processes": world.size,
    }
    if world.size > 1:
        run_info["parallel"] = world.parallel
    write_text(folder / "run.json", json.dumps(run_info, indent=1))
    partial.unlink(missing_ok=True)
    shutil.rmtree(folder / "checkpoint", ignore_errors=True)  # done: nothing left to resume
    return folder / "run.json"


def _dataset_sha(out: Path, *files: Path) -> str:
    report = out / "dataset" / "report.json"
    if report.is_file():
        sha = json.loads(report.read_text(encoding="utf-8")).get("dataset_sha256")
        if sha:
            return sha
    h = hashlib.sha256()
    for f in files:
        if f.exists():
            h.update(f.read_bytes())
    return h.hexdigest()


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("lorekit", "torch", "transformers", "peft", "unsloth", "bitsandbytes"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found
