"""``router._text``: one rule for a message's text and for "the last user message"."""

from __future__ import annotations

import pytest

from router._text import content_text, last_user_text

PARTS = [
    {"type": "text", "text": "Where is "},
    {"type": "image_url", "image_url": {"url": "https://example.invalid/card.png"}},
    {"type": "text", "text": "my card?"},
]


@pytest.mark.parametrize(
    ("content", "text"),
    [
        ("hi", "hi"),
        (None, ""),
        (PARTS, "Where is my card?"),  # OpenAI joins text parts with "" (one copy used " ")
        ([], ""),
        (42, "42"),
    ],
)
def test_content_text(content, text) -> None:
    assert content_text(content) == text


def test_last_user_text_skips_later_turns_and_empty_user_messages() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": PARTS},
        {"role": "assistant", "content": "Let me check."},
        {"role": "user", "content": ""},
    ]
    assert last_user_text(messages) == "Where is my card?"
    assert last_user_text([{"role": "system", "content": "x"}]) == ""
    assert last_user_text(None) == ""


def test_every_caller_reads_the_same_prompt() -> None:
    """The classifier (validation), tune (retune) and the distillation data agree on the text."""
    from router._gateway.validation import build_request, prompt_text
    from training.dataset import Example

    parts = [p for p in PARTS if p["type"] == "text"]  # the gateway accepts text parts only
    messages = [{"role": "user", "content": parts}]
    request = build_request({"messages": messages}, default_model="gpt-4o-mini")
    assert prompt_text(request) == "Where is my card?"
    example = Example(messages=tuple(messages), answer="card_arrival", ts=0.0, source_id="r1")
    assert example.prompt_text == "user: Where is my card?"
