"""Shadow labelling under bursts (issue #9 item 20): drops are counted, the default cap fits."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from router._gateway.shadow import DEFAULT_MAX_PENDING, ShadowLabeller
from router._gateway.validation import build_request
from router.ledger import EVENT_SHADOW_DROPPED, Ledger
from router.policy import load_policy
from router.types import BackendResult


class _BlockedLocal:
    """A local model that answers only once released: a burst piles up in the queue."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def complete(self, request):
        self.release.wait(10)
        return BackendResult(text="card_arrival", token_logprobs=[-0.1])


def _request(i: int):
    return build_request(
        {"messages": [{"role": "user", "content": f"where is my card {i}"}]},
        default_model="gpt-4o-mini",
    )


def _burst(labeller: ShadowLabeller, n: int) -> int:
    accepted = sum(
        labeller.submit(_request(i), BackendResult(text="card_arrival")) for i in range(n)
    )
    return n - accepted


@pytest.fixture
def ledger(tmp_path: Path):
    with Ledger(tmp_path / "ledger.sqlite") as led:
        yield led


def test_drops_past_the_cap_are_counted_in_the_ledger(ledger: Ledger) -> None:
    local = _BlockedLocal()
    labeller = ShadowLabeller(ledger=ledger, local=lambda: local, max_pending=4)
    try:
        assert _burst(labeller, 10) == 6
    finally:
        local.release.set()
        labeller.drain(timeout=10)
        labeller.close()
    assert labeller.dropped == 6
    assert ledger.count_events(EVENT_SHADOW_DROPPED) == 6
    assert ledger.shadow_summary() == {"dropped": 6}
    assert len(ledger.labelled()) == 0  # labels join request rows; none were recorded here
    assert ledger.count() == 0  # drops are events, not requests: report totals are unchanged


def test_the_default_cap_takes_the_burst_that_used_to_lose_28_of_92(ledger: Ledger) -> None:
    local = _BlockedLocal()
    labeller = ShadowLabeller(ledger=ledger, local=lambda: local)
    try:
        assert _burst(labeller, 92) == 0
    finally:
        local.release.set()
        labeller.drain(timeout=30)
        labeller.close()
    assert ledger.count_events(EVENT_SHADOW_DROPPED) == 0


@pytest.mark.parametrize("name", ["default", "cost-saver", "quality-first"])
def test_bundled_policies_use_the_measured_default_cap(name: str) -> None:
    policy = load_policy(name)
    assert policy.shadow.max_pending == DEFAULT_MAX_PENDING >= 92


def test_a_ledger_stand_in_without_events_still_drops_quietly() -> None:
    class Labels:
        def add_label(self, *args, **kwargs) -> None:
            pass

    local = _BlockedLocal()
    labeller = ShadowLabeller(ledger=Labels(), local=lambda: local, max_pending=1)
    try:
        assert _burst(labeller, 3) == 2
    finally:
        local.release.set()
        labeller.drain(timeout=10)
        labeller.close()


def test_a_ledger_from_before_the_events_table_reads_zero_drops(tmp_path: Path) -> None:
    import sqlite3

    from router.ledger import MIGRATIONS, migrate

    path = tmp_path / "old.sqlite"
    conn = sqlite3.connect(path, isolation_level=None)
    assert migrate(conn, MIGRATIONS[:1]) == 1  # a ledger written before schema 2
    conn.close()
    with Ledger(path, read_only=True) as led:  # report's open: nothing is migrated
        assert led.shadow_summary() == {"dropped": 0}
    with Ledger(path) as led:  # a writer migrates it, and drops count from then on
        led.record_event(EVENT_SHADOW_DROPPED, request_id="r1")
        assert led.count_events(EVENT_SHADOW_DROPPED) == 1


def test_shadow_labels_are_made_by_the_shared_labelling_step(ledger: Ledger) -> None:
    """Shadow labelling and nightly relabelling store labels one way
    (``router.scoring.judges.label_local_answer``): judge picked from the cloud answer,
    confidence from the token log-probabilities, local cost by the ledger's formula."""
    import math

    from router.ledger import LedgerEntry
    from router.scoring.judges import label_local_answer

    asked: list = []

    class _Local:
        def complete(self, request):
            asked.append(request)
            return BackendResult(text="card_arrival", token_logprobs=[-0.2], compute_seconds=2.0)

    request = _request(0)
    ledger.record(LedgerEntry(request_id=request.request_id, ts=1.0, route="cloud"))
    labeller = ShadowLabeller(ledger=ledger, local=_Local, usd_per_hour=3.6, prices=object())
    try:
        assert labeller.submit(request, BackendResult(text="card_arrival"))
        labeller.drain(timeout=10)
    finally:
        labeller.close()
    # a label is background work: the local queue's wait bound never refuses it
    assert [r.background for r in asked] == [True] and not request.background
    ((_, stored),) = ledger.labelled()
    assert (stored.judge, stored.label, stored.local_answer) == ("label_match", 1.0, "card_arrival")
    assert stored.local_confidence == pytest.approx(math.exp(-0.2))
    assert stored.local_cost_usd == pytest.approx(2.0 * 3.6 / 3600)

    again = label_local_answer(
        ledger,
        request.request_id,
        _Local().complete(request),
        reference="card_arrival",
        usd_per_hour=3.6,
    )
    ((_, relabelled),) = ledger.labelled()  # replaced, not added
    for field in ("judge", "label", "local_answer", "local_confidence", "local_cost_usd"):
        assert getattr(relabelled, field) == getattr(again, field) == getattr(stored, field)


def test_the_llm_judge_needs_a_scorer() -> None:
    from router.scoring.judges import label_local_answer

    class _Nowhere:
        def add_label(self, *args, **kwargs) -> None:
            raise AssertionError("nothing may be stored")

    with pytest.raises(ValueError, match="llm_judge"):
        label_local_answer(
            _Nowhere(), "r1", BackendResult(text="x"), reference="y", usd_per_hour=0, judge="llm"
        )
