"""The nightly chain's safety rails: the lock and the minimum-data skip."""

from __future__ import annotations

import time

from filelock import FileLock

from local_models.registry import AdapterRegistry
from router.ledger import Ledger, LedgerEntry
from router.policy import load_policy
from training.nightly import run_distill


def _ledger(tmp_path, n):
    ledger = Ledger(tmp_path / "ledger.sqlite")
    for i in range(n):
        ledger.record(
            LedgerEntry(
                request_id=f"r{i}",
                ts=time.time() + i,
                route="cloud",
                messages=[{"role": "user", "content": f"question number {i} about cards"}],
                answer=f"label_{i % 3}",
            )
        )
    return ledger


def test_second_concurrent_run_exits_cleanly(tmp_path):
    registry = AdapterRegistry(tmp_path / "adapters")
    lock_path = tmp_path / "distill.lock"
    with FileLock(str(lock_path)):
        summary = run_distill(
            ledger=_ledger(tmp_path, 5),
            policy=load_policy("default"),
            registry=registry,
            lock_path=lock_path,
        )
    assert summary.status == "locked"
    assert registry.current() is None


def test_too_few_new_examples_is_a_clean_skip(tmp_path):
    registry = AdapterRegistry(tmp_path / "adapters")
    summary = run_distill(
        ledger=_ledger(tmp_path, 10),
        policy=load_policy("default"),
        registry=registry,
        min_examples=50,
        lock_path=tmp_path / "l.lock",
    )
    assert summary.status == "too_few_examples"
    assert "need 50" in summary.gate_reason
    assert registry.list() == [] and registry.current() is None


def test_relabel_stores_the_served_answer_and_confidence_for_each_prompt(tiny_model_dir, tmp_path):
    """Relabelling goes through the serving engine: answers obey the adapter's answer sets
    and every prompt gets one fresh label with the confidence the cascade will see."""
    import json

    from tests.training.helpers import LABELS, make_examples
    from training import LoraTrainingConfig, train_lora
    from training.nightly import relabel

    examples = make_examples(9)
    cfg = LoraTrainingConfig(r=4, alpha=8, lr=1e-2, epochs=1, batch_size=4, grad_accum=1)
    res = train_lora(str(tiny_model_dir), examples, cfg, output_dir=tmp_path / "a", progress=False)
    (res.adapter_dir / "metadata.json").write_text(json.dumps({"answer_sets": {"": list(LABELS)}}))
    ledger = Ledger(tmp_path / "ledger.sqlite")
    for e in examples:
        ledger.record(LedgerEntry(request_id=e.source_id, ts=e.ts, route="cloud"))
    n = relabel(
        ledger,
        examples,
        base=str(tiny_model_dir),
        adapter_dir=res.adapter_dir,
        system_prompt=None,
        usd_per_hour=3.6,
        precision="fp32",
    )
    labelled = {entry.request_id: label for entry, label in ledger.labelled()}
    assert n == len(examples) and set(labelled) == {e.source_id for e in examples}
    for e in examples:
        label = labelled[e.source_id]
        assert label.local_answer in LABELS
        assert label.label == float(label.local_answer == e.answer)
        assert 0.0 < label.local_confidence <= 1.0 and label.local_cost_usd > 0


# --------------------------------------------------------------------------- #9.17 and #9.18

INTENT = "Classify the customer's banking message. Reply with the intent label only."
INTENT_LABELS = ("card_arrival", "lost_or_stolen_card", "top_up_failed")
LONG_ANSWER = "Natalia sold 48 clips in April and half as many in May. " * 8 + "#### 72"


def _intent(i):
    return [
        {"role": "system", "content": INTENT},
        {"role": "user", "content": f"customer {i} asks about transfer number {i * 7919}"},
    ]


def _math(i):
    return [{"role": "user", "content": f"A shop sells {i} pens at {i * 3} cents each. Total?"}]


def _mixed_ledger(path, *, n_intent=200, math_every=10, math_answer=LONG_ANSWER):
    """Support-bot traffic: intent labels under a system prompt, and every ``math_every``-th
    request a math question without one (long GPT-4 answers by default)."""
    ledger = Ledger(path)
    t0 = time.time() - 86400
    for i in range(n_intent):
        math = i % math_every == 0
        ledger.record(
            LedgerEntry(
                request_id=f"r{i}",
                ts=t0 + i,
                route="cloud",
                cost_usd=0.001,
                baseline_cost_usd=0.001,
                messages=_math(i) if math else _intent(i),
                answer=math_answer if math else INTENT_LABELS[i % 3],
            )
        )
    return ledger


def _label(ledger, n, *, start=0, ok=lambda i: True, confidence=0.9):
    for i in range(start, start + n):
        ledger.add_label(
            f"r{i}",
            judge="label_match",
            label=1.0 if ok(i) else 0.0,
            local_answer="x",
            local_confidence=confidence,
            local_cost_usd=1e-6,
        )


def _fake_adapter_dir(path):
    import json as _json

    import torch
    from safetensors.torch import save_file

    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(_json.dumps({"peft_type": "LORA", "r": 2}))
    save_file({"lora_A.weight": torch.ones(2, 4)}, str(path / "adapter_model.safetensors"))
    return path


def _fake_distill(monkeypatch, tmp_path, *, promote=True, served=(INTENT,)):
    """Replace training by a registered adapter that the gate passed for ``served``."""
    import training.nightly as nightly
    from training.evaluate import EvalResult
    from training.promote import DistillOutcome, GateDecision

    calls = []

    def fake(base, train, heldout, config, *, registry, **kwargs):
        calls.append({"train": train, "heldout": heldout, "config": config, **kwargs})
        src = _fake_adapter_dir(tmp_path / f"cand-{len(registry.list()) + 1}")
        version = registry.register(src, {"served_classes": list(served)})
        if promote:
            registry.promote(version, smoke_test=False)
        decision = GateDecision(promote, "fake gate: " + ("in" if promote else "out"))
        return DistillOutcome(version, decision, EvalResult(0.9, 0.1, len(heldout)), None)

    monkeypatch.setattr(nightly, "distill_and_promote", fake)
    return calls


def test_cli_distill_filters_long_answers_and_picks_the_label_recipe(tmp_path, monkeypatch):
    """#9.17: the CLI path trains on what the demo trains on: no long math answers, hence the
    short-label recipe, and the policy's floor reaches the gate."""
    import json as _json

    from typer.testing import CliRunner

    from router.cli import app
    from training.config import ALL_PROJECTIONS

    _mixed_ledger(tmp_path / "ledger.sqlite").close()
    calls = _fake_distill(monkeypatch, tmp_path, promote=False)
    result = CliRunner().invoke(
        app, ["distill", "--ledger", str(tmp_path / "ledger.sqlite"), "--json"]
    )
    assert result.exit_code == 0, result.output
    summary = _json.loads(result.output.strip().splitlines()[-1])
    (call,) = calls
    seen = [*call["train"], *call["heldout"]]
    assert seen and all(len(e.answer) <= 64 for e in seen)
    assert summary["dropped"]["long_answer"] == 20
    assert call["config"].lr == 3e-3 and call["config"].target_modules == ALL_PROJECTIONS
    assert call["min_agreement"] == 0.5 and call["min_class_examples"] == 10


def test_cli_dry_run_estimates_the_run_that_would_happen(tmp_path, monkeypatch):
    """``distill --dry-run`` trains nothing and estimates ``run_distill``'s own training set:
    the same filter, the same time split and ``--max-train`` cut, the same picked config."""
    from typer.testing import CliRunner

    import training.lora as lora
    from router.cli import app
    from training.lora import DryRunEstimate

    _mixed_ledger(tmp_path / "ledger.sqlite").close()
    seen = {}

    def fake_dry_run(base, train, config, *, usd_per_hour=0.0, **kwargs):
        seen.update(base=base, train=list(train), config=config, usd_per_hour=usd_per_hour)
        return DryRunEstimate(1000, 100.0, 10.0, 0.001)

    monkeypatch.setattr(lora, "dry_run", fake_dry_run)
    calls = _fake_distill(monkeypatch, tmp_path, promote=False)
    args = ["distill", "--ledger", str(tmp_path / "ledger.sqlite"), "--max-train", "50"]
    dry = CliRunner().invoke(app, [*args, "--dry-run"])
    assert dry.exit_code == 0, dry.output
    assert not calls  # nothing trained
    assert "200 in, 179 kept; dropped: long_answer=20" in dry.output
    assert "train on 50 examples" in dry.output and "1000 tokens at 100 tok/s" in dry.output
    policy = load_policy("default")
    assert seen["base"] == policy.local.model and seen["usd_per_hour"] == policy.local.usd_per_hour
    real = CliRunner().invoke(app, [*args, "--json"])
    assert real.exit_code == 0, real.output
    (call,) = calls
    assert [e.source_id for e in seen["train"]] == [e.source_id for e in call["train"]]
    assert seen["config"] == call["config"]
    assert seen["config"].describe() in dry.output


def test_cli_dry_run_on_an_empty_window_is_one_error_line(tmp_path):
    from typer.testing import CliRunner

    from router.cli import app

    _mixed_ledger(tmp_path / "ledger.sqlite").close()
    result = CliRunner().invoke(
        app,
        ["distill", "--ledger", str(tmp_path / "ledger.sqlite"), "--dry-run", "--since", "1s"],
    )
    assert result.exit_code == 2, result.output
    assert "error: no usable examples in the ledger (0 in, 0 kept" in result.output


def test_promoted_adapter_serves_only_the_classes_it_cleared(tiny_model_dir, tmp_path, monkeypatch):
    """#9.17 end to end on the tiny model: the gate passes the intents and fails the math
    class, the metadata names the class it earned, and the written policy sends the math to
    the cloud while tuning thresholds on the intents' labels only."""
    import training.promote as promote_mod
    from router._gateway.decision import Decider
    from router._gateway.validation import build_request
    from router.policy import load_policy as load
    from training import LoraTrainingConfig
    from training.evaluate import EvalResult

    # short math answers: trained on. Only the newest fifth (held out, never trained on) may
    # calibrate the retune, so 400 requests leave it enough labels.
    ledger = _mixed_ledger(tmp_path / "ledger.sqlite", n_intent=400, math_answer="72")
    _label(ledger, 400, ok=lambda i: i % 10 != 0)  # the math labels are all wrong

    def fake_evaluate(base, heldout, **kwargs):
        by_class = {INTENT: EvalResult(0.9, 0.2, 36), "": EvalResult(0.1, 2.0, 12)}
        return EvalResult(0.7, 0.6, len(heldout), by_class=by_class)

    monkeypatch.setattr(promote_mod, "evaluate", fake_evaluate)
    registry = AdapterRegistry(tmp_path / "adapters")
    cfg = LoraTrainingConfig(r=2, alpha=4, epochs=0.2, batch_size=8, max_seq_len=64)
    summary = run_distill(
        ledger=ledger,
        policy=load_policy("default"),
        registry=registry,
        base=str(tiny_model_dir),
        config=cfg,
        do_relabel=False,
        target_quality=0.9,
        policy_out=tmp_path / "policy.yaml",
        lock_path=tmp_path / "l.lock",
        progress=False,
    )
    assert summary.status == "promoted", summary.gate_reason
    assert summary.served_classes == [INTENT]
    assert registry.current().metadata["served_classes"] == [INTENT]
    policy = load(tmp_path / "policy.yaml")
    assert policy.rules.local_classes == (INTENT,)
    # tuned on the intents' labels only, and only on requests newer than its training data
    assert summary.retune["takes_traffic"] and summary.retune["n_labels"] == 72
    assert summary.retune["labels_after"] == registry.current().metadata["trained_until"]
    decider = Decider(policy)
    math = decider.decide(build_request({"messages": _math(1)}, default_model="gpt-4o-mini"))
    assert (math.route, math.reason) == ("cloud", "rule:class_not_served")
    intent = decider.decide(build_request({"messages": _intent(1)}, default_model="gpt-4o-mini"))
    assert intent.route != "cloud" or intent.reason != "rule:class_not_served"


def test_too_few_labels_give_a_new_adapter_no_traffic_and_report_says_why(tmp_path, monkeypatch):
    """#9.18: 12 labels (10 of the intent class it serves) cannot show a 0.97 target: the new
    adapter takes no traffic (cloud + shadow labelling) instead of cascading at the bundled
    default threshold, and ``report`` says why; once enough good labels are in, the next run
    lets it earn its traffic."""
    from typer.testing import CliRunner

    from router._gateway.decision import Decider
    from router._gateway.validation import build_request
    from router.cli import app

    home = tmp_path / "home"
    monkeypatch.setenv("HYBRIDGATE_HOME", str(home))
    ledger = _mixed_ledger(tmp_path / "ledger.sqlite", n_intent=80)
    _label(ledger, 12)
    _fake_distill(monkeypatch, tmp_path)
    registry = AdapterRegistry(home / "adapters")
    summary = run_distill(
        ledger=ledger,
        policy=load_policy("default"),
        registry=registry,
        min_examples=5,
        do_relabel=False,
        policy_out=home / "policy.yaml",
        lock_path=tmp_path / "l.lock",
    )
    assert summary.status == "promoted"
    policy = load_policy(home / "policy.yaml")
    assert policy.rules.local_classes == () and policy.shadow.rate >= 0.1
    assert policy.local.adapter == "current"
    request = build_request({"messages": _intent(3)}, default_model="gpt-4o-mini")
    assert Decider(policy).decide(request).route == "cloud"
    status = summary.retune
    assert not status["takes_traffic"] and "have 10" in status["reason"]
    ledger.close()
    result = CliRunner().invoke(app, ["report", "--ledger", str(tmp_path / "ledger.sqlite")])
    assert result.exit_code == 0, result.output
    assert "adapter v0001 takes no traffic" in result.output
    assert "need at least 50 labelled requests, have 10" in result.output

    # The next night: enough good labels now, and a candidate that loses -> v0001 earns it.
    ledger = Ledger(tmp_path / "ledger.sqlite")
    _label(ledger, 80)
    _fake_distill(monkeypatch, tmp_path, promote=False)
    again = run_distill(
        ledger=ledger,
        policy=load_policy(home / "policy.yaml"),
        registry=registry,
        min_examples=5,
        do_relabel=False,
        target_quality=0.9,
        policy_out=home / "policy.yaml",
        lock_path=tmp_path / "l.lock",
    )
    assert again.status == "rejected" and again.retune["takes_traffic"], again.retune["reason"]
    assert load_policy(home / "policy.yaml").rules.local_classes == (INTENT,)


def test_labels_that_miss_the_target_give_no_traffic(tmp_path, monkeypatch):
    """#9.18 with plenty of labels: the adapter is wrong on all of them, so no threshold keeps
    anything local at the target; nothing is left at the bundled cascade threshold."""
    ledger = _mixed_ledger(tmp_path / "ledger.sqlite")
    _label(ledger, 200, ok=lambda i: False, confidence=0.95)
    _fake_distill(monkeypatch, tmp_path)
    summary = run_distill(
        ledger=ledger,
        policy=load_policy("default"),
        registry=AdapterRegistry(tmp_path / "adapters"),
        do_relabel=False,
        policy_out=tmp_path / "policy.yaml",
        lock_path=tmp_path / "l.lock",
    )
    policy = load_policy(tmp_path / "policy.yaml")
    assert policy.rules.local_classes == ()
    assert not summary.retune["takes_traffic"]
    assert "cannot show quality >= 0.97" in summary.retune["reason"]


def test_a_cascade_band_without_confidences_is_closed(tmp_path, monkeypatch):
    """#9.18: the router is tuned, but no label carries a confidence: the hybrid policy keeps
    only the tuned routing instead of cascading its middle band at the default 0.6."""
    ledger = _mixed_ledger(tmp_path / "ledger.sqlite", n_intent=300)
    _label(ledger, 300, ok=lambda i: i % 3 == 0, confidence=None)  # card_arrival: right
    _fake_distill(monkeypatch, tmp_path)
    summary = run_distill(
        ledger=ledger,
        policy=load_policy("default"),
        registry=AdapterRegistry(tmp_path / "adapters"),
        do_relabel=False,
        target_quality=0.9,
        policy_out=tmp_path / "policy.yaml",
        lock_path=tmp_path / "l.lock",
    )
    policy = load_policy(tmp_path / "policy.yaml")
    status = summary.retune
    assert status["takes_traffic"], status["reason"]
    assert policy.thresholds.hybrid_low == policy.thresholds.hybrid_high
    assert policy.thresholds.hybrid_high == policy.thresholds.route
    assert "no cascade band" in status["reason"]


def test_serving_policy_sends_a_class_whose_local_answers_do_not_pay_to_the_cloud(tmp_path):
    """#12.1: both classes pass the gate and their student answers are right, but the essay
    class's local compute costs more than its cloud call: the written policy serves only the
    intents locally and the status (what ``report`` prints) says why."""
    import json as _json

    import numpy as np

    from local_models.registry import AdapterInfo
    from training.nightly import serve_adapter

    intents, essays = "Reply with the intent.", "Write an essay."
    rng = np.random.default_rng(0)
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        for i in range(400):
            system = intents if i % 2 else essays
            rid = f"r{i}"
            ledger.record(
                LedgerEntry(
                    rid, time.time(), "cloud", cost_usd=1e-5, baseline_cost_usd=1e-5,
                    messages=[{"role": "system", "content": system},
                              {"role": "user", "content": f"request {i}"}],
                    answer="x",
                )
            )  # fmt: skip
            conf = float(rng.random())
            ledger.add_label(
                rid,
                judge="exact_match",
                label=1.0 if conf > 0.2 else 0.0,
                local_answer="x",
                local_confidence=conf,
                local_cost_usd=1e-7 if system == intents else 5e-5,
            )
        policy = load_policy("default").replace(mode="cascade")
        adapter = AdapterInfo("v0001", tmp_path, {"served_classes": [intents, essays]})
        status = serve_adapter(ledger, policy, adapter, policy_out=tmp_path / "policy.yaml")
    assert status["takes_traffic"] and status["local_classes"] == [intents], status["reason"]
    assert list(status["unpaid_classes"]) == [repr(essays)]
    assert "local does not pay" in status["reason"]
    assert load_policy(tmp_path / "policy.yaml").rules.local_classes == (intents,)
    written = _json.loads((tmp_path / "policy.status.json").read_text())
    assert written["unpaid_classes"] == status["unpaid_classes"]


def test_quality_promise_covers_a_days_traffic_of_the_served_classes(tmp_path):
    """The retune promises quality over the traffic until the next run: the last day's requests
    of the classes the adapter serves (old rows, judge calls and other classes do not count)."""
    from training.nightly import _daily_volume

    now = 2_000_000_000.0
    bot = [{"role": "system", "content": "bot"}, {"role": "user", "content": "hi"}]
    other = [{"role": "user", "content": "hi"}]
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        for i, (ts, messages, reason) in enumerate(
            [
                (now - 10, bot, ""),
                (now - 20, bot, ""),
                (now - 90_000, bot, ""),
                (now - 5, bot, "judge"),
                (now - 5, other, ""),
            ]  # fmt: skip
        ):
            ledger.record(LedgerEntry(f"r{i}", ts, "cloud", messages=messages, reason=reason))
        assert _daily_volume(ledger, ["bot"], now=now) == 2
        assert _daily_volume(ledger, None, now=now) == 3


def test_the_nightly_retune_sets_every_tier_threshold_from_explored_requests(tmp_path):
    """#12.3: with cloud.tiers, the serving policy's thresholds come from the joint tuner on
    explored requests (every tier asked), not from the two-tier retune alone."""
    import numpy as np

    from local_models.registry import AdapterInfo
    from router.tuning.tiers import outcome, tier_data_from_ledger
    from training.nightly import serve_adapter

    rng = np.random.default_rng(0)
    with Ledger(tmp_path / "ledger.sqlite") as ledger:
        for i in range(300):
            rid = f"r{i}"
            local_conf, mini_conf = float(rng.random()), float(rng.random())
            local_right, mini_right = local_conf > 0.5, mini_conf > 0.2
            ledger.record(
                LedgerEntry(
                    rid, time.time(), "cloud", cost_usd=1e-5, baseline_cost_usd=1e-5,
                    messages=[{"role": "user", "content": f"request {i}"}], answer="gold",
                    attempts=[
                        {"tier": "local", "model": "s", "usd": 1e-8, "kept": False,
                         "confidence": local_conf, "answer": "gold" if local_right else "no"},
                        {"tier": "gpt-4o-mini", "model": "gpt-4o-mini", "usd": 1e-6,
                         "kept": False, "confidence": mini_conf,
                         "answer": "gold" if mini_right else "no"},
                        {"tier": "cloud", "model": "gpt-4o", "usd": 1e-5, "kept": True,
                         "answer": "gold"},
                    ],
                )
            )  # fmt: skip
            ledger.add_label(
                rid, judge="exact_match", label=1.0 if local_right else 0.0,
                local_answer="x", local_confidence=local_conf, local_cost_usd=1e-8,
            )  # fmt: skip
        data = tier_data_from_ledger(ledger)
        assert len(data.final_usd) == 300
        policy = load_policy("default").replace(
            mode="cascade",
            **{
                "cloud.model": "gpt-4o",
                "cloud.tiers": [{"model": "gpt-4o-mini", "threshold": 0.01}],
            },
        )
        adapter = AdapterInfo("v0001", tmp_path, {"served_classes": None})
        status = serve_adapter(
            ledger, policy, adapter, policy_out=tmp_path / "policy.yaml", target_quality=0.9
        )
    written = load_policy(tmp_path / "policy.yaml")
    assert status["tiers"]["retuned"] and status["tiers"]["n_labels"] == 300, status
    assert written.mode == "cascade" and "tiers: thresholds:" in status["reason"]
    tiers = {t.model: t.threshold for t in written.cloud.tiers}
    assert tiers.get("gpt-4o-mini") != 0.01  # retuned (or turned off), not kept as it was
    chosen = (written.thresholds.cascade, tiers.get("gpt-4o-mini"))
    misses, _, _ = outcome(data, chosen)
    assert 1 - misses / 300 >= 0.9  # the written thresholds meet the target on the labels
