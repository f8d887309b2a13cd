"""Comparing greedy replies of the real model across runs that processed the same prompt in other chunks."""

from __future__ import annotations

import os

import numpy as np
import pytest

TIE = 1.0  # logits: a greedy choice this close may go either way with the prompt processed in other chunks


def assert_same_reply_but_for_a_tie(llm, tokens: list[int], a: str, b: str) -> None:
    """`a` and `b` are the greedy reply to `tokens`, the same text, or parting where the model's two best
    next tokens are within TIE of each other. llama.cpp's sums differ in their last bits when a prompt is
    processed in other chunks (a saved prefix and then the rest, another server's batch size) and a
    near-tie can then go either way; a wrong prompt or saved state (other notes, other history) parts the
    replies where the model is sure of its next token. `llm` (a `llama_cpp.Llama`) is cleared and used
    to find where the uncached greedy reply parts from what `a` and `b` share."""
    if a == b:
        return
    common, said = os.path.commonprefix([a, b]), ""
    llm._ctx.kv_cache_seq_rm(-1, 0, -1)
    llm.reset()
    llm.eval(tokens)
    for _ in range(64):
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).copy()  # the last token's
        best, runner_up = np.argsort(logits)[-2:][::-1]
        piece = llm.detokenize([int(best)]).decode("utf-8", errors="replace")
        if not common.startswith((said + piece).lstrip()):  # the token where the replies part
            gap = float(logits[best] - logits[runner_up])
            assert gap < TIE, f"{a!r} and {b!r} part after {said!r}, where the model is sure (gap {gap:.2f})"
            return
        said += piece
        llm.eval([int(best)])
    pytest.fail(f"the uncached greedy reply {said!r} never parts from {common!r}")
