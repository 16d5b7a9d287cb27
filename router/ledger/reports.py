"""Savings reports over ledger rows: totals, per-day/route/model groups, table/JSON/CSV/plot.

Pure Python over :class:`~router.ledger.LedgerEntry` lists so ``hybridgate report`` starts
fast; rich and matplotlib are imported only by the function that draws with them.
Days are UTC calendar days, and ``parse_since`` reads dates without a zone as UTC, so a
report is the same wherever it is run.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from router._paths import STATUS_SUFFIX, serving_status_path
from router._text import class_label
from router.ledger import LedgerEntry

if TYPE_CHECKING:
    from rich.table import Table

GROUPINGS: tuple[str | None, ...] = (None, "day", "route", "model", "class", "tenant", "tier")
"""Accepted values of ``summarize(by=...)``."""

LOCAL_ROUTES = frozenset({"local", "cache"})
"""Routes served without paying the cloud; they make up ``local_share``."""


@dataclass
class ReportGroup:
    """The figures of one group of requests (or of all of them, for the totals)."""

    key: str
    requests: int = 0
    errors: int = 0
    """Rows with an ``error_type``."""
    cost_usd: float = 0.0
    """What was actually paid (cloud charges + local compute)."""
    baseline_cost_usd: float = 0.0
    """What sending every request to the cloud model would have cost."""
    savings_usd: float = 0.0
    """``baseline_cost_usd - cost_usd`` (negative when routing cost more)."""
    savings_pct: float = 0.0
    """Savings as a percentage of the baseline (0 when the baseline is 0)."""
    local_share: float = 0.0
    """Fraction (0..1) of requests served locally or from the cache."""
    cache_hits: int = 0
    p50_latency_ms: float = 0.0
    p95_latency_ms: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    local_pays: bool | None = None
    """None without local answers; else whether this group cost less than all-cloud would."""


@dataclass
class Report:
    """A summary of ledger rows: ``totals`` plus one group per key of ``by``.

    >>> report = summarize(ledger.rows(since=parse_since("7d")), by="day")
    >>> report.totals.savings_usd, [g.key for g in report.groups]
    (1.23, ['2026-11-01', '2026-11-02'])
    """

    by: str | None
    totals: ReportGroup
    groups: list[ReportGroup] = field(default_factory=list)
    tiers: list[TierSpend] = field(default_factory=list)
    """With ``by="tier"``: what each tier's tries cost, kept or not (the price of a cascade)."""


@dataclass
class TierSpend:
    """One cascade tier over a report's rows: how often it was tried, kept, and what it cost."""

    tier: str
    """``local``, or the cloud model asked."""
    tries: int = 0
    kept: int = 0
    """Tries whose answer was returned."""
    errors: int = 0
    usd: float = 0.0
    """What all its tries cost, the discarded ones included."""
    kept_share: float = 0.0
    """``kept / tries``."""


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default method) without importing numpy.

    Args:
        values: Numbers, any order.
        q: Percentile in [0, 100].

    Returns:
        The percentile; 0.0 for no values.
    """
    if not values:
        return 0.0
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _day(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d")


CLASS_KEY_WIDTH = 48
"""``--by class`` keys: a traffic class's system prompt, cut to this many characters."""


def class_key(entry: LedgerEntry) -> str:
    """The traffic class (system prompt) of a row, short enough for a table cell."""
    if entry.messages is None:
        return "(content not stored)"
    from local_models.answer_sets import traffic_class

    return class_label(traffic_class(entry.messages), width=CLASS_KEY_WIDTH, quote=False)


_KEYS: dict[str, Callable[[LedgerEntry], str]] = {
    "day": lambda e: _day(e.ts),
    "route": lambda e: e.route or "none",
    "model": lambda e: e.model or "(none)",
    "class": class_key,
    "tenant": lambda e: e.tenant or "(none)",
    "tier": lambda e: answering_tier(e),
}


def answering_tier(entry: LedgerEntry) -> str:
    """Which tier's answer a row returned: ``local``, the cloud model, ``cache`` or ``none``."""
    if entry.route in ("local", "cache", "none"):
        return entry.route
    for attempt in entry.attempts or ():
        if attempt.get("kept"):
            return str(attempt.get("model") or "(none)")
    return entry.model or "(none)"


def _tries(entry: LedgerEntry) -> list[dict[str, Any]]:
    """A row's tries: recorded for an N-tier cascade; derived for the two-tier one (an
    escalated row paid the local try, ``cost - baseline``, and the cloud's, ``baseline``)."""
    if entry.attempts:
        return list(entry.attempts)
    if entry.route == "local":
        return [{"tier": "local", "usd": entry.cost_usd, "kept": entry.error_type is None}]
    if entry.route != "cloud":
        return []
    tries = []
    if entry.escalated:
        local_usd = max(entry.cost_usd - entry.baseline_cost_usd, 0.0)
        tries.append({"tier": "local", "usd": local_usd, "kept": False})
    kept = entry.error_type is None
    usd = entry.baseline_cost_usd if entry.escalated else entry.cost_usd
    tries.append({"tier": "cloud", "model": entry.model, "usd": usd, "kept": kept})
    if not kept:
        tries[-1]["error"] = entry.error_type
    return tries


def tier_spend(rows: Iterable[LedgerEntry]) -> list[TierSpend]:
    """Per tier (local first, then cloud models by spend): tries, answers kept, USD paid."""
    out: dict[str, TierSpend] = {}
    for e in rows:
        for t in _tries(e):
            name = "local" if t.get("tier") == "local" else str(t.get("model") or "(cloud)")
            spend = out.setdefault(name, TierSpend(name))
            spend.tries += 1
            spend.kept += bool(t.get("kept"))
            spend.errors += bool(t.get("error"))
            spend.usd += float(t.get("usd") or 0.0)
    for spend in out.values():
        spend.kept_share = spend.kept / spend.tries if spend.tries else 0.0
    local = [out.pop("local")] if "local" in out else []
    return local + sorted(out.values(), key=lambda t: t.usd)


def _group(key: str, rows: Iterable[LedgerEntry]) -> ReportGroup:
    g = ReportGroup(key=key)
    latencies: list[float] = []
    served_locally = 0
    any_local = False
    for e in rows:
        g.requests += 1
        g.errors += e.error_type is not None
        g.cost_usd += e.cost_usd
        g.baseline_cost_usd += e.baseline_cost_usd
        g.cache_hits += bool(e.cache_hit)
        served_locally += e.route in LOCAL_ROUTES
        any_local |= e.route == "local" or bool(e.escalated)
        g.prompt_tokens += e.prompt_tokens
        g.completion_tokens += e.completion_tokens
        latencies.append(e.latency_ms)
    g.savings_usd = g.baseline_cost_usd - g.cost_usd
    g.savings_pct = 100.0 * g.savings_usd / g.baseline_cost_usd if g.baseline_cost_usd else 0.0
    g.local_share = served_locally / g.requests if g.requests else 0.0
    if any_local:
        g.local_pays = g.savings_usd > 0
    g.p50_latency_ms = percentile(latencies, 50)
    g.p95_latency_ms = percentile(latencies, 95)
    return g


def summarize(rows: list[LedgerEntry], *, by: str | None = "route") -> Report:
    """Add up ledger rows into totals and per-group figures.

    Args:
        rows: Entries, e.g. ``ledger.rows(since=...)``.
        by: ``"day"`` (UTC), ``"route"``, ``"model"``, ``"class"`` (traffic class: the system
            prompt), ``"tenant"`` (``hybridgate serve --keys``), ``"tier"`` (the cascade tier
            that answered, plus each tier's spend in ``tiers``) or ``None`` (totals only).

    Returns:
        The report; groups sorted by key.

    Raises:
        ValueError: ``by`` is not one of the accepted groupings.
    """
    if by not in GROUPINGS:
        raise ValueError(
            f"cannot group a report by {by!r}: use one of day, route, model, class, tenant, tier "
            "(or None for totals)"
        )
    totals = _group("total", rows)
    groups: list[ReportGroup] = []
    if by is not None:
        keyfn = _KEYS[by]
        buckets: dict[str, list[LedgerEntry]] = {}
        for e in rows:
            buckets.setdefault(keyfn(e), []).append(e)
        groups = [_group(k, buckets[k]) for k in sorted(buckets)]
    tiers = tier_spend(rows) if by == "tier" else []
    return Report(by=by, totals=totals, groups=groups, tiers=tiers)


# --------------------------------------------------------------------------- output

_COLUMNS: tuple[tuple[str, str], ...] = (
    ("requests", "requests"),
    ("errors", "errors"),
    ("cost_usd", "cost $"),
    ("baseline_cost_usd", "all-cloud $"),
    ("savings_usd", "saved $"),
    ("savings_pct", "saved %"),
    ("local_share", "local %"),
    ("cache_hits", "cache hits"),
    ("p50_latency_ms", "p50 ms"),
    ("p95_latency_ms", "p95 ms"),
    ("prompt_tokens", "prompt tok"),
    ("completion_tokens", "completion tok"),
)


def _fmt(name: str, value: Any) -> str:
    if name.endswith("_usd"):
        return f"{value:.4f}"
    if name == "savings_pct":
        return f"{value:.1f}"
    if name == "local_share":
        return f"{100 * value:.1f}"
    if name.endswith("_ms"):
        return f"{value:.1f}"
    return str(value)


def render_table(report: Report) -> Table:
    """A rich table: one row per group, then a bold total row.

    Args:
        report: From :func:`summarize`.

    Returns:
        A ``rich.table.Table`` ready for ``Console().print``.
    """
    from rich.table import Table

    title = "hybridgate savings" + (f" by {report.by}" if report.by else "")
    table = Table(title=title)
    table.add_column(report.by or "", style="cyan")
    for _, header in _COLUMNS:
        table.add_column(header, justify="right")
    pays = report.by == "class"
    if pays:
        table.add_column("local pays", justify="center")

    def cells(g: ReportGroup) -> list[str]:
        row = [_fmt(n, getattr(g, n)) for n, _ in _COLUMNS]
        if pays:
            row.append("-" if g.local_pays is None else "yes" if g.local_pays else "NO")
        return row

    for g in report.groups:
        table.add_row(g.key, *cells(g), style=None if g.local_pays is not False else "red")
    table.add_row("total", *cells(report.totals), style="bold")
    return table


def tier_lines(report: Report) -> list[str]:
    """Under a ``--by tier`` table: each tier's tries, answers kept and spend."""
    total = sum(t.usd for t in report.tiers) or 1.0
    return [
        f"tier {t.tier}: {t.tries} tries, {t.kept} answers kept ({100 * t.kept_share:.1f}%), "
        f"{t.errors} failed, ${t.usd:.4f} ({100 * t.usd / total:.1f}% of spend)"
        for t in report.tiers
    ]


def unpaid_lines(report: Report) -> list[str]:
    """One line per group whose local answers (and escalations) cost more than all-cloud."""
    return [
        f"local does not pay on {report.by} {g.key!r}: cost ${g.cost_usd:.4f} vs "
        f"${g.baseline_cost_usd:.4f} all-cloud; `hybridgate tune` sends such classes to the cloud"
        for g in report.groups
        if g.local_pays is False
    ]


def to_json(report: Report) -> str:
    """The report as JSON (``{"by", "totals", "groups"}``, raw numbers, no rounding)."""
    return json.dumps(asdict(report), indent=2)


def to_csv(report: Report) -> str:
    """The report as CSV: header, one line per group, then a ``total`` line.

    Returns:
        CSV text; the first column is the group key.
    """
    buf = io.StringIO()
    names = [n for n, _ in _COLUMNS]
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow([report.by or "group", *names])
    for g in [*report.groups, report.totals]:
        writer.writerow([g.key, *(getattr(g, n) for n in names)])
    return buf.getvalue()


def plot(report: Report, path: str | Path) -> Path:
    """Bar chart of actual cost vs all-cloud baseline per group, saved to ``path``.

    Args:
        report: From :func:`summarize`; with ``by=None`` one pair of bars for the totals.
        path: Image file (format from the suffix, e.g. ``.png``, ``.svg``).

    Returns:
        The written path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = report.groups or [report.totals]
    keys = [g.key for g in groups]
    xs = list(range(len(groups)))
    width = 0.4
    fig, ax = plt.subplots(figsize=(max(6.0, 0.8 * len(groups) + 2), 4))
    try:
        ax.bar([x - width / 2 for x in xs], [g.baseline_cost_usd for g in groups], width,
               label="all-cloud baseline", color="#bbbbbb")  # fmt: skip
        ax.bar([x + width / 2 for x in xs], [g.cost_usd for g in groups], width,
               label="actual (hybridgate)", color="#2a7ab0")  # fmt: skip
        ax.set_xticks(xs)
        ax.set_xticklabels(keys, rotation=45 if len(keys) > 6 else 0, ha="right")
        ax.set_ylabel("USD")
        t = report.totals
        ax.set_title(
            f"Cost vs all-cloud baseline: saved ${t.savings_usd:.4f} ({t.savings_pct:.1f}%)"
        )
        ax.legend()
        fig.tight_layout()
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(out)
    finally:
        plt.close(fig)
    return out


def shadow_line(shadow: dict[str, int]) -> str:
    """The line under the report table: labels lost to a full shadow queue, and what to do.

    Args:
        shadow: ``Ledger.shadow_summary()`` (``{"dropped": n}``).
    """
    dropped = shadow.get("dropped", 0)
    hint = "; raise shadow.max_pending or shadow.workers" if dropped else ""
    return f"shadow jobs dropped (queue full): {dropped}{hint}"


# --------------------------------------------------------------------------- serving status

SERVING_STATUS_SUFFIX = STATUS_SUFFIX
"""``hybridgate distill`` writes ``policy.status.json`` beside the ``policy.yaml`` it writes
(``serving_status_path``, from ``router._paths`` with every other location)."""


def read_serving_status(policy_path: str | Path) -> dict[str, Any] | None:
    """The status written with the policy at ``policy_path``; None when there is none (or it
    cannot be read: a report must not fail over it)."""
    f = serving_status_path(policy_path)
    try:
        data = json.loads(f.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def serving_status_lines(policy_path: str | Path) -> list[str]:
    """What ``hybridgate report`` prints under the figures: which adapter serves what, and why.

    A new adapter that has not shown it meets the quality target takes no traffic; without
    this line the report would only show a 0% local share and leave the reader guessing.
    """
    status = read_serving_status(policy_path)
    if not status:
        return []
    adapter = status.get("adapter") or "none"
    when = ""
    if isinstance(status.get("written"), (int, float)):
        stamp = datetime.fromtimestamp(status["written"], tz=timezone.utc)
        when = f" (as of {stamp:%Y-%m-%d %H:%M} UTC)"
    reason = status.get("reason") or "no reason recorded"
    if status.get("takes_traffic"):
        classes = status.get("local_classes")
        scope = "every traffic class" if classes is None else f"{len(classes)} traffic class(es)"
        head = f"serving{when}: adapter {adapter} answers {scope} locally: {reason}"
    else:
        rate = status.get("shadow_rate")
        shadow = f", {rate:.0%} shadow-labelled" if isinstance(rate, (int, float)) else ""
        head = (
            f"serving{when}: adapter {adapter} takes no traffic (every request goes to the "
            f"cloud{shadow}): {reason}"
        )
    lines = [head]
    last = status.get("last_candidate")
    if isinstance(last, dict) and last.get("status") == "rejected":
        lines.append(f"last candidate {last.get('version')} was rejected: {last.get('reason')}")
    return lines


# --------------------------------------------------------------------------- --since

_RELATIVE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_since(text: str, *, now: float | None = None) -> float:
    """Read a ``--since`` value into a Unix time.

    Args:
        text: A date (``2026-11-01``, UTC midnight), an ISO datetime (``2026-11-01T09:30``,
            ``...Z`` or ``...+02:00``; no zone means UTC) or an age (``30m``, ``24h``, ``7d``,
            ``2w``, ``90s``).
        now: Reference time for ages; default the current time.

    Returns:
        Unix time.

    Raises:
        ValueError: The text is none of these forms.
    """
    raw = str(text).strip()
    match = _RELATIVE.match(raw)
    if match:
        amount, unit = float(match.group(1)), match.group(2).lower()
        return (time.time() if now is None else now) - amount * _UNIT_SECONDS[unit]
    iso = raw[:-1] + "+00:00" if raw[-1:] in ("Z", "z") else raw
    try:
        parsed = datetime.fromisoformat(iso)
    except ValueError:
        parsed = None
    if parsed is None or not raw:
        raise ValueError(
            f"invalid --since value {text!r}: use a date (2026-11-01), an ISO datetime "
            "(2026-11-01T09:30:00, UTC unless it has an offset) or an age like 30m, 24h, 7d"
        )
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


__all__ = [
    "GROUPINGS",
    "CLASS_KEY_WIDTH",
    "LOCAL_ROUTES",
    "Report",
    "ReportGroup",
    "TierSpend",
    "answering_tier",
    "parse_since",
    "percentile",
    "plot",
    "read_serving_status",
    "render_table",
    "serving_status_lines",
    "serving_status_path",
    "shadow_line",
    "class_key",
    "summarize",
    "tier_lines",
    "tier_spend",
    "to_csv",
    "to_json",
    "unpaid_lines",
]
