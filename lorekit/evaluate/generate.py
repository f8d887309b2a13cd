"""Answers from a model: greedy, capped, prompted through `lorekit.chat_formats` like training.

Two backends share one shape (`reply(messages) -> Answer`, `close()`):
- `LlamaGenerator`: a GGUF through llama-cpp-python (the default; the base GGUF and the merged one).
- `TorchGenerator`: a transformers model, optionally with the PEFT adapter of `OUT/adapter`.
Greedy decoding (argmax, no repeat penalty) makes two runs give the same answers.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from lorekit import chat_formats, llama_log
from lorekit.errors import LorekitError

log = logging.getLogger(__name__)


@dataclass
class Answer:
    text: str
    tokens: int
    seconds: float
    ended: bool = True  # stopped at the end-of-turn token, not at max_tokens


class Generator(Protocol):
    def reply(self, messages: list[dict[str, str]]) -> Answer: ...

    def close(self) -> None: ...


def cut_at_stop(text: str, stop: tuple[str, ...]) -> str:
    """The text before the first stop string (the end-of-turn marker)."""
    for s in stop:
        i = text.find(s)
        if i >= 0:
            text = text[:i]
    return text.strip()


GREEDY = (0.0, 1.0, 1, 1.0)  # temperature, top_p, top_k, repeat_penalty: two runs give the same answers


class LlamaGenerator:
    def __init__(self, gguf: str | Path, family: str, stop: tuple[str, ...] = (), max_tokens: int = 48,
                 seed: int = 0, n_ctx: int = 2048, threads: int = 0):
        try:
            from llama_cpp import Llama
        except ImportError:
            raise LorekitError("llama-cpp-python is not installed; pip install 'lorekit[serve]' "
                               "(or use --backend adapter)") from None
        path = Path(gguf)
        if not path.is_file():
            raise LorekitError(f"{path}: model file missing; run `lorekit export` or pass its path")
        self.format = chat_formats.get(family)
        self.stop = tuple(stop) or self.format.stop
        self.max_tokens, self.n_ctx = max_tokens, n_ctx
        llama_log.route()
        self.llm = Llama(str(path), n_ctx=n_ctx, seed=seed, n_threads=threads or os.cpu_count(),
                         n_threads_batch=threads or os.cpu_count(), verbose=False)
        # Stop strings that are one token (`<end_of_turn>`) end generation by id.
        self.stop_ids = {ids[0] for s in self.stop
                         if len(ids := self.llm.tokenize(s.encode(), add_bos=False, special=True)) == 1}
        self.stop_ids.add(self.llm.token_eos())

    def prompt_tokens(self, messages: list[dict[str, str]]) -> list[int]:
        # The rendered text carries `<bos>` itself, so the tokenizer must not add another.
        text = self.format.render(messages, add_generation_prompt=True)
        return self.llm.tokenize(text.encode(), add_bos=False, special=True)

    def reply(self, messages: list[dict[str, str]], sampling: tuple[float, float, int, float] = GREEDY) -> Answer:
        """The model's answer; `sampling` (temperature, top_p, top_k, repeat_penalty) is greedy unless given
        (bench/served_sampling.py asks as the server samples)."""
        tokens = self.prompt_tokens(messages)
        if len(tokens) + self.max_tokens > self.n_ctx:
            raise LorekitError(f"a prompt of {len(tokens)} tokens does not fit n_ctx={self.n_ctx}; "
                               "raise [eval] n_ctx")
        temp, top_p, top_k, penalty = sampling
        start, out, ended = time.perf_counter(), [], False
        for tok in self.llm.generate(tokens, temp=temp, top_k=top_k, top_p=top_p, min_p=0.0, repeat_penalty=penalty):
            if tok in self.stop_ids:
                ended = True
                break
            out.append(tok)
            if len(out) >= self.max_tokens:
                break
        # Special tokens are kept in the text so that leaked template markup is visible to the checks.
        text = self.llm.detokenize(out, special=True).decode("utf-8", errors="replace")
        return Answer(cut_at_stop(text, self.stop), len(out), time.perf_counter() - start, ended)

    def close(self) -> None:
        self.llm.close()


class TorchGenerator:
    """A transformers causal LM (with or without a PEFT adapter), greedy."""

    def __init__(self, model, tokenizer, family: str, stop: tuple[str, ...] = (), max_tokens: int = 48):
        self.model, self.tokenizer = model, tokenizer
        self.format = chat_formats.get(family)
        self.stop = tuple(stop) or self.format.stop
        self.max_tokens = max_tokens
        ids = [tokenizer.convert_tokens_to_ids(s) for s in self.stop]
        self.stop_ids = [i for i in ids if isinstance(i, int) and i != tokenizer.unk_token_id]
        if tokenizer.eos_token_id is not None:
            self.stop_ids.append(tokenizer.eos_token_id)

    def reply(self, messages: list[dict[str, str]]) -> Answer:
        import torch

        text = self.format.render(messages, add_generation_prompt=True)
        enc = self.tokenizer(text, return_tensors="pt", add_special_tokens=False)
        start = time.perf_counter()
        with torch.no_grad():
            out = self.model.generate(**enc, do_sample=False, max_new_tokens=self.max_tokens,
                                      eos_token_id=self.stop_ids, pad_token_id=self.stop_ids[-1])
        new = out[0, enc["input_ids"].shape[1]:].tolist()
        ended = bool(new) and new[-1] in self.stop_ids
        while new and new[-1] in self.stop_ids:
            new.pop()
        reply = self.tokenizer.decode(new, skip_special_tokens=False)
        return Answer(cut_at_stop(reply, self.stop), len(new), time.perf_counter() - start, ended)

    def close(self) -> None:
        self.model = None


def torch_pair(model_name: str, adapter_dir: Path, family: str, stop: tuple[str, ...], max_tokens: int, seed: int):
    """Base and tuned generators from one PyTorch model: the tuned one adds `OUT/adapter`."""
    try:
        import torch
        from peft import PeftModel

        from lorekit.train.load import load_model
    except ImportError as e:
        raise LorekitError(f"--backend adapter needs the train extra ({e.name} missing); "
                           "pip install 'lorekit[train]'") from None
    if not (adapter_dir / "adapter_config.json").is_file():
        raise LorekitError(f"{adapter_dir}: no adapter_config.json; run `lorekit train` first")
    torch.manual_seed(seed)
    model, tokenizer, _profile = load_model(model_name)
    model.eval()
    base = TorchGenerator(model, tokenizer, family, stop, max_tokens)
    tuned_model = PeftModel.from_pretrained(model, str(adapter_dir))
    tuned_model.eval()
    tuned = TorchGenerator(tuned_model, tokenizer, family, stop, max_tokens)
    return _DisabledAdapter(base, tuned_model), tuned


class _DisabledAdapter:
    """The base model answers with the adapter switched off (PEFT injects LoRA layers in place)."""

    def __init__(self, inner: TorchGenerator, peft_model):
        self.inner, self.peft_model = inner, peft_model

    def reply(self, messages: list[dict[str, str]]) -> Answer:
        with self.peft_model.disable_adapter():
            return self.inner.reply(messages)

    def close(self) -> None:
        self.inner.close()
