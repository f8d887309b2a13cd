"""`lorekit eval`: ask the base model and the tuned model the same questions, score both, report.

Recipe: read the build folder -> pick the questions -> answer with each model in turn (one model in
memory at a time) -> score -> write OUT/eval/report.json and report.html.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from lorekit import __version__, atomic
from lorekit.config import to_dict
from lorekit.evaluate import advice, data, general, report, sample, score
from lorekit.evaluate.config import EvalConfig
from lorekit.evaluate.generate import Answer, Generator

log = logging.getLogger(__name__)


@dataclass
class EvalResult:
    report_json: Path
    report_html: Path
    summary: dict
    verdict: dict


def run(out: str | Path, cfg: EvalConfig | None = None,
        generators: Callable[[], tuple[Generator, Generator]] | None = None) -> EvalResult:
    """Evaluate the build in `out`. `generators` (base, tuned) replaces the models (tests, scripts)."""
    cfg = cfg or EvalConfig()
    out = Path(out)
    start = time.perf_counter()
    ds = out / "dataset"
    all_questions = data.load_questions(ds / "eval.jsonl")
    picked = sample.pick(all_questions, cfg.limit, cfg.seed)
    questions = sample.prompts(picked)
    ctx = score.Context.build(ds, cfg)
    models_info: dict = {}
    if generators is None:
        generators, models_info = _default_generators(out, cfg)
    base, tuned = _answer_all(generators, questions, cfg)
    rows = [score.score_question(q, b, t, ctx) for q, b, t in zip(questions, base["qa"], tuned["qa"], strict=True)]
    gen_rows = [general.score(q, ref, b.text, t.text, cfg.agree_threshold)
                for (q, ref), b, t in zip(general.QUESTIONS, base["general"], tuned["general"], strict=False)]
    summary = score.summarize(rows, ctx, {"base": base, "tuned": tuned})
    summary["general"] = general.summarize(gen_rows) if gen_rows else None
    summary["retrieval"] = score.retrieval(all_questions)
    summary["sample"] = {"eval_rows": len(all_questions), "asked": len(picked), "prompts": len(questions),
                         "limit": cfg.limit, "seed": cfg.seed, "by_kind": score.count_kinds(picked),
                         "by_stratum": sample.count_strata(picked),
                         "general_questions": len(gen_rows), "max_tokens": cfg.max_tokens}
    verdict = advice.verdict(summary, rows)
    doc = {
        "lorekit": __version__,
        "out": str(out.resolve()),
        "dataset_sha256": ctx.report.get("dataset_sha256"),
        "train": data.read_json(out / "train" / "run.json").get("config", {}),
        "models": models_info,
        "config": to_dict(cfg),
        "summary": summary,
        "verdict": verdict,
        "questions": rows,
        "general": gen_rows,
        "wall_s": round(time.perf_counter() - start, 1),
    }
    return _write(out, doc)


def _default_generators(out: Path, cfg: EvalConfig):
    from lorekit.evaluate import generate

    if cfg.backend == "adapter":
        run_json = data.read_json(out / "train" / "run.json")
        model = str(run_json.get("model") or "gemma3-270m")
        family = run_json.get("family") or data.models.resolve(model).family
        stop = data.chat_formats.get(family).stop
        info = {"backend": "adapter", "base": model, "tuned": str(out / "adapter"), "family": family}
        return (lambda: generate.torch_pair(model, out / "adapter", family, stop, cfg.max_tokens, cfg.seed)), info
    m = data.resolve_models(out, cfg.base, cfg.tuned)
    info = {"backend": "gguf", "base": m.base, "tuned": m.tuned, "family": m.family, "stop": list(m.stop),
            "profile": m.profile, "llama_cpp": _llama_version()}

    def make():
        # Loaded one at a time by _answer_all: built lazily so only one model is in memory.
        def load(path):
            return generate.LlamaGenerator(path, m.family, m.stop, cfg.max_tokens, cfg.seed, cfg.n_ctx, cfg.threads)

        return (lambda: load(m.base)), (lambda: load(m.tuned))

    return make, info


def _llama_version() -> str | None:
    try:
        import llama_cpp

        return llama_cpp.__version__
    except ImportError:
        return None


def _answer_all(generators, questions, cfg: EvalConfig) -> tuple[dict, dict]:
    pair = generators()
    results = []
    for name, gen in zip(("base", "tuned"), pair, strict=True):
        model = gen() if callable(gen) else gen
        try:
            results.append(_answer(model, name, questions, cfg))
        finally:
            if callable(gen):
                model.close()
    for gen in pair:
        if not callable(gen):
            gen.close()
    return results[0], results[1]


def _answer(model: Generator, name: str, questions, cfg: EvalConfig) -> dict:
    start = time.perf_counter()
    qa: list[Answer] = []
    for i, q in enumerate(questions, 1):
        qa.append(model.reply(q.messages))
        if i % 10 == 0 or i == len(questions):
            log.info("%s model: %d/%d prompts (%.0f s)", name, i, len(questions), time.perf_counter() - start)
    gen = [model.reply(general.messages(q)) for q, _ in general.QUESTIONS] if cfg.general else []
    answers = qa + gen
    tokens, secs = sum(a.tokens for a in answers), sum(a.seconds for a in answers)
    qa_secs = sum(a.seconds for a in qa)
    return {"qa": qa, "general": gen, "tokens": tokens, "seconds": round(secs, 1),
            "tokens_per_s": round(tokens / secs, 1) if secs else None,
            "seconds_per_prompt": round(qa_secs / len(qa), 2) if qa else None}


def _write(out: Path, doc: dict) -> EvalResult:
    import json

    with atomic.replace_dir(out / "eval") as tmp:
        (tmp / "report.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        (tmp / "report.html").write_text(report.render_html(doc), encoding="utf-8")
    folder = out / "eval"
    return EvalResult(folder / "report.json", folder / "report.html", doc["summary"], doc["verdict"])
