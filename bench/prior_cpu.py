"""Continue the notes-reading prior on a CPU: a few hundred rows of fresh renamed worlds in the current layout.

The shipped prior (`lorekit/priors/gemma3-270m-notes`) was trained on a GPU (bench/prior_gpu.sh). When the
row layout changes (a persona that quotes the NPC's own lines, greetings with the NPC's own notes) and no GPU
is at hand, this teaches the change on top of it, on the 2-core VM in about 10 minutes:

    python3 bench/prior_cpu.py OUT [--copies 2] [--seed 5] [--rows 600] [--eval-rows 48]

1. `bench/prior_worlds.py OUT/worlds --copies N --seed S --recast --compile`: copies of bench/prior_world whose
   names never repeat and whose NPCs get other "I don't know" and refusal lines in every copy;
2. a seeded sample of their train rows, by kind (QUOTAS: the "I don't know", refusal and greeting rows the
   layout change is about, the rest facts read from notes) and of their eval rows, into OUT/dataset;
3. `lorekit train OUT` from the shipped prior (the quick start's recipe: lr 2e-4, one epoch, batch 8).

OUT/adapter is then a prior: copy adapter_model.safetensors and adapter_config.json into lorekit/priors/NAME
and write its PRIOR.json (bench/results/prior_notes.md says how each prior was made and measured).

The shipped `gemma3-270m-notes` is such a continuation (2026-12-05) of the GPU prior; `--init` defaults to the
shipped prior, so to make it again start from the GPU one, kept in git history:
`git show fa54f74:lorekit/priors/gemma3-270m-notes/adapter_model.safetensors > GPU/adapter_model.safetensors`
(and its adapter_config.json), then `--init GPU`. CPU training is not bit-reproducible; the dataset is (sha256
in PRIOR.json).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

HERE = Path(__file__).resolve().parent
FACT_KINDS = ("field", "reverse", "section", "summary")
QUOTAS = {"absent": 140, "unknown": 90, "secret": 50, "greeting": 28, "multi_turn": 8}  # of 600 rows; the rest: facts
TRAIN_TOML = """[compile]
max_facts = 0

[train]
init_adapter = "{init}"
lr = 2e-4
epochs = 1
"""


def sample_rows(lines: list[bytes], n: int, rng: random.Random) -> list[bytes]:
    """`n` rows: each kind of QUOTAS its share of 600 (as far as there are rows of it), facts for the rest."""
    by_kind: dict[str, list[bytes]] = defaultdict(list)
    for line in lines:
        by_kind[json.loads(line)["meta"]["kind"]].append(line)
    picked = [line for kind, share in QUOTAS.items()
              for line in rng.sample(by_kind[kind], min(round(share * n / 600), len(by_kind[kind])))]
    facts = [line for kind in FACT_KINDS for line in by_kind[kind]]
    picked += rng.sample(facts, min(n - len(picked), len(facts)))
    rng.shuffle(picked)
    return picked


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--copies", type=int, default=2)
    ap.add_argument("--seed", type=int, default=5, help="seed of the copies (the GPU prior's were seed 0)")
    ap.add_argument("--sample-seed", type=int, default=11, help="seed of the train rows' sample (eval rows: +1)")
    ap.add_argument("--rows", type=int, default=600)
    ap.add_argument("--eval-rows", type=int, default=48)
    ap.add_argument("--init", default="gemma3-270m-notes", help="the prior to continue (a name or adapter folder)")
    ap.add_argument("--no-train", action="store_true", help="write the dataset only")
    args = ap.parse_args(argv)
    worlds = args.out / "worlds"
    subprocess.run([sys.executable, str(HERE / "prior_worlds.py"), str(worlds), "--copies", str(args.copies),
                    "--seed", str(args.seed), "--recast", "--compile"], check=True)
    train = sample_rows((worlds / "dataset" / "train.jsonl").read_bytes().splitlines(keepends=True), args.rows,
                        random.Random(args.sample_seed))
    evals = (worlds / "dataset" / "eval.jsonl").read_bytes().splitlines(keepends=True)
    evals = random.Random(args.sample_seed + 1).sample(evals, min(args.eval_rows, len(evals)))
    dataset = args.out / "dataset"
    dataset.mkdir(parents=True, exist_ok=True)
    (dataset / "train.jsonl").write_bytes(b"".join(train))
    (dataset / "eval.jsonl").write_bytes(b"".join(evals))
    report = json.loads((worlds / "dataset" / "report.json").read_text(encoding="utf-8"))
    report.update(lore_dir=str(args.out.resolve()), rows={"train": len(train), "eval": len(evals)},
                  dataset_sha256=hashlib.sha256(b"".join(train) + b"".join(evals)).hexdigest(),
                  sampled={"rows": args.rows, "quotas_of_600": QUOTAS, "seed": args.sample_seed})
    (dataset / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (args.out / "lorekit.toml").write_text(TRAIN_TOML.format(init=args.init), encoding="utf-8")
    print(f"{len(train)} train rows, {len(evals)} eval rows -> {dataset} (sha256 {report['dataset_sha256'][:12]})")
    if args.no_train:
        return 0
    return subprocess.run([sys.executable, "-m", "lorekit", "train", str(args.out)]).returncode


if __name__ == "__main__":
    raise SystemExit(main())
