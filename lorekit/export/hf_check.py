"""Check `export/hf/`: files as recorded, the chat template, the end-of-turn stop, and greedy replies.

1. Each file's SHA-256 against `export.json` (on `--check`: nothing changed since the export).
2. The saved chat template renders exactly what `lorekit.chat_formats` renders, on conversations with
   and without a system turn, with and without the generation prompt.
3. The end-of-turn token is one token and among `generation_config.json`'s end ids.
4. The folder, loaded as it is by `AutoModelForCausalLM.from_pretrained` (computed in float32, so only
   the bf16 weights differ), replies greedily to the export prompts; the PyTorch model with the adapter
   is fed the same tokens, first as PEFT runs it (float32, unmerged: `hf vs torch`), then merged by
   PEFT's own `merge_and_unload` and rounded to bf16 (`hf vs peft merge (bf16)`). At every generated
   position: does it pick the same token (`top1`), within the tolerance (`top1_close`), how far apart
   are the logits (`rel`, = max |diff| / max |logit|), and how alike the LoRA's change is (`effect`,
   cosine of both sides' change against the base; 1 = the same change). The first comparison may
   differ by what bf16 weights cost (1.5x what PEFT's own bf16 merge shows, at least 0.03); the second
   must agree to 0.001: the same weights, merged independently.
The two models are loaded one after the other, never together.
"""

from __future__ import annotations

import gc
import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np

from lorekit import chat_formats
from lorekit.export.verify import compare, prompts_for

log = logging.getLogger(__name__)

LIMIT = (0.03, 1.0, 0.9)  # (rel, top1_close, effect) against the float32 PEFT model
# bf16 weights move logits by a model-dependent amount (tiny random Gemma 4: up to 0.13 of its small
# logit range; Gemma 3 0.003-0.006): `rel` may reach 1.5x what PEFT's own merge in bf16 shows.
ROUNDING_FACTOR = 1.5
MERGE_LIMIT = 1e-3  # against PEFT's merge_and_unload rounded to bf16: the same weights, so ~0 (measured 0.0)
NEW_TOKENS = 8  # greedy tokens generated after each prompt

SYSTEM = "You are Mara Vell, a smith of the Ash Guild. Answer briefly and in character."
CONVERSATIONS = [
    [{"role": "user", "content": "Who leads the Ash Guild?"}],
    [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Greetings, traveller."}],
    [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Who leads the Ash Guild?"},
     {"role": "assistant", "content": "Mara Vell leads the Ash Guild."},
     {"role": "user", "content": "Where does she live?\nTell me."}],
    [{"role": "system", "content": SYSTEM}],
]


def describe(folder: Path) -> dict:
    """{relative path: {bytes, sha256}} of every file in the folder."""
    from lorekit.hashing import file_sha256

    return {str(p.relative_to(folder)): {"bytes": p.stat().st_size, "sha256": file_sha256(p)}
            for p in sorted(folder.rglob("*")) if p.is_file()}


def folder_hash(files: dict) -> str:
    """One SHA-256 for the folder: over the sorted `path sha256` lines of its files."""
    lines = "".join(f"{name}\t{info['sha256']}\n" for name, info in sorted(files.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def changed_files(folder: Path, recorded: dict) -> list[str]:
    now = describe(folder)
    return sorted(n for n in set(now) | set(recorded) if now.get(n, {}).get("sha256") != recorded.get(n, {}).get("sha256"))


def check(folder: Path, family: str, reference: Callable | None, n_prompts: int = 4) -> dict:
    """Run checks 2-4 on `folder`; `reference()` gives the PEFT model (None: no logit comparison)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder))
    report = {"chat_template": template_check(folder, tok, family), "end_of_turn": stop_check(folder, tok, family)}
    ok = report["chat_template"]["passed"] and report["end_of_turn"]["passed"]
    if reference is not None:
        texts = prompts_for(family, max(1, n_prompts))
        prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
        eot = tok.convert_tokens_to_ids(chat_formats.get(family).end_of_turn)
        del tok  # a 262k-word tokenizer holds ~300 MB: not beside the models
        gc.collect()
        report["logits"] = logits_check(folder, prompts, eot, reference)
        ok = ok and report["logits"]["passed"]
    else:
        report["skipped"] = "no logit comparison: install torch and peft, then `lorekit export OUT --check`"
    report["passed"] = ok
    return report


def template_check(folder: Path, tok, family: str) -> dict:
    fmt = chat_formats.get(family)
    wrong = []
    for i, conv in enumerate(CONVERSATIONS):
        for gen in (False, True):
            got = tok.apply_chat_template(conv, tokenize=False, add_generation_prompt=gen)
            if got != fmt.render(conv, add_generation_prompt=gen):
                wrong.append(f"conversation {i}{' + generation prompt' if gen else ''}")
    processor = folder / "processor_config.json"
    if processor.is_file():
        data = json.loads(processor.read_text(encoding="utf-8"))
        if "chat_template" in data and data["chat_template"] != tok.chat_template:
            wrong.append("processor_config.json has another chat template")
    return {"conversations": 2 * len(CONVERSATIONS), "wrong": wrong, "passed": not wrong}


def stop_check(folder: Path, tok, family: str) -> dict:
    token = chat_formats.get(family).end_of_turn
    ids = tok(token, add_special_tokens=False)["input_ids"]
    gen = json.loads((folder / "generation_config.json").read_text(encoding="utf-8"))
    eos = gen.get("eos_token_id")
    eos = [eos] if isinstance(eos, int) else list(eos or [])
    return {"token": token, "id": ids[0] if len(ids) == 1 else None, "eos_token_id": eos,
            "passed": len(ids) == 1 and ids[0] in eos}


def logits_check(folder: Path, prompts: list[list[int]], eot: int, reference: Callable) -> dict:
    """Greedy replies of the folder against the PEFT model; `prompts` from `verify.prompts_for`, whose
    second to last ends right after an answer (the next token should end the turn)."""
    stops = set(json.loads((folder / "generation_config.json").read_text(encoding="utf-8"))["eos_token_id"])
    seqs, exported = _exported_run(folder, prompts, stops)
    adapted, base, merged = _reference_run(reference, seqs, [len(p) for p in prompts])
    rounding = compare(flat(adapted), flat(merged)).rel  # what bf16 weights cost PEFT's own merge
    limit = (max(LIMIT[0], ROUNDING_FACTOR * rounding), *LIMIT[1:])
    torch_c = compare(flat(adapted), flat(exported), limit[0], flat(base), flat(base))
    merge_c = compare(flat(merged), flat(exported))
    answered = len(prompts) - 2
    comparisons = {
        "hf vs torch": {**torch_c.as_dict(), "limit_rel": round(limit[0], 6), "limit_top1_close": limit[1],
                        "limit_effect": limit[2], "passed": torch_c.passed(limit)},
        "hf vs peft merge (bf16)": {**merge_c.as_dict(), "limit_rel": MERGE_LIMIT, "passed": merge_c.rel <= MERGE_LIMIT},
    }
    return {"comparisons": comparisons, "passed": all(c["passed"] for c in comparisons.values()),
            "bf16_rounding_rel": round(rounding, 6), "prompts": len(prompts), "positions": len(flat(exported)),
            "greedy_tokens": [len(s) - len(p) for s, p in zip(seqs, prompts, strict=True)],
            "end_of_turn_logit": {"hf": round(float(exported[answered][0][eot]), 4),
                                  "torch": round(float(adapted[answered][0][eot]), 4),
                                  "torch base": round(float(base[answered][0][eot]), 4)}}


def flat(rows: list[list[np.ndarray]]) -> list[np.ndarray]:
    return [r for per_prompt in rows for r in per_prompt]


def _exported_run(folder: Path, prompts: list[list[int]], stops: set[int]):
    """Greedy replies of the folder loaded as it is, and its logits at each generated position."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    seqs, rows = [], []
    with torch.no_grad():
        for prompt in prompts:
            ids = torch.tensor([prompt])
            out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS,
                                 do_sample=False, top_k=None, top_p=None, eos_token_id=sorted(stops),
                                 pad_token_id=sorted(stops)[0])
            seq = [int(t) for t in out[0]]
            seqs.append(seq)
            rows.append(_positions(model, seq, len(prompt)))
    del model
    gc.collect()
    return seqs, rows


def _reference_run(reference: Callable, seqs: list[list[int]], starts: list[int]):
    """The PEFT model's logits on the same tokens: with the adapter, without it, and merged by PEFT
    (`merge_and_unload`, in place) with its weights rounded to bf16."""
    import torch

    model = reference()

    def run(m) -> list[list[np.ndarray]]:
        return [_positions(m, s, n) for s, n in zip(seqs, starts, strict=True)]

    with torch.no_grad():
        adapted = run(model)
        with model.disable_adapter():
            base = run(model)
        model = model.merge_and_unload()
        for p in model.parameters():
            p.data = p.data.to(torch.bfloat16).to(p.dtype)
        merged = run(model)
    del model
    gc.collect()
    return adapted, base, merged


def _positions(model, seq: list[int], start: int) -> list[np.ndarray]:
    """Next-token logits at each position from the end of the prompt to the token before the last."""
    import torch

    keep = len(seq) - start + 1  # the output layer only where it is read (262k words: most of the cost)
    logits = model(torch.tensor([seq]), logits_to_keep=keep).logits[0]
    return [row.float().numpy().copy() for row in logits[:-1]]
