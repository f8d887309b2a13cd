"""Does the tuned Gemma 3 270M learn to end its turn? Training variants on the quick-start dataset.

    python bench/eot_270m.py exp off,rows            # any machine with the 270M package (CPU: ~15 min a variant)
    python bench/eot_270m.py setup                   # GPU machine: assemble /tmp/g270m/g270m.part* first

Each variant trains the 270M on `sample_lore` (its lorekit.toml scope when this was measured, session 3:
103 rows without notes, 3 epochs, 39 steps, lr 5e-4, batch 8, fp32, shared prompt; the quick start has
changed since, so a rerun compiles today's scope) and then measures, with the saved adapter:
the teacher-forced loss and median probability of `<end_of_turn>` where the labels have it, the loss
of the other answer tokens, and greedy replies (64 tokens max) to 24 eval questions: how many stop.
Variants: `off` (LoRA only), `rows` (LoRA + the turn tokens' embedding rows, lorekit's default),
`rows_lr10` / `rows_lr30` (those rows at 10x / 30x the learning rate). Figures: $OUT/eot.json.
"""
import glob
import json
import os
import shutil
import sys
import time
from pathlib import Path

import torch

os.environ.setdefault("LOREKIT_HOME", "/tmp/lkhome")
from lorekit.models import resolve
from lorekit.train import load, loop, recipe
from lorekit.train.config import TrainConfig


def setup():
    parts = sorted(glob.glob("/tmp/g270m/g270m.part*"))
    gg = Path("/tmp/g270m/gemma-3-270m-q4_k_m.gguf")
    if not gg.exists() or gg.stat().st_size == 0:
        with gg.open("wb") as f:
            for p in parts:
                f.write(Path(p).read_bytes())
    print("gguf", gg.stat().st_size)
    load._pypi_gguf = lambda profile: gg
    t = time.time()
    load.ensure_converted(resolve("gemma3-270m"))
    print("converted in", time.time() - t)

def variant(name, rows, lr_mult=1.0, epochs=3, lr=5e-4):
    out = Path(f"/tmp/eotb-{name}")
    if not out.exists():
        shutil.copytree("/tmp/eotb", out)
    orig_opt = loop.make_optimizer
    def make_optimizer(model, plan):
        rp = [p for n, p in model.named_parameters() if p.requires_grad and "trainable_tokens" in n]
        lp = [p for n, p in model.named_parameters() if p.requires_grad and "trainable_tokens" not in n]
        groups = [{"params": lp}] + ([{"params": rp, "lr": plan.lr * lr_mult}] if rp else [])
        return torch.optim.AdamW(groups, lr=plan.lr, weight_decay=plan.weight_decay)
    loop.make_optimizer = make_optimizer
    cfg = TrainConfig(model="gemma3-270m", backend="transformers", epochs=epochs, lr=lr, batch_size=8, grad_accum=1,
                      load_in_4bit=False, gradient_checkpointing=False, precision="fp32", optimizer="adamw",
                      share_prompt=True, train_turn_tokens=rows)
    t = time.time()
    res = recipe.run(out, cfg)
    wall = time.time() - t
    loop.make_optimizer = orig_opt
    return out, res, wall

@torch.no_grad()
def probe(out):
    from peft import PeftModel

    from lorekit import chat_formats, dataset
    from lorekit.train.data import IGNORE, collate, encode_rows, read_rows
    model, tok, prof = load.load_model("gemma3-270m", "cuda", dtype=torch.float32)
    model = PeftModel.from_pretrained(model, out / "adapter").eval()
    fmt = chat_formats.get("gemma3")
    res = {}
    for split in ("train", "eval"):
        ex = encode_rows(tok, fmt, read_rows(out / "dataset" / f"{split}.jsonl"), 1024)
        e, a = [], []
        for i in range(0, len(ex), 16):
            b = collate(ex[i:i+16], tok.pad_token_id)
            logits = model(input_ids=b["input_ids"].cuda(), attention_mask=b["attention_mask"].cuda()).logits[:, :-1].float()
            y = b["labels"][:, 1:].cuda()
            keep = y != IGNORE
            nll = torch.nn.functional.cross_entropy(logits[keep], y[keep], reduction="none")
            ise = y[keep] == 106
            e += nll[ise].tolist()
            a += nll[~ise].tolist()
        res[split] = {"eot_nll": sum(e)/len(e), "p_eot_median": float(torch.tensor(e).neg().exp().median()), "ans_nll": sum(a)/len(a)}
    # greedy generation on eval questions: does it stop?
    rows = read_rows(out / "dataset" / "eval.jsonl")[:24]
    stops, lens, samples = 0, [], []
    for r in rows:
        msgs = dataset.messages(r)
        while msgs and msgs[-1]["role"] == "assistant":
            msgs = msgs[:-1]
        text = fmt.render(msgs, add_generation_prompt=True) if hasattr(fmt, "render") else None
        ids = tok(text, add_special_tokens=False, return_tensors="pt").input_ids.cuda()
        g = model.generate(input_ids=ids, max_new_tokens=64, do_sample=False, eos_token_id=[1, 106])[0, ids.shape[1]:]
        stop = 106 in g.tolist() or 1 in g.tolist()
        stops += stop
        lens.append(len(g))
        if len(samples) < 4:
            samples.append(tok.decode(g))
    res["gen"] = {"stopped": stops, "of": len(rows), "mean_len": sum(lens)/len(lens), "samples": samples}
    del model
    torch.cuda.empty_cache()
    return res

if __name__ == "__main__":
    mode = sys.argv[1]
    if mode == "setup":
        setup()
    else:
        if not Path("/tmp/eotb").exists():
            from lorekit.compile import run as compile_run
            compile_run(Path("sample_lore"), Path("/tmp/eotb"))
        specs = {"off": dict(rows=False), "rows": dict(rows=True), "rows_lr10": dict(rows=True, lr_mult=10.0),
                 "rows_lr30": dict(rows=True, lr_mult=30.0), "off_ep6": dict(rows=False, epochs=6),
                 "rows_ep6": dict(rows=True, epochs=6)}
        results = {}
        for name in sys.argv[2].split(","):
            out, res, wall = variant(name, **specs[name])
            p = probe(out)
            results[name] = {"train_wall_s": round(wall, 1), "steps": res.steps, "eval_loss": res.eval_loss, **p}
            print(name, json.dumps(results[name]), flush=True)
        Path(os.environ.get("OUT", "/tmp")).joinpath("eot.json").write_text(json.dumps(results, indent=1))
