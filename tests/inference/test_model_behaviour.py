"""The embedded default models do what they are for, through a real gateway process:
embeddings put related sentences closer than unrelated ones (both dialects), and the chat
model answers ordinary inspection questions without looping."""

from __future__ import annotations

import collections
import math
import re

import pytest

from tests.inference.conftest import MODEL, Gateway

pytestmark = pytest.mark.timeout(120)

EMBED_ALIAS = "embeddings-default"
"""The alias the embedded default gives its embedding model."""

# (anchor, a sentence meaning much the same, one about something else entirely)
TRIPLES = [
    ("the roof leaks", "water comes through the ceiling", "the invoice is due friday"),
    (
        "there is a crack in the foundation wall",
        "the basement wall has a fracture",
        "please reset my password",
    ),
    (
        "the electrical panel is overheating",
        "the breaker box feels hot to the touch",
        "lunch is served at noon",
    ),
    (
        "mold is growing in the bathroom",
        "there is fungus on the shower walls",
        "the truck needs new tires",
    ),
    (
        "the window frame is rotten",
        "the wood around the glass has decayed",
        "send the quarterly report to finance",
    ),
    (
        "the staircase railing is loose",
        "the handrail on the stairs wobbles",
        "the meeting moved to tuesday",
    ),
]
SENTENCES = [s for triple in TRIPLES for s in triple]
# Ordinary questions a crew asks; with llama-cpp-python's own sampling defaults (no repeat
# penalty) SmolLM2 repeats itself within 128 tokens on these seeds.
QUESTIONS = [
    ("What should an inspector look for in an electrical panel?", 1),
    ("What should I check when inspecting a roof after a storm?", 3),
    ("What are the signs of water damage in a ceiling?", 3),
]


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / (math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b)))


def _check_meaning(vectors: list[list[float]]) -> None:
    """Each anchor is closer to its related sentence than to every unrelated one."""
    assert len(vectors) == len(SENTENCES)
    by_text = dict(zip(SENTENCES, vectors, strict=True))
    unrelated = [u for _, _, u in TRIPLES]
    for anchor, related, _ in TRIPLES:
        near = _cosine(by_text[anchor], by_text[related])
        for other in unrelated:
            far = _cosine(by_text[anchor], by_text[other])
            assert near > far, f"{anchor!r}: {related!r} {near:.3f} <= {other!r} {far:.3f}"


def test_openai_embeddings_mean_something(gateway: Gateway) -> None:
    """`/v1/embeddings` on the default alias: related sentences are the nearer ones."""
    reply = gateway.openai().embeddings.create(
        model=EMBED_ALIAS, input=SENTENCES, encoding_format="float"
    )
    assert [d.index for d in reply.data] == list(range(len(SENTENCES)))
    _check_meaning([d.embedding for d in reply.data])
    assert reply.usage.prompt_tokens > len(SENTENCES)


def test_ollama_embed_means_the_same(gateway: Gateway) -> None:
    """`/api/embed` on the default alias: the same meaning, the same vectors as OpenAI's."""
    reply = gateway.ollama().embed(model=EMBED_ALIAS, input=SENTENCES)
    vectors = [list(v) for v in reply.embeddings]
    _check_meaning(vectors)
    one = gateway.openai().embeddings.create(model=EMBED_ALIAS, input=SENTENCES[0])
    assert all(
        math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)
        for a, b in zip(vectors[0], one.data[0].embedding, strict=True)
    )


def test_the_embeddings_alias_is_not_the_chat_model(gateway: Gateway) -> None:
    """The alias resolves to the embedder backend, which does no chat (400, not a guess)."""
    shown = gateway.ollama().show(EMBED_ALIAS)
    assert shown.modelinfo is not None
    assert [t["type"] for t in shown.modelinfo["fieldbox.targets"]] == ["embedder"]
    assert shown.capabilities == ["embedding"]
    resp = gateway.post(
        "/v1/chat/completions",
        {"model": EMBED_ALIAS, "messages": [{"role": "user", "content": "hi"}]},
    )
    assert resp.status_code == 400 and "chat" in resp.json()["error"]["message"]


def _most_repeated_8gram(text: str) -> tuple[int, str]:
    words = re.findall(r"\w+", text.lower())
    grams = collections.Counter(" ".join(words[i : i + 8]) for i in range(len(words) - 7))
    if not grams:
        return 0, ""
    gram, count = grams.most_common(1)[0]
    return count, gram


@pytest.mark.parametrize(("question", "seed"), QUESTIONS, ids=["panel", "roof", "ceiling"])
def test_chat_answers_do_not_loop(gateway: Gateway, question: str, seed: int) -> None:
    """With the client setting no sampling, no 8-word run comes back three times."""
    reply = gateway.openai().chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": question}], max_tokens=128, seed=seed
    )
    text = reply.choices[0].message.content or ""
    assert len(text.split()) >= 20, text
    count, gram = _most_repeated_8gram(text)
    assert count < 3, f"{gram!r} {count} times in: {text}"


def test_schema_strings_cannot_hold_raw_control_characters() -> None:
    """The grammar a JSON schema becomes keeps every string's characters JSON-legal: the
    `char` rule excludes U+0000-U+001F (a raw newline made an `ask` answer unparseable)."""
    from inference.backends.llamacpp import schema_grammar

    grammar = schema_grammar('{"type": "object", "properties": {"a": {"type": "string"}}}')
    chars = [line for line in grammar.splitlines() if line.startswith("char ::=")]
    assert len(chars) == 1
    assert chars[0].startswith('char ::= [^"\\\\\\x7F\\x00-\\x1F] | "\\\\" (')
