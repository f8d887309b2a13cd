"""`lorekit train` in 2 processes started by torchrun (gloo on the CPU, a tiny random Gemma 3).

One torchrun launch runs this file as its worker (`--worker ROOT`), four trainings in a row:
  A  the CLI, DDP, uninterrupted                  -> same adapter as one process
  B  DDP resuming a 1-process checkpoint (step 2), Ctrl-C on rank 0 only at step 4
  C  FSDP, uninterrupted                          -> same adapter as one process
  D  FSDP resuming B's checkpoint, Ctrl-C at step 5; then one process (in pytest) finishes B's run
     -> same adapter as an uninterrupted run: resumed 1 -> 2 (DDP) -> 2 (FSDP) -> 1 processes
An audit hook in each worker records the files it wrote: rank 1 must have written none.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.torch

REPO = Path(__file__).resolve().parent.parent
NPCS = ["You are Ilsa Varn, the miller of Brindle. Answer briefly.",
        "You are Tomas Reed, a sailor of the merchant fleet. Answer briefly."]
FACTS = [("Ash Guild", "Mara Vell"), ("Tide Watch", "Tomas Reed"), ("Old Mill", "Ilsa Varn"),
         ("Salt Road", "Bren Hollow")]
# 17 rows in two NPC groups at batch 4: micro-batches of 4, 4, 4 and 4, 1 -> steps of 3 + 2 micro-batches an
# epoch. With 2 processes a step of 2 gives each a whole micro-batch; a step of 3 is split row by row, and
# where it holds the 1-row micro-batch rank 1 runs a stand-in of weight 0 (seed 7: epoch 3, step 5).
TOML = """[train]
model = "{model}"
epochs = 3
batch_size = 4
grad_accum = 3
lr = 3e-3
warmup_ratio = 0.0
log_every = 1
eval_every = 1
seed = 7
"""
TOTAL_STEPS = 6


def rows(counts: tuple[int, int], offset: int = 0) -> list[dict]:
    out = []
    for system, count in zip(NPCS, counts, strict=True):
        for i in range(offset, offset + count):
            place, person = FACTS[i % len(FACTS)]
            out.append({"conversations": [
                {"from": "system", "value": system},
                {"from": "human", "value": f"Who leads the {place}?" + " Tell me." * (i % 3)},
                {"from": "gpt", "value": f"{person} leads the {place}."}], "meta": {}})
    return out


def write_dataset(out: Path) -> None:
    (out / "dataset").mkdir(parents=True, exist_ok=True)
    (out / "dataset" / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows((12, 5))))
    (out / "dataset" / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows((3, 3), 1)))


def config(root: Path, **kw):
    from dataclasses import replace

    from lorekit import config as config_mod
    from lorekit.train.config import TrainConfig

    return replace(config_mod.load(TrainConfig, "train", root / "lore"), **kw)


def stop_at(step: int):
    """on_step hook (rank 0's only): a real SIGINT to this process once `step` is done."""
    def hook(record: dict) -> None:
        if record["step"] == step:
            os.kill(os.getpid(), signal.SIGINT)
    return hook


def adapter(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "adapter" / "adapter_model.safetensors"))


def assert_same_adapter(a: dict, b: dict, atol: float = 2e-4) -> None:
    """Equal up to float rounding. Rows summed in another order or padded to other widths differ in the last
    bits; AdamW turns that into visible changes where gradients are near zero (lora_A's first steps, while
    lora_B is still ~0): up to 4.4e-5 was seen on weights of ~0.13. A wrong share of rows gives 3e-3 to 2e-2."""
    assert a.keys() == b.keys() and len(a) > 2
    worst = max(float((a[k] - b[k]).abs().max()) for k in a)
    assert worst < atol, f"largest difference {worst:.2e}"


def losses(out: Path) -> list[tuple]:
    lines = (out / "train" / "metrics.jsonl").read_text().splitlines()
    return [(r["step"], round(r.get("loss", r.get("eval_loss")), 3), "eval_loss" in r) for r in map(json.loads, lines)]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Everything trained once: the 1-process reference, the 2-process runs, the resumed chain."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as torchrun sets its workers; on a busy machine idle threads spin for seconds
    try:
        yield train_all(tmp_path_factory.mktemp("multi"))
    finally:
        torch.set_num_threads(threads)


def train_all(root: Path) -> tuple[Path, str]:
    from lorekit.train import loop, run
    from tests.tiny_models import make_tiny_model

    model = make_tiny_model(root, "gemma3")
    (root / "lore").mkdir()
    (root / "lore" / "lorekit.toml").write_text(TOML.format(model=model))
    for name in ("ref", "A", "B", "C"):
        write_dataset(root / name)
    run(root / "ref", config(root))
    with pytest.raises(loop.Interrupted):
        run(root / "B", config(root), on_step=stop_at(2))
    output = launch(root)
    run(root / "B", config(root), resume=True)
    return root, output


def step_plan(root: Path) -> list[list[list[int]]]:
    """Every optimizer step's micro-batches, as the runs planned them."""
    from transformers import AutoTokenizer

    from lorekit import chat_formats
    from lorekit.train import data, recipe

    cfg = config(root)
    tok = AutoTokenizer.from_pretrained(cfg.model)
    rows = data.encode_rows(tok, chat_formats.get("gemma3"), data.read_rows(root / "ref" / "dataset" / "train.jsonl"),
                            cfg.max_length)
    plan = recipe._plan(recipe.resolve_defaults(cfg, False), False, tok)
    plan.share_prefix = True
    return [group for epoch in range(3) for group in plan.step_groups(rows, epoch)]


def launch(root: Path, limit: float = 400) -> str:
    """torchrun with 2 processes of this file's worker; its output. On a timeout torchrun gets SIGTERM, which
    it passes on to its workers (they run in sessions of their own: killing torchrun alone would orphan them)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "LOREKIT_WORKER_LIMIT": str(limit - 30)}
    if sys.platform.startswith("linux"):  # gloo on loopback: a container's hostname may resolve elsewhere
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             __file__, "--worker", str(root)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        output, _ = proc.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        proc.terminate()
        output, _ = proc.communicate(timeout=60)
        pytest.fail(f"2-process run did not finish in {limit} s:\n{output[-4000:]}")
    assert proc.returncode == 0, output[-4000:]
    return output


def test_two_processes_train_the_adapter_of_one(runs):
    root, output = runs
    reference = adapter(root / "ref")
    assert_same_adapter(adapter(root / "A"), reference)  # DDP, through the CLI
    assert_same_adapter(adapter(root / "C"), reference)  # FSDP
    assert losses(root / "A") == losses(root / "ref") == losses(root / "C")
    assert sum(1 for _, _, is_eval in losses(root / "ref") if is_eval) == TOTAL_STEPS  # eval_every 1
    assert any(len(group) % 2 and min(map(len, group)) == 1 for group in step_plan(root)), \
        "the plan no longer has a split step with a 1-row micro-batch: no stand-in was tested"
    info = json.loads((root / "A" / "train" / "run.json").read_text())
    assert info["processes"] == 2 and info["parallel"] == "ddp" and info["steps"] == TOTAL_STEPS
    assert json.loads((root / "C" / "train" / "run.json").read_text())["parallel"] == "fsdp"
    assert output.count(f"trained {TOTAL_STEPS} steps") == 1  # the CLI speaks from rank 0 only


def test_ctrl_c_resumes_on_any_number_of_processes(runs):
    root, _ = runs
    cuts = json.loads((root / "cuts.json").read_text())
    assert cuts == {"B": 4, "D": 5}  # rank 0 alone got the signal; both stopped at the same step
    assert_same_adapter(adapter(root / "B"), adapter(root / "ref"))
    assert losses(root / "B") == losses(root / "ref")
    assert not (root / "B" / "train" / "checkpoint").exists()


def test_only_rank_0_writes(runs):
    root, _ = runs
    written = {rank: json.loads((root / f"written-{rank}.json").read_text()) for rank in (0, 1)}
    assert written[1] == []
    names = {Path(p).name for p in written[0]}
    assert {"metrics.jsonl", "run.json", "loss.png", "checkpoint", "state.json", "adapter"} <= names
    assert {Path(p).parent.name for p in written[0] if Path(p).name == "adapter"} == {"A", "C"}


# ---- the worker: one torchrun process -------------------------------------------------------------------------

def _record_writes(root: Path) -> list[str]:
    """Paths under the run folders this process opened for writing, renamed, made or removed."""
    written: list[str] = []
    outs = tuple(str(root / name) + "/" for name in ("A", "B", "C"))

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            if not args or not isinstance(args[0], (str, os.PathLike)):
                return  # a file descriptor
            mode = args[1] if len(args) > 1 and isinstance(args[1], str) else ""
            flags = args[2] if len(args) > 2 and isinstance(args[2], int) else 0
            if not (set(mode) & set("wax+") or flags & (os.O_WRONLY | os.O_RDWR)):
                return
        elif event not in ("os.rename", "os.mkdir", "os.remove", "shutil.rmtree", "os.rmdir"):
            return
        paths = [os.fspath(args[0])] + ([os.fspath(args[1])] if event == "os.rename" else [])  # os.replace too
        written.extend(p for p in paths if p.startswith(outs))

    sys.addaudithook(hook)
    return written


def worker(root: Path) -> None:
    from lorekit.cli import main
    from lorekit.train import loop, run

    rank = int(os.environ["RANK"])
    written = _record_writes(root)
    cuts = {}
    assert main(["train", str(root / "A"), "--lore", str(root / "lore")]) == 0
    for name, resume_out, cfg, step in (("B", "B", config(root), 4), ("D", "B", config(root, parallel="fsdp"), 5)):
        try:
            run(root / resume_out, cfg, resume=True, on_step=stop_at(step))
        except loop.Interrupted:
            cuts[name] = json.loads((root / resume_out / "train" / "checkpoint" / "state.json").read_text())["step"]
        if name == "B":
            run(root / "C", config(root, parallel="fsdp"))
    if rank == 0:
        (root / "cuts.json").write_text(json.dumps(cuts))
    (root / f"written-{rank}.json").write_text(json.dumps(written))


if __name__ == "__main__" and "--worker" in sys.argv:
    import faulthandler

    faulthandler.dump_traceback_later(float(os.environ.get("LOREKIT_WORKER_LIMIT", "370")), exit=True)  # a hang shows where
    worker(Path(sys.argv[sys.argv.index("--worker") + 1]))
