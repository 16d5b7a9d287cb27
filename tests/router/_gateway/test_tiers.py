"""N-tier cascades: local -> cheaper cloud tiers -> cloud.model, through real HTTP (replay)."""

from __future__ import annotations

import asyncio
import math

import pytest

from router import AsyncHybridClient, HybridClient
from router._gateway.retry import RetryConfig
from router._transports.base import MockTransport
from router.devtools.replay import ReplayCloud
from router.errors import Overloaded
from router.ledger import Ledger
from router.ledger.pricing import PriceBook
from router.policy import PolicyError, policy_from_dict
from router.types import BackendResult

FINAL, MINI = "gpt-4o", "gpt-4o-mini"
SURE, UNSURE = "What is 2+2?", "Why is the sky blue?"
ANSWERS = {SURE: "4", UNSURE: "Rayleigh scattering of sunlight."}
MINI_ANSWERS = {SURE: ("4", 0.97), UNSURE: ("Because of the sea.", 0.40)}


@pytest.fixture
def replay():
    with ReplayCloud(ANSWERS, model=FINAL, models={MINI: MINI_ANSWERS}) as cloud:
        yield cloud


def policy(replay, threshold=0.9, **extra):
    data = {
        "mode": "cascade",
        "thresholds": {"cascade": 0.6},
        "cloud": {
            "model": FINAL,
            "api_base": replay.base_url,
            "max_retries": 0,
            "tiers": [{"model": MINI, "threshold": threshold}],
        },
        "local": {"usd_per_hour": 3.6},
        "cache": {"enabled": False},
        **extra,
    }
    return policy_from_dict(data)


def unsure_local(seconds=1.0):
    return MockTransport(
        lambda r: BackendResult(
            text="no idea",
            prompt_tokens=10,
            completion_tokens=2,
            model="smollm2",
            compute_seconds=seconds,
            token_logprobs=[-2.0, -3.0],
        ),
        name="local",
    )


def client(replay, tmp_path, *, local=None, cls=HybridClient, **kw):
    content = kw.get("store_content", True)
    return cls(
        policy=policy(replay, **kw),
        ledger=Ledger(tmp_path / "ledger.sqlite", store_content=content),
        local=local or unsure_local(),
        retry=RetryConfig(max_retries=0),
        seed=0,
    )


def ask(content):
    return {"messages": [{"role": "user", "content": content}], "temperature": 0}


def price(model, reply):
    return PriceBook().cloud_cost(model, reply.usage.prompt_tokens, reply.usage.completion_tokens)


def test_a_confident_cheaper_tier_answers_and_the_frontier_model_is_never_asked(replay, tmp_path):
    with client(replay, tmp_path) as c:
        reply = c.chat.completions.create(**ask(SURE))
        row = c.ledger.rows()[0]
    assert replay.requests_seen == 1  # the mini tier only
    assert reply.choices[0].message.content == "4" and reply.model == MINI
    assert reply.route.route == "cloud" and reply.route.escalated
    assert row.reason == f"tier:{MINI}>=0.90"
    local_usd = 1.0 * 3.6 / 3600
    assert row.cost_usd == pytest.approx(local_usd + price(MINI, reply))
    assert row.baseline_cost_usd == pytest.approx(price(FINAL, reply))
    assert [(a["tier"], a["kept"]) for a in row.attempts] == [("local", False), (MINI, True)]
    assert row.attempts[1]["confidence"] == pytest.approx(0.97, abs=1e-6)
    assert row.attempts[0]["usd"] == pytest.approx(local_usd)


def test_an_unsure_tier_escalates_and_every_try_is_paid_and_recorded(replay, tmp_path):
    with client(replay, tmp_path) as c:
        reply = c.chat.completions.create(**ask(UNSURE))
        row = c.ledger.rows()[0]
    assert reply.choices[0].message.content == ANSWERS[UNSURE] and replay.requests_seen == 2
    assert row.reason == "escalated:low_confidence" and row.model == FINAL
    tiers = [(a["tier"], a["model"], a["kept"]) for a in row.attempts]
    assert tiers == [("local", "smollm2", False), (MINI, MINI, False), ("cloud", FINAL, True)]
    mini_usd = row.attempts[1]["usd"]
    assert mini_usd > 0 and row.attempts[1]["answer"] == "Because of the sea."
    assert row.cost_usd == pytest.approx(1.0 * 3.6 / 3600 + mini_usd + price(FINAL, reply))
    assert sum(a["usd"] for a in row.attempts) == pytest.approx(row.cost_usd)


def test_a_failed_tier_is_skipped_and_a_failed_last_tier_returns_the_paid_answer(replay, tmp_path):
    with client(replay, tmp_path) as c:
        replay.inject("500")  # the mini tier's call
        skipped = c.chat.completions.create(**ask(SURE))
        rows = c.ledger.rows()
    assert skipped.model == FINAL and skipped.choices[0].message.content == "4"
    assert [a.get("error") for a in rows[0].attempts] == [None, "CloudServerError", None]

    class FinalDown(ReplayCloud):
        def lookup_scored(self, messages, model):
            if model == FINAL:
                raise KeyError("the frontier model is down")
            return super().lookup_scored(messages, model)

    down = FinalDown(ANSWERS, model=FINAL, models={MINI: MINI_ANSWERS})
    with down, client(down, tmp_path / "down") as c:
        kept = c.chat.completions.create(**ask(UNSURE))
        row = c.ledger.rows()[0]
    assert kept.choices[0].message.content == "Because of the sea."  # paid for: not thrown away
    assert row.reason.startswith("fallback:") and row.reason.endswith(MINI)
    assert [a["kept"] for a in row.attempts] == [False, True, False]
    assert row.attempts[2]["error"] and row.cost_usd == pytest.approx(
        sum(a["usd"] for a in row.attempts)
    )


def test_a_local_failure_enters_the_tiers_and_forced_local_never_does(replay, tmp_path):
    def boom(request):
        raise Overloaded("queue full")

    with client(replay, tmp_path, local=MockTransport(boom, name="local")) as c:
        reply = c.chat.completions.create(**ask(SURE))
        row = c.ledger.rows()[0]
        with pytest.raises(Overloaded):
            c.chat.completions.create(**ask(SURE), metadata={"route": "local"})
    assert reply.model == MINI and row.attempts[0] == {
        "tier": "local",
        "model": "smollm2-135m-instruct",
        "usd": 0.0,
        "kept": False,
        "error": "Overloaded",
    }
    assert replay.requests_seen == 1


def test_async_and_streamed_cascades_take_the_same_tiers(replay, tmp_path):
    async def run():
        async with client(replay, tmp_path, cls=AsyncHybridClient) as c:
            reply = await c.chat.completions.create(**ask(SURE))
            stream = await c.chat.completions.create(**ask(UNSURE), stream=True)
            text = "".join([ch.choices[0].delta.content or "" async for ch in stream])
            return reply, text, c.ledger.rows()

    reply, text, rows = asyncio.run(run())
    assert reply.model == MINI and text == ANSWERS[UNSURE]
    assert [len(r.attempts) for r in rows] == [2, 3]


def test_a_tier_answer_is_cached_under_that_tier(replay, tmp_path):
    with client(replay, tmp_path, cache={"enabled": True, "ttl_s": 60}) as c:
        first = c.chat.completions.create(**ask(SURE))
        second = c.chat.completions.create(**ask(SURE))
    assert first.model == MINI and second.route.route == "cache"
    assert second.choices[0].message.content == "4" and replay.requests_seen == 1


def test_without_stored_content_attempts_keep_costs_but_not_answers(replay, tmp_path):
    with client(replay, tmp_path, store_content=False) as c:
        c.chat.completions.create(**ask(UNSURE))
        row = c.ledger.rows()[0]
    assert len(row.attempts) == 3 and all("answer" not in a for a in row.attempts)


def test_replay_logprobs_carry_the_recorded_confidence(replay):
    import openai

    api = openai.OpenAI(base_url=replay.base_url, api_key="x")
    out = api.chat.completions.create(model=MINI, logprobs=True, **ask(UNSURE))
    scores = [t.logprob for t in out.choices[0].logprobs.content]
    assert math.exp(sum(scores) / len(scores)) == pytest.approx(0.40)


def test_bad_tier_settings_are_refused_naming_the_field(replay):
    with pytest.raises(PolicyError, match=r"cloud.tiers\[0\].model: 'gpt-4o' is cloud.model"):
        policy_from_dict({"cloud": {"model": FINAL, "tiers": [{"model": FINAL}]}})
    with pytest.raises(PolicyError, match=r"cloud.tiers\[1\].model: 'a' is listed twice"):
        policy_from_dict({"cloud": {"tiers": [{"model": "a"}, {"model": "a"}]}})
    unpriced = policy_from_dict(
        {"cloud": {"model": FINAL, "api_base": replay.base_url, "tiers": [{"model": "nope-1"}]}}
    )
    with pytest.raises(PolicyError, match="no price is known for 'nope-1'"):
        HybridClient(policy=unpriced, ledger=":memory:")


def test_report_by_tier_prices_each_tier_including_discarded_tries(replay, tmp_path):
    from typer.testing import CliRunner

    from router.cli import app
    from router.ledger.reports import summarize

    sure = MockTransport(
        lambda r: BackendResult(text="4", model="smollm2", compute_seconds=0.5, token_logprobs=[0])
    )
    with client(replay, tmp_path) as c:
        c.chat.completions.create(**ask(SURE))  # local unsure -> mini keeps
        c.chat.completions.create(**ask(UNSURE))  # local -> mini unsure -> gpt-4o
        rows = c.ledger.rows()
    with client(replay, tmp_path / "two", local=sure) as c:
        c.chat.completions.create(**ask(SURE))  # a plain local answer, no attempts
        rows += c.ledger.rows()
    rep = summarize(rows, by="tier")
    assert {g.key: g.requests for g in rep.groups} == {"local": 1, MINI: 1, FINAL: 1}
    spend = {t.tier: (t.tries, t.kept) for t in rep.tiers}
    assert spend == {"local": (3, 1), MINI: (2, 1), FINAL: (1, 1)}
    assert sum(t.usd for t in rep.tiers) == pytest.approx(sum(r.cost_usd for r in rows))

    out = CliRunner().invoke(
        app, ["report", "--by", "tier", "--ledger", str(tmp_path / "ledger.sqlite")]
    )
    assert out.exit_code == 0, out.output
    assert f"tier {MINI}: 2 tries, 1 answers kept (50.0%)" in out.output


def test_tune_what_tiers_learns_every_threshold_from_requests_that_went_up_every_tier(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from router.cli import app

    prompts = [f"question {i}" for i in range(300)]
    final = {p: f"answer {i}" for i, p in enumerate(prompts)}
    # the mini tier is right, and sure, on even questions; unsure and wrong on odd ones
    mini = {p: (final[p], 0.99) if i % 2 == 0 else ("wrong", 0.3) for i, p in enumerate(prompts)}

    def local(request):
        i = int(request.messages[-1]["content"].split()[1])
        right = i % 3 == 0  # right and sure on every third question
        return BackendResult(
            text=f"answer {i}" if right else "nope",
            model="smollm2",
            compute_seconds=0.01,
            token_logprobs=[-0.001] if right else [-1.5],
        )

    with ReplayCloud(final, model=FINAL, models={MINI: mini}) as cloud:
        collect = policy(cloud, threshold=1.0).replace(**{"thresholds.cascade": 1.0})
        with HybridClient(
            policy=collect,
            ledger=Ledger(tmp_path / "l.sqlite"),
            local=MockTransport(local, name="local"),
        ) as c:
            for p in prompts:  # thresholds of 1.0: every request goes up every tier
                c.chat.completions.create(**ask(p))
    (tmp_path / "policy.yaml").write_text(collect.to_yaml())
    out = CliRunner().invoke(
        app,
        [
            "tune", "--what", "tiers", "--target-quality", "0.95",
            "--policy", str(tmp_path / "policy.yaml"), "--ledger", str(tmp_path / "l.sqlite"),
            "--out", str(tmp_path / "tuned.yaml"),
        ],
    )  # fmt: skip
    assert out.exit_code == 0, out.output
    assert "300 labels" in out.output, out.output
    tuned = yaml.safe_load((tmp_path / "tuned.yaml").read_text())
    assert 0.3 < tuned["thresholds"]["cascade"] <= 0.999
    assert [t["model"] for t in tuned["cloud"]["tiers"]] == [MINI]
    assert 0.3 < tuned["cloud"]["tiers"][0]["threshold"] <= 0.99


def test_explored_requests_ask_every_tier_but_return_the_first_answer_that_stands(replay, tmp_path):
    from router.tuning.tiers import tier_data_from_ledger

    sure_local = MockTransport(
        lambda r: BackendResult(
            text="4", model="smollm2", compute_seconds=1.0, token_logprobs=[-0.001]
        ),
        name="local",
    )
    with client(replay, tmp_path, shadow={"rate": 1.0}) as c:
        tier_kept = c.chat.completions.create(**ask(SURE))  # local unsure, mini sure
        rows = c.ledger.rows()
    with client(replay, tmp_path / "b", local=sure_local, shadow={"rate": 1.0}) as c:
        local_kept = c.chat.completions.create(**ask(SURE))
        rows += c.ledger.rows()
        spend = c.ledger.cloud_spend(since=0)
    assert tier_kept.model == MINI and tier_kept.choices[0].message.content == "4"
    assert local_kept.route.route == "local" and local_kept.choices[0].message.content == "4"
    assert replay.requests_seen == 4  # mini + gpt-4o, twice: every tier was asked
    for row in rows:
        assert [a["tier"] for a in row.attempts] == ["local", MINI, "cloud"]
        assert row.attempts[-1]["answer"] == "4" and row.attempts[-1]["kept"] is False
        assert row.cost_usd == pytest.approx(sum(a["usd"] for a in row.attempts))
    assert [a["kept"] for a in rows[0].attempts] == [False, True, False]
    assert [a["kept"] for a in rows[1].attempts] == [True, False, False]
    assert spend == pytest.approx(rows[1].cost_usd)  # the budget counts the explored tries

    class Rows:
        def __init__(self, rows):
            self._rows = rows

        def rows(self):
            return self._rows

    data = tier_data_from_ledger(Rows(rows))
    assert data.names == ("local", MINI) and data.correct.tolist() == [[0, 1], [1, 1]]


def test_doctor_shows_the_cascade_tiers(replay, tmp_path):
    from typer.testing import CliRunner

    from router.cli import app

    (tmp_path / "p.yaml").write_text(policy(replay).to_yaml())
    args = ["doctor", "--policy", str(tmp_path / "p.yaml"), "--ledger", str(tmp_path / "l.sqlite")]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    assert f"cloud tiers   local -> {MINI} (>= 0.9) -> {FINAL}" in out.output
