"""Savings reports: figures equal hand-computed sums; groupings, --since and output formats."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from router.ledger import Ledger, LedgerEntry
from router.ledger.reports import (
    parse_since,
    percentile,
    plot,
    render_table,
    summarize,
    to_csv,
    to_json,
)

DAY1 = datetime(2026, 11, 1, 9, 0, tzinfo=timezone.utc).timestamp()
DAY2 = datetime(2026, 11, 2, 23, 30, tzinfo=timezone.utc).timestamp()


def _rows() -> list[LedgerEntry]:
    """Five known calls over two UTC days (hand-computed figures in the tests below)."""
    return [
        LedgerEntry("a", DAY1, "local", model="smollm2", cost_usd=0.001,
                    baseline_cost_usd=0.010, latency_ms=100, prompt_tokens=10,
                    completion_tokens=5),
        LedgerEntry("b", DAY1 + 60, "cloud", model="gpt-4o-mini", cost_usd=0.020,
                    baseline_cost_usd=0.020, latency_ms=900, prompt_tokens=20,
                    completion_tokens=30),
        LedgerEntry("c", DAY1 + 120, "cache", model="smollm2", cost_usd=0.0,
                    baseline_cost_usd=0.010, latency_ms=1, cache_hit=True, prompt_tokens=10,
                    completion_tokens=5),
        LedgerEntry("d", DAY2, "cloud", model="gpt-4o-mini", cost_usd=0.030,
                    baseline_cost_usd=0.030, latency_ms=1200, prompt_tokens=40,
                    completion_tokens=60, escalated=True),
        LedgerEntry("e", DAY2 + 10, "none", error_type="InvalidRequest", latency_ms=2),
    ]  # fmt: skip


def test_totals_equal_hand_computed_sums() -> None:
    t = summarize(_rows(), by=None).totals
    assert t.requests == 5 and t.errors == 1 and t.cache_hits == 1
    assert t.cost_usd == pytest.approx(0.051)
    assert t.baseline_cost_usd == pytest.approx(0.070)
    assert t.savings_usd == pytest.approx(0.019)
    assert t.savings_pct == pytest.approx(100 * 0.019 / 0.070)
    assert t.local_share == pytest.approx(2 / 5)  # local + cache
    assert (t.prompt_tokens, t.completion_tokens) == (80, 100)
    assert t.p50_latency_ms == pytest.approx(100)  # sorted 1, 2, 100, 900, 1200
    assert t.p95_latency_ms == pytest.approx(900 + 0.8 * 300)


def test_groups_by_route() -> None:
    report = summarize(_rows(), by="route")
    groups = {g.key: g for g in report.groups}
    assert list(groups) == ["cache", "cloud", "local", "none"]
    cloud = groups["cloud"]
    assert cloud.requests == 2 and cloud.cost_usd == pytest.approx(0.05)
    assert cloud.savings_usd == pytest.approx(0.0) and cloud.local_share == 0.0
    assert groups["local"].savings_pct == pytest.approx(90.0)
    assert groups["none"].errors == 1 and groups["none"].savings_pct == 0.0


def test_groups_by_utc_day_and_model() -> None:
    by_day = summarize(_rows(), by="day")
    assert [(g.key, g.requests) for g in by_day.groups] == [("2026-11-01", 3), ("2026-11-02", 2)]
    assert by_day.groups[0].cost_usd == pytest.approx(0.021)
    assert by_day.groups[0].savings_usd == pytest.approx(0.019)
    by_model = summarize(_rows(), by="model")
    assert [(g.key, g.requests) for g in by_model.groups] == [
        ("(none)", 1),
        ("gpt-4o-mini", 2),
        ("smollm2", 2),
    ]


def test_group_sums_add_up_to_totals() -> None:
    for by in ("day", "route", "model"):
        report = summarize(_rows(), by=by)
        assert sum(g.requests for g in report.groups) == report.totals.requests
        assert sum(g.cost_usd for g in report.groups) == pytest.approx(report.totals.cost_usd)


def test_empty_ledger_gives_zeros() -> None:
    t = summarize([], by="day").totals
    assert (t.requests, t.cost_usd, t.savings_pct, t.local_share, t.p95_latency_ms) == (
        0,
        0.0,
        0.0,
        0.0,
        0.0,
    )


def test_unknown_grouping_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="'week'.*day, route, model"):
        summarize(_rows(), by="week")


def test_since_filters_through_the_ledger(tmp_path: Path) -> None:
    with Ledger(tmp_path / "l.sqlite") as led:
        for row in _rows():
            led.record(row)
        report = summarize(led.rows(since=parse_since("2026-11-02")), by="route")
    assert report.totals.requests == 2
    assert report.totals.cost_usd == pytest.approx(0.030)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=timezone.utc).timestamp()),
        ("2026-11-01T09:30:00", datetime(2026, 11, 1, 9, 30, tzinfo=timezone.utc).timestamp()),
        ("2026-11-01T09:30:00Z", datetime(2026, 11, 1, 9, 30, tzinfo=timezone.utc).timestamp()),
        (
            "2026-11-01T11:30:00+02:00",
            datetime(2026, 11, 1, 9, 30, tzinfo=timezone.utc).timestamp(),
        ),
        ("7d", 1_000_000.0 - 7 * 86400),
        ("24h", 1_000_000.0 - 86400),
        ("30m", 1_000_000.0 - 1800),
        (" 2W ", 1_000_000.0 - 14 * 86400),
    ],
)
def test_parse_since_accepts_dates_datetimes_and_ages(text: str, expected: float) -> None:
    assert parse_since(text, now=1_000_000.0) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "yesterday", "7 days", "-3d", "2026-13-01", "10y"])
def test_parse_since_rejects_other_text(text: str) -> None:
    with pytest.raises(ValueError, match="invalid --since value"):
        parse_since(text)


def test_percentile_interpolates_like_numpy() -> None:
    assert percentile([], 50) == 0.0
    assert percentile([5.0], 95) == 5.0
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == pytest.approx(2.5)
    assert percentile(list(range(101)), 95) == pytest.approx(95.0)


def test_json_and_csv_carry_the_same_figures() -> None:
    report = summarize(_rows(), by="route")
    data = json.loads(to_json(report))
    assert data["by"] == "route"
    assert data["totals"]["savings_usd"] == pytest.approx(0.019)
    assert [g["key"] for g in data["groups"]] == ["cache", "cloud", "local", "none"]
    lines = list(csv.DictReader(io.StringIO(to_csv(report))))
    assert [line["route"] for line in lines] == ["cache", "cloud", "local", "none", "total"]
    assert float(lines[-1]["cost_usd"]) == pytest.approx(0.051)
    assert int(lines[1]["requests"]) == 2


def test_table_has_a_row_per_group_plus_total() -> None:
    table = render_table(summarize(_rows(), by="day"))
    assert table.row_count == 3
    first_column = list(table.columns[0].cells)
    assert first_column == ["2026-11-01", "2026-11-02", "total"]


def test_plot_writes_an_image(tmp_path: Path) -> None:
    out = plot(summarize(_rows(), by="day"), tmp_path / "sub" / "savings.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_serving_status_says_why_the_adapter_takes_no_traffic(tmp_path: Path) -> None:
    """#9.18: ``hybridgate report`` prints the status the nightly run wrote beside the policy."""
    from router.ledger.reports import serving_status_lines, serving_status_path

    policy = tmp_path / "policy.yaml"
    assert serving_status_lines(policy) == []  # nothing written yet: nothing to say
    status = {
        "adapter": "v0003",
        "takes_traffic": False,
        "shadow_rate": 0.1,
        "reason": "the labels cannot show quality >= 0.97 yet: need at least 50, have 12",
        "last_candidate": {"version": "v0003", "status": "promoted", "reason": "ok"},
    }
    serving_status_path(policy).write_text(json.dumps(status))
    (line,) = serving_status_lines(policy)
    assert "adapter v0003 takes no traffic" in line and "10% shadow-labelled" in line
    assert line.endswith("need at least 50, have 12")
    status.update(
        takes_traffic=True,
        local_classes=["Reply with the label."],
        reason="cascade threshold 0.8",
        last_candidate={"version": "v0004", "status": "rejected", "reason": "no gain"},
    )
    serving_status_path(policy).write_text(json.dumps(status))
    first, second = serving_status_lines(policy)
    assert "answers 1 traffic class(es) locally" in first
    assert second == "last candidate v0004 was rejected: no gain"
    serving_status_path(policy).write_text("{torn")
    assert serving_status_lines(policy) == []  # a broken file never breaks the report


def test_by_class_flags_the_class_where_local_does_not_pay() -> None:
    """Per traffic class (system prompt): the intent bot saves, the essay class costs more
    locally (slow long generations plus escalations paying twice) and is flagged."""
    from router.ledger.reports import unpaid_lines

    bot = [
        {"role": "system", "content": "Reply with the intent."},
        {"role": "user", "content": "x"},
    ]
    essay = [{"role": "system", "content": "Write an essay."}, {"role": "user", "content": "y"}]
    rows = [
        LedgerEntry("1", DAY1, "local", cost_usd=0.0001, baseline_cost_usd=0.001, messages=bot),
        LedgerEntry("2", DAY1, "cloud", cost_usd=0.001, baseline_cost_usd=0.001, messages=bot),
        LedgerEntry("3", DAY1, "local", cost_usd=0.004, baseline_cost_usd=0.002, messages=essay),
        LedgerEntry(
            "4",
            DAY1,
            "cloud",
            cost_usd=0.003,
            baseline_cost_usd=0.002,
            messages=essay,
            escalated=True,
        ),  # fmt: skip
        LedgerEntry("5", DAY1, "cloud", cost_usd=0.002, baseline_cost_usd=0.002),
    ]
    report = summarize(rows, by="class")
    groups = {g.key: g for g in report.groups}
    assert groups["Reply with the intent."].local_pays is True
    assert groups["Write an essay."].local_pays is False
    assert groups["Write an essay."].savings_usd == pytest.approx(-0.003)
    assert groups["(content not stored)"].local_pays is None  # all-cloud: nothing to judge
    lines = unpaid_lines(report)
    assert len(lines) == 1 and "'Write an essay.'" in lines[0] and "all-cloud" in lines[0]
    table = render_table(report)
    assert [c.header for c in table.columns][-1] == "local pays"
    assert list(table.columns[-1].cells)[:3] == ["-", "yes", "NO"]
