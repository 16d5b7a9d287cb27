"""The LoRA student is trained on exactly the prompt text it is served with."""

from __future__ import annotations

import pytest

from training._model import encode_prompt


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "How do I activate my card?"}],
        [
            {"role": "system", "content": "Reply with the intent label only."},
            {"role": "user", "content": "my card has not arrived"},
        ],
    ],
)
def test_training_and_serving_prompts_are_identical(make_engine, tokenizer, messages):
    engine = make_engine()
    served = tokenizer(engine.render_prompt(messages), add_special_tokens=False).input_ids
    assert list(served) == encode_prompt(tokenizer, messages, system_prompt=None)
    assert "You are a helpful AI assistant" not in tokenizer.decode(served)
