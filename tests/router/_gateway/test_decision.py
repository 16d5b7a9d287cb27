"""Routing rules, modes and the daily budget."""

from __future__ import annotations

import numpy as np
import pytest

from router._gateway.decision import Decider
from router._gateway.validation import build_request
from router.errors import BudgetExceeded
from router.policy import policy_from_dict


class FixedScore:
    """A classifier stand-in whose P(local ok) is set by the test."""

    def __init__(self, p: float) -> None:
        self.p = p

    def predict_proba(self, X):  # noqa: N803
        return np.array([[1 - self.p, self.p]] * len(X))


def policy(mode="hybrid", **sections):
    return policy_from_dict({"mode": mode, "cloud": {"model": "gpt-4o-mini"}, **sections})


def req(text="hello", **kw):
    return build_request(
        {"messages": [{"role": "user", "content": text}], **kw}, default_model="gpt-4o-mini"
    )


@pytest.mark.parametrize(
    "p, route",
    [(0.95, "local"), (0.5, "cascade"), (0.1, "cloud")],
)
def test_hybrid_preroutes_clear_cases_and_cascades_the_middle(p, route):
    pol = policy(thresholds={"hybrid_low": 0.3, "hybrid_high": 0.8})
    decision = Decider(pol, classifier=FixedScore(p)).decide(req())
    assert decision.route == route and decision.score == pytest.approx(p)


def test_route_mode_thresholds_the_score():
    pol = policy("route", thresholds={"route": 0.6})
    assert Decider(pol, classifier=FixedScore(0.61)).decide(req()).route == "local"
    assert Decider(pol, classifier=FixedScore(0.59)).decide(req()).route == "cloud"
    assert Decider(pol).decide(req()).reason == "no_classifier"


def test_tools_and_response_format_go_to_cloud_unless_pinned_local():
    pol = policy("hybrid")
    tools = [{"type": "function", "function": {"name": "f", "parameters": {}}}]
    assert Decider(pol).decide(req(tools=tools)).reason == "rule:tools"
    assert (
        Decider(pol).decide(req(response_format={"type": "json_object"})).reason
        == "rule:response_format"
    )
    # mode: local means always local: the local backend refuses what it cannot do instead.
    pinned = Decider(policy("local")).decide(req(tools=tools))
    assert (pinned.route, pinned.cloud_allowed, pinned.reason) == ("local", False, "policy:local")


def test_every_pin_to_local_forbids_the_cloud_and_says_who_pinned_it():
    pol = policy("hybrid", rules={"force_local_tags": ["private"], "force_cloud_tags": ["x"]})
    d = Decider(pol, classifier=FixedScore(0.0))
    by_tag = d.decide(req(metadata={"kind": "private", "team": "x"}))  # private wins
    by_meta = d.decide(req(metadata={"route": "local"}))
    assert (by_tag.route, by_tag.cloud_allowed) == ("local", False)
    assert by_tag.reason == "rule:forced_local(tag:private)"
    assert (by_meta.cloud_allowed, by_meta.reason) == (False, "rule:forced_local(metadata.route)")
    assert d.decide(req()).cloud_allowed  # free to choose: fallback allowed


def test_forced_routes_by_metadata_and_tags():
    pol = policy("hybrid", rules={"force_cloud_tags": ["legal"], "force_local_tags": ["faq"]})
    d = Decider(pol, classifier=FixedScore(0.99))
    assert d.decide(req(metadata={"team": "legal"})).reason == "rule:forced_cloud"
    assert d.decide(req(metadata={"route": "cloud"})).route == "cloud"
    low = Decider(pol, classifier=FixedScore(0.0))
    assert low.decide(req(metadata={"kind": "faq"})).route == "local"


def test_prompt_beyond_local_limit_goes_to_cloud():
    pol = policy("cascade", rules={"max_local_prompt_tokens": 50})
    assert Decider(pol).decide(req("short")).route == "cascade"
    decision = Decider(pol).decide(req("word " * 400))
    assert decision.route == "cloud" and decision.reason == "rule:prompt_too_long"


def test_budget_cap_crossing_mid_day_sends_traffic_local():
    spent = {"usd": 0.0}
    pol = policy("route", budget={"daily_usd": 1.0, "on_exceeded": "local"})
    d = Decider(pol, classifier=FixedScore(0.0), cloud_spend_today=lambda: spent["usd"])
    assert d.decide(req()).route == "cloud"
    spent["usd"] = 1.0  # the request that crossed the cap has been ledgered
    decision = d.decide(req())
    assert decision.route == "local" and decision.reason == "budget:exhausted"


def test_budget_cap_fails_clearly_when_policy_says_fail():
    pol = policy("cloud", budget={"daily_usd": 0.5, "on_exceeded": "fail"})
    d = Decider(pol, cloud_spend_today=lambda: 0.7)
    with pytest.raises(BudgetExceeded, match=r"daily cloud budget of \$0.50"):
        d.decide(req())


def test_budget_counts_real_ledger_spend(tmp_path):
    """The client's budget reads today's cloud spend from the ledger, so it survives restarts."""
    import time

    from router.ledger import Ledger, LedgerEntry

    ledger = Ledger(tmp_path / "l.sqlite")
    ledger.record(LedgerEntry(request_id="a", ts=time.time(), route="cloud", cost_usd=0.4))
    ledger.record(
        LedgerEntry(request_id="b", ts=time.time() - 3 * 86400, route="cloud", cost_usd=9)
    )
    ledger.record(LedgerEntry(request_id="c", ts=time.time(), route="local", cost_usd=5))
    from router._gateway.core import _midnight

    assert ledger.cloud_spend(since=_midnight("UTC")) == pytest.approx(0.4)


def test_classes_the_adapter_did_not_earn_go_to_the_cloud():
    """#9.17: ``rules.local_classes`` (written from the adapter's per-class gate) keeps the
    math a label student failed on away from it, whatever the mode or the score."""
    intent = "Reply with the intent label only."
    pol = policy("hybrid", rules={"local_classes": [intent]})
    d = Decider(pol, classifier=FixedScore(0.99))
    math = d.decide(req("Natalia sold 48 clips in April. How many in May?"))
    assert (math.route, math.reason) == ("cloud", "rule:class_not_served")
    labelled = build_request(
        {"messages": [{"role": "system", "content": intent}, {"role": "user", "content": "hi"}]},
        default_model="gpt-4o-mini",
    )
    assert d.decide(labelled).route == "local"
    none_earned = Decider(policy("cascade", rules={"local_classes": []}))
    assert none_earned.decide(labelled).reason == "rule:class_not_served"
    assert Decider(policy("cascade")).decide(req()).route == "cascade"  # null: every class
