"""One prompt renderer (``local_models.prompt``) for serving, the gate and training: what it
renders, pinned as text, and that each caller goes through it."""

from __future__ import annotations

import pytest

from local_models.errors import InvalidRequest
from local_models.prompt import chat_messages, prompt_messages, render_chat

USER = {"role": "user", "content": "How do I activate my card?"}
SYSTEM = {"role": "system", "content": "Reply with the intent label only."}


def test_smollm2_template_without_its_injected_default_system_prompt(tokenizer):
    assert render_chat(tokenizer, [USER]) == (
        "<|im_start|>user\nHow do I activate my card?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert render_chat(tokenizer, [SYSTEM, USER]) == (
        "<|im_start|>system\nReply with the intent label only.<|im_end|>\n"
        "<|im_start|>user\nHow do I activate my card?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_content_parts_render_like_the_same_text(tokenizer):
    parts = {
        "role": "user",
        "content": [
            {"type": "text", "text": "How do I "},
            {"type": "image_url", "image_url": {"url": "data:,"}},  # no text: adds nothing
            {"type": "text", "text": "activate my card?"},
        ],
    }
    assert render_chat(tokenizer, [parts]) == render_chat(tokenizer, [USER])
    assert chat_messages([{**USER, "name": "ann"}]) == [USER]  # the template shows no name


@pytest.mark.parametrize(
    "messages, match",
    [([], "empty"), ([{"content": "x"}], "role"), ([{"role": "user", "content": 3}], "content")],
)
def test_malformed_messages_are_invalid_requests(tokenizer, messages, match):
    with pytest.raises(InvalidRequest, match=match):
        render_chat(tokenizer, messages)


def test_the_training_system_prompt_goes_first_only_when_there_is_none():
    assert prompt_messages([USER], system_prompt="Be brief.") == [
        {"role": "system", "content": "Be brief."},
        USER,
    ]
    assert prompt_messages([SYSTEM, USER], system_prompt="Be brief.") == [SYSTEM, USER]
    assert prompt_messages([USER], system_prompt=None) == [USER]


def test_serving_and_training_call_the_one_renderer(make_engine, tokenizer, monkeypatch):
    """Both paths must reach ``render_chat`` (a second renderer would not be seen here)."""
    import local_models.engine
    import training._model
    from training._model import encode_prompt

    seen: list[str] = []

    def spy(tok, messages):
        seen.append(messages[-1]["content"])
        return render_chat(tok, messages)

    monkeypatch.setattr(local_models.engine, "render_chat", spy)
    monkeypatch.setattr(training._model, "render_chat", spy)
    served = tokenizer(make_engine().render_prompt([USER]), add_special_tokens=False).input_ids
    assert encode_prompt(tokenizer, [USER], system_prompt=None) == list(served)
    assert seen == [USER["content"]] * 2
