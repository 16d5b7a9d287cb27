"""``retune``: both sides priced, class by class, so a tuned policy is never dearer than all-cloud."""

from __future__ import annotations

import numpy as np

from router.policy import load_policy
from router.tuning.retune import LabelledSet, labelled_from_csv, retune

CHEAP, DEAR = "You label intents.", "You write essays."


def _labelled(n_per_class: int = 400, seed: int = 0) -> LabelledSet:
    """Two traffic classes, both answered right by the student when it is confident; the essay
    class's local answers cost three times the cloud call (long generations on a slow CPU)."""
    rng = np.random.default_rng(seed)
    conf = rng.random(2 * n_per_class)
    labels = np.where(conf >= 0.3, 1, (rng.random(2 * n_per_class) < 0.5).astype(int))
    cloud = np.full(2 * n_per_class, 1e-5)
    local = np.concatenate([np.full(n_per_class, 1e-7), np.full(n_per_class, 3e-5)])
    classes = [CHEAP] * n_per_class + [DEAR] * n_per_class
    prompts = [f"request {i}" for i in range(2 * n_per_class)]
    return LabelledSet(prompts, labels, cloud, local, conf, classes)


def test_class_whose_local_answers_cost_more_goes_to_the_cloud(tmp_path) -> None:
    policy = load_policy("default").replace(mode="cascade")
    tuned = retune(_labelled(), policy, target="cascade", out_dir=tmp_path)
    assert tuned.policy.rules.local_classes == (CHEAP,)
    assert list(tuned.dropped) == [repr(DEAR)]
    assert "all-cloud" in tuned.dropped[repr(DEAR)]
    # re-tuned on the class that stays: it pays, and keeps most of its traffic local
    assert tuned.result.n_labels == 400
    assert tuned.result.cost_fraction < 0.5 and tuned.result.local_fraction > 0.5
    assert tuned.policy.thresholds.cascade == round(tuned.result.threshold, 4)


def test_when_no_class_pays_nothing_is_answered_locally(tmp_path) -> None:
    data = _labelled()
    data.local_costs[:] = 3e-5  # every local answer costs more than the call
    policy = load_policy("default").replace(mode="cascade")
    tuned = retune(data, policy, target="cascade", out_dir=tmp_path)
    assert tuned.policy.rules.local_classes == ()
    assert tuned.result.cost_fraction <= 1.0


def test_classes_the_policy_keeps_off_the_local_tier_stay_off(tmp_path) -> None:
    policy = load_policy("default").replace(mode="cascade", **{"rules.local_classes": [DEAR]})
    data = _labelled()
    data.local_costs[:] = 1e-7  # both classes would pay
    tuned = retune(data, policy, target="cascade", out_dir=tmp_path)
    assert tuned.result.n_labels == 400  # tuned on the class the policy serves locally only
    assert tuned.policy.rules.local_classes == (DEAR,)


def test_csv_class_column_is_read(tmp_path) -> None:
    path = tmp_path / "labels.csv"
    path.write_text("prompt,label,class\nhi,1,bot\nyo,0,\n", encoding="utf-8")
    data = labelled_from_csv(path)
    assert data.classes == ["bot", ""]


def test_labels_of_requests_the_adapter_may_have_learned_are_left_out(tmp_path) -> None:
    """Calibrating on prompts the student trained on flatters it: only requests newer than its
    ``trained_until`` count."""
    from router.ledger import Ledger, LedgerEntry
    from router.tuning.retune import labelled_from_ledger

    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        for i, ts in enumerate([100.0, 200.0, 300.0]):
            messages = [{"role": "user", "content": f"q{i}"}]
            ledger.record(LedgerEntry(f"r{i}", ts, "cloud", messages=messages, answer="a"))
            ledger.add_label(f"r{i}", judge="exact_match", label=1.0, local_answer="a")
        assert labelled_from_ledger(ledger).prompts == ["q0", "q1", "q2"]
        assert labelled_from_ledger(ledger, after=200.0).prompts == ["q2"]


def test_an_audit_label_stands_for_the_local_answers_not_audited(tmp_path) -> None:
    """An audit sampled at 10% weighs 10; a cloud-answered row (always labelled) weighs 1, even
    when a caller's metadata happens to carry an ``audit_rate`` tag."""
    from router.ledger import Ledger, LedgerEntry
    from router.tuning.retune import labelled_from_ledger

    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        rows = [
            LedgerEntry("audit-1", 1.0, "cloud", reason="audit", tags={"audit_rate": "0.1"}),
            LedgerEntry("r2", 2.0, "cloud", reason="policy:cloud", tags={"audit_rate": "0.01"}),
        ]
        for i, row in enumerate(rows):
            row.messages, row.answer = [{"role": "user", "content": f"q{i}"}], "a"
            ledger.record(row)
            ledger.add_label(row.request_id, judge="exact_match", label=1.0, local_answer="a")
        assert labelled_from_ledger(ledger).w.tolist() == [10.0, 1.0]
