"""Issue #9 item 19: stratified samples, and the Banking77 benchmark's inputs and progress.

The benchmark is exercised on tiny CSVs with training and evaluation replaced by stand-ins, so
these tests check what it would train and score on without running a model.
"""

from __future__ import annotations

import csv
import importlib.util
import sys
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.training.helpers import LABELS, make_examples
from training import EvalResult, evaluate
from training.dataset import Example, stratified_sample

ROOT = Path(__file__).resolve().parents[2]
BENCH = ROOT / "benchmarks" / "distill_banking77.py"
INTENTS = [f"intent_{k:02d}" for k in range(77)]


def _sorted_examples(per_class: int) -> list[Example]:
    """Like Banking77's train.csv: every row of one intent, then the next intent."""
    return [
        Example(({"role": "user", "content": f"{c} text {i}"},), c, float(i), f"r{i}")
        for c in INTENTS
        for i in range(per_class)
    ]


# ----------------------------------------------------------------------------- sampler


def test_stratified_sample_keeps_every_class_in_proportion() -> None:
    pool = _sorted_examples(40)[:-30]  # the last class is short: shares are not all equal
    assert len(Counter(e.answer for e in pool[:300])) == 8  # what "first N rows" gave
    got = stratified_sample(pool, 300, seed=0)
    counts = Counter(e.answer for e in got)
    assert len(got) == 300 and len(set(map(id, got))) == 300
    assert set(counts) == set(INTENTS)
    sizes = Counter(e.answer for e in pool)
    for c in INTENTS:
        assert abs(counts[c] - 300 * sizes[c] / len(pool)) < 1.5
    assert [e.answer for e in got[:10]] != sorted(e.answer for e in got[:10])  # shuffled


def test_stratified_sample_is_seeded_and_handles_small_and_large_n() -> None:
    pool = _sorted_examples(5)
    assert stratified_sample(pool, 100, seed=3) == stratified_sample(pool, 100, seed=3)
    assert stratified_sample(pool, 100, seed=3) != stratified_sample(pool, 100, seed=4)
    few = stratified_sample(pool, 10, seed=0)  # fewer slots than classes: 10 distinct classes
    assert len(few) == 10 and len({e.answer for e in few}) == 10
    everything = stratified_sample(pool, 10_000, seed=0)
    assert sorted(map(id, everything)) == sorted(map(id, pool))
    assert stratified_sample(pool, 0) == []
    with pytest.raises(ValueError, match=">= 0"):
        stratified_sample(pool, -1)


# ----------------------------------------------------------------------------- evaluate


def test_evaluate_reports_progress_per_batch(tiny_model_dir: Path) -> None:
    seen: list[tuple[int, int]] = []
    res = evaluate(
        str(tiny_model_dir),
        make_examples(7),
        allowed_answers=LABELS,
        batch_size=2,
        progress=lambda done, total: seen.append((done, total)),
    )
    assert res.n == 7
    assert seen[-1] == (7, 7) and len(seen) >= 4
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)


# ----------------------------------------------------------------------------- benchmark


class _Stop(Exception):
    """Raised by the training stand-in: the test has seen what it needed."""


def _bench():
    spec = importlib.util.spec_from_file_location("distill_banking77_under_test", BENCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _csv(path: Path, per_class: int) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["text", "category"])
        for e in _sorted_examples(per_class):
            w.writerow([e.messages[0]["content"], e.answer])
    return path


def _run(mod, monkeypatch: pytest.MonkeyPatch, *args: str) -> None:
    monkeypatch.setattr(sys, "argv", [str(BENCH), *map(str, args)])
    mod.main()


def test_bench_samples_train_and_eval_rows_across_every_intent(tmp_path, monkeypatch) -> None:
    mod = _bench()
    seen: dict[str, list[Example]] = {}

    def fake_evaluate(model, examples, **kw):
        seen["eval"] = list(examples)
        return EvalResult(agreement=0.0, loss=1.0, n=len(examples))

    def fake_train(model, train, cfg, **kw):
        seen["train"] = list(train)
        raise _Stop

    monkeypatch.setattr(mod, "evaluate", fake_evaluate)
    monkeypatch.setattr(mod, "train_lora", fake_train)
    train_csv, eval_csv = _csv(tmp_path / "train.csv", 40), _csv(tmp_path / "eval.csv", 4)
    with pytest.raises(_Stop):
        _run(mod, monkeypatch, "--train-data", train_csv, "--eval-data", eval_csv,
             "--train-examples", 300, "--eval-examples", 154)  # fmt: skip
    assert len(seen["train"]) == 300 and len(seen["eval"]) == 154
    assert {e.answer for e in seen["train"]} == set(INTENTS)
    assert Counter(e.answer for e in seen["eval"]) == dict.fromkeys(INTENTS, 2)


def test_bench_missing_default_data_names_the_file_and_the_flag(
    tmp_path, monkeypatch, capsys
) -> None:
    mod = _bench()
    missing = tmp_path / "shared" / "data" / "banking77" / "train.csv"
    monkeypatch.setattr(mod, "DEFAULT_DATA", missing)
    with pytest.raises(SystemExit) as info:
        _run(mod, monkeypatch)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert str(missing) in err and "--data" in err


def test_bench_too_few_eval_rows_stops_before_training(tmp_path, monkeypatch, capsys) -> None:
    mod = _bench()

    def must_not_run(*args, **kwargs):
        raise AssertionError("the row check must come before any model work")

    monkeypatch.setattr(mod, "evaluate", must_not_run)
    monkeypatch.setattr(mod, "train_lora", must_not_run)
    train_csv, eval_csv = _csv(tmp_path / "train.csv", 4), _csv(tmp_path / "eval.csv", 1)
    with pytest.raises(SystemExit) as info:
        _run(mod, monkeypatch, "--train-data", train_csv, "--eval-data", eval_csv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "have 77" in err and "--eval-examples" in err and "--no-cascade" in err
    assert "--csv" not in err and "shadow" not in err  # options the script does not have


def test_bench_prints_evaluation_progress_to_stderr(tmp_path, monkeypatch, capsys) -> None:
    mod = _bench()

    def fake_evaluate(model, examples, **kw):
        for done in (*range(50, len(examples), 50), len(examples)):
            kw["progress"](done, len(examples))
        return EvalResult(agreement=0.5, loss=1.0, n=len(examples))

    def fake_train(model, train, cfg, **kw):
        return SimpleNamespace(
            adapter_dir=tmp_path, train_seconds=1.0, tokens=10, tokens_per_s=10.0, final_loss=0.1
        )

    monkeypatch.setattr(mod, "evaluate", fake_evaluate)
    monkeypatch.setattr(mod, "train_lora", fake_train)
    monkeypatch.setattr(mod, "cascade_costs", lambda *a, **k: {})
    train_csv, eval_csv = _csv(tmp_path / "train.csv", 2), _csv(tmp_path / "eval.csv", 2)
    _run(mod, monkeypatch, "--train-data", train_csv, "--eval-data", eval_csv, "--json")
    err = capsys.readouterr().err
    assert "eval before: 154/154 rows" in err and "eval after: 154/154 rows" in err
    assert "eval after: 50/154 rows" in err  # the first report comes at once, not at the end
