"""The real `openai` Python client against `lorekit serve`'s OpenAI-compatible API, on the real 270M with
lore notes on: what a game or tool written for OpenAI gets from an NPC, errors included, and LoreKit's
`sources` field read the way that client exposes unknown fields."""

from __future__ import annotations

import pytest

openai = pytest.importorskip("openai")
pytest.importorskip("llama_cpp")

from tests.conftest import grounded_copy  # noqa: E402
from tests.test_serve_server import make_app  # noqa: E402

pytestmark = [pytest.mark.llama, pytest.mark.real_model]
NPC = "tobin-reedy"


@pytest.fixture(scope="module")
def api(tmp_path_factory):
    root = tmp_path_factory.mktemp("openai")
    grounded_copy(root / "lore")
    app = make_app(root / "lore", root / "out", max_tokens=16, watch=False)
    yield openai.OpenAI(base_url=f"http://127.0.0.1:{app.port}/v1", api_key="unused", max_retries=0, timeout=120)
    app.stop_background()


def test_models_are_the_npcs(api):
    ids = [m.id for m in api.models.list().data]
    assert NPC in ids and "bettany-crumb" in ids


def test_a_reply_names_the_notes_it_was_given(api):
    reply = api.chat.completions.create(model=NPC, messages=[{"role": "user", "content": "Where were you born?"}],
                                        max_tokens=16, temperature=0)
    choice = reply.choices[0]
    assert choice.message.role == "assistant" and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 50 and 0 < reply.usage.completion_tokens <= 16
    sources = reply.model_extra["sources"]  # LoreKit's own field: the client keeps it as an extra
    assert sources and all(set(s) >= {"page", "heading"} for s in sources)
    assert any("Tobin Reedy" in s["page"] for s in sources), sources


def test_a_streamed_reply_arrives_in_pieces_and_ends_once(api):
    stream = api.chat.completions.create(model=NPC, messages=[{"role": "user", "content": "Hello there!"}],
                                         max_tokens=16, temperature=0, stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text.strip() and len(finishes) == 1 and finishes[0] in ("stop", "length")


def test_a_history_sent_by_the_client_is_the_conversation(api):
    messages = [{"role": "user", "content": "My name is Wren."}, {"role": "assistant", "content": "Well met, Wren."},
                {"role": "user", "content": "What is my name?"}]
    reply = api.chat.completions.create(model=NPC, messages=messages, max_tokens=8, temperature=0)
    alone = api.chat.completions.create(model=NPC, messages=messages[-1:], max_tokens=8, temperature=0)
    assert reply.usage.prompt_tokens > alone.usage.prompt_tokens + 10  # the earlier exchange is in the prompt


def test_errors_are_the_clients_own_exceptions(api):
    with pytest.raises(openai.NotFoundError) as missing:
        api.chat.completions.create(model="nobody", messages=[{"role": "user", "content": "Hi"}])
    assert NPC in str(missing.value)  # the message names the NPCs there are
    with pytest.raises(openai.BadRequestError):
        api.chat.completions.create(model=NPC, messages=[])
    with pytest.raises(openai.BadRequestError):
        api.chat.completions.create(model=NPC, messages=[{"role": "user", "content": "Hi"}], max_tokens=-3)
