"""`backend = "auto"`: pick the training path that should finish first, from measured figures.

Each candidate (the plain loop, Unsloth, Unsloth compiled) gets an estimated wall time for the run
at hand: start-up + tokens to train / steady tokens per second. Both figures come from a small table
of measurements (`speed_table.json`, shipped in the package; `bench/train_throughput.py --table`
writes it), looked up by device kind, model shape, precision and the batch size nearest the run's.
No torch import here: the choice is plain arithmetic on the table and is testable without a GPU.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

from lorekit.errors import LorekitError

CANDIDATES = ("transformers", "unsloth", "unsloth-compiled")
TABLE_NAME = "speed_table.json"


@dataclass
class Estimate:
    candidate: str
    available: bool
    why_not: str = ""  # why the candidate cannot run here, if it cannot
    startup_s: float | None = None
    tokens_per_s: float | None = None
    wall_s: float | None = None
    measured: str = ""  # which table row the figures came from (key, batch, source run)


@dataclass
class Choice:
    candidate: str
    backend: str  # "transformers" | "unsloth"
    compile: bool
    reason: str
    key: str  # device/shape/precision looked up
    tokens: int  # row tokens this run will train on (all epochs)
    estimates: list[Estimate] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        parts = [f"{e.candidate} {e.wall_s:.0f} s" if e.wall_s is not None else f"{e.candidate} -"
                 for e in self.estimates]
        return f"{self.candidate} ({self.reason}); estimated wall time: {', '.join(parts)}"


def load_table(path: str | Path | None = None) -> dict:
    """The speed table at `path`, or the one shipped with the package."""
    try:
        if path:
            text = Path(path).read_text(encoding="utf-8")
        else:
            text = resources.files("lorekit.train").joinpath(TABLE_NAME).read_text(encoding="utf-8")
        table = json.loads(text)
    except FileNotFoundError:
        raise LorekitError(f"{path}: speed table missing; write one with "
                           "`python bench/train_throughput.py --table PATH` or leave speed_table unset") from None
    except json.JSONDecodeError as e:
        raise LorekitError(f"{path or TABLE_NAME}:{e.lineno}: not valid JSON ({e.msg}); "
                           "rewrite it with `python bench/train_throughput.py --table PATH`") from None
    if not isinstance(table.get("measurements"), list):
        raise LorekitError(f"{path or TABLE_NAME}: no `measurements` list; "
                           "rewrite it with `python bench/train_throughput.py --table PATH`")
    return table


def shape_of(model: str, table: dict, config: dict | None = None) -> str | None:
    """The table's shape name for `model` (profile name, hub id or folder), or None if unknown.

    Profiles and hub ids map by name; a folder by its config's family, hidden size and layer count,
    then by a name hint ("e2b", "270m") in its path."""
    if model in table.get("profiles", {}):
        return table["profiles"][model]
    from lorekit.models import PROFILES

    for name, profile in PROFILES.items():
        if profile.source == model and name in table.get("profiles", {}):
            return table["profiles"][name]
    shapes = table.get("shapes", {})
    if config is None and (Path(model) / "config.json").is_file():
        config = json.loads((Path(model) / "config.json").read_text(encoding="utf-8"))
    if config:
        text = config.get("text_config") or config
        fingerprint = [text.get("hidden_size"), text.get("num_hidden_layers")]
        for name, shape in shapes.items():
            if fingerprint in shape.get("fingerprints", []):
                return name
    lower = str(model).lower()
    for name, shape in shapes.items():
        if any(hint in lower for hint in shape.get("hints", [])):
            return name
    return None


def lookup(table: dict, device: str, shape: str | None, family: str, precision: str,
           batch_size: int) -> tuple[str, dict[str, dict]]:
    """(the key the figures are for, candidate -> table row). Falls back from the exact shape and
    precision to the shape in any precision, then to the family's other shapes; per candidate, the row
    whose batch size is nearest the run's."""
    rows = [r for r in table["measurements"] if r.get("device") == device]
    family_of = {name: s.get("family") for name, s in table.get("shapes", {}).items()}
    tiers = [
        (f"{device}/{shape}/{precision}", lambda r: r["shape"] == shape and r["precision"] == precision),
        (f"{device}/{shape}/any precision", lambda r: r["shape"] == shape),
        (f"{device}/{family} (nearest shape)/{precision}",
         lambda r: family_of.get(r["shape"]) == family and r["precision"] == precision),
        (f"{device}/{family} (nearest shape)/any precision", lambda r: family_of.get(r["shape"]) == family),
    ]
    for key, keep in tiers:
        found = [r for r in rows if keep(r)]
        if found:
            return key, {c: _nearest_batch([r for r in found if r["candidate"] == c], batch_size)
                         for c in CANDIDATES if any(r["candidate"] == c for r in found)}
    return f"{device}/{shape or family}/{precision}", {}


def _nearest_batch(rows: list[dict], batch_size: int) -> dict:
    best = min(abs(math.log(max(r.get("batch_size", 1), 1) / max(batch_size, 1))) for r in rows)
    return [r for r in rows if abs(math.log(max(r.get("batch_size", 1), 1) / max(batch_size, 1))) == best][-1]


def choose(*, backend: str, compile: bool | None, model: str, family: str, device: str, precision: str,
           batch_size: int, tokens: int, unsloth_installed: bool, table: dict,
           config: dict | None = None) -> Choice:
    """The candidate to run. `backend` "transformers" / "unsloth" is obeyed; "auto" takes the lowest
    estimate among the candidates that can run here (Unsloth needs CUDA and the package). `compile`
    True/False narrows the Unsloth candidates; None leaves both to the estimate."""
    shape = shape_of(model, table, config)
    key, rows = lookup(table, device, shape, family, precision, batch_size)
    estimates = [_estimate(c, rows.get(c), tokens, device, unsloth_installed, compile) for c in CANDIDATES]
    if backend == "transformers":
        pick, reason = "transformers", "asked for"
    elif backend == "unsloth":
        pick, reason = ("unsloth-compiled" if compile else "unsloth"), "asked for"
    else:
        timed = [e for e in estimates if e.available and e.wall_s is not None]
        if timed:
            pick = min(timed, key=lambda e: e.wall_s).candidate
            unmeasured = [e.candidate for e in estimates if e.available and e.wall_s is None]
            if len(timed) > 1:
                reason = "lowest estimated wall time"
            elif unmeasured:
                reason = f"the only candidate measured for {key} ({', '.join(unmeasured)}: no row)"
            else:
                reason = "the only candidate that can run here"
        else:
            pick, reason = "transformers", f"no measurement for {key}: the plain loop, which always runs"
    return Choice(candidate=pick, backend="transformers" if pick == "transformers" else "unsloth",
                  compile=pick == "unsloth-compiled", reason=reason, key=key, tokens=tokens, estimates=estimates)


def _estimate(candidate: str, row: dict | None, tokens: int, device: str, unsloth_installed: bool,
              compile: bool | None) -> Estimate:
    why = ""
    if candidate != "transformers":
        if device != "cuda":
            why = "Unsloth needs a CUDA GPU"
        elif not unsloth_installed:
            why = "unsloth is not installed (pip install 'lorekit[gpu]')"
        elif compile is not None and compile != (candidate == "unsloth-compiled"):
            why = f"compile = {str(compile).lower()} in the config"
    est = Estimate(candidate, available=not why, why_not=why)
    if row:
        est.startup_s, est.tokens_per_s = row["startup_s"], row["tokens_per_s"]
        est.wall_s = round(row["startup_s"] + tokens / row["tokens_per_s"], 1)
        est.measured = (f"{row['device']}/{row['shape']}/{row['precision']} batch {row.get('batch_size')}: "
                        f"{row.get('source', '')}")
    return est


def precision_key(device: str, load_in_4bit: bool, bf16: bool) -> str:
    """The table's precision column for a run: "4bit" (bitsandbytes nf4 on CUDA), "bf16" or "fp32"."""
    if device == "cuda" and load_in_4bit:
        return "4bit"
    return "bf16" if bf16 else "fp32"


def run_tokens(lengths: list[int], epochs: float, max_steps: int, rows_per_step: int) -> int:
    """Row tokens a run trains on: every row once per epoch, capped by max_steps."""
    total = sum(lengths) * epochs
    if max_steps and lengths:
        total = min(total, max_steps * rows_per_step * sum(lengths) / len(lengths))
    return int(total)


def dataset_lengths(source: str, family: str, rows: list[dict], max_length: int) -> tuple[list[int], str]:
    """Token count of each row as the trainer will see it (capped at max_length), and how it was counted.

    Uses the `tokenizers` library on the model's tokenizer.json, not transformers: Unsloth must be
    imported before transformers, and the choice is made before either is. Without a tokenizer.json,
    the count is estimated at 4 characters a token."""
    from lorekit import chat_formats, dataset

    fmt = chat_formats.get(family)
    texts = [fmt.render(dataset.messages(r)) for r in rows]
    path = _tokenizer_file(source)
    if path is None:
        return [min(max_length, len(t) // 4 + 1) for t in texts], "estimated at 4 characters a token"
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    lengths = [min(max_length, len(e.ids)) for e in tok.encode_batch(texts, add_special_tokens=False)]
    return lengths, f"counted with {path.name}"


def _tokenizer_file(source: str) -> Path | None:
    if Path(source).is_dir():
        path = Path(source) / "tokenizer.json"
        return path if path.is_file() else None
    try:
        from huggingface_hub import try_to_load_from_cache

        found = try_to_load_from_cache(source, "tokenizer.json")
    except Exception:  # noqa: BLE001 - no hub library or a malformed id: fall back to the estimate
        return None
    return Path(found) if isinstance(found, str) else None
