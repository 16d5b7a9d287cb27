"""Routing policies: bundled files, YAML round trip, and error messages a user can act on."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from policies import BUNDLED_POLICIES, UnknownPolicyError, policy_path
from router.errors import PolicyError
from router.policy import (
    BudgetConfig,
    CacheSettings,
    CloudConfig,
    LocalConfig,
    ModelPrice,
    RoutingPolicy,
    Thresholds,
    load_policy,
    parse_policy,
    policy_from_dict,
    save_policy,
)

# ----------------------------------------------------------------------------- bundled policies


@pytest.mark.parametrize("name", BUNDLED_POLICIES)
def test_bundled_policy_round_trips_through_yaml(name: str, tmp_path: Path) -> None:
    policy = load_policy(name)
    assert policy.name == name
    assert parse_policy(policy.to_yaml()) == policy
    assert policy_from_dict(yaml.safe_load(policy.to_yaml())) == policy
    assert policy_from_dict(policy.to_dict()) == policy
    out = tmp_path / "nested" / f"{name}.yaml"
    save_policy(policy, out)
    reloaded = load_policy(out)
    assert reloaded == policy
    assert reloaded.version == policy.version


_SECTION_NAMES = {
    f.name
    for f in dataclasses.fields(RoutingPolicy)
    if f.name not in ("name", "mode", "classifier", "store_content")
}
_KNOBS = {
    f.name
    for cls in (RoutingPolicy, *(type(getattr(RoutingPolicy(), s)) for s in _SECTION_NAMES))
    for f in dataclasses.fields(cls)
} - _SECTION_NAMES


@pytest.mark.parametrize("name", BUNDLED_POLICIES)
def test_every_knob_in_bundled_policy_is_documented_by_a_comment(name: str) -> None:
    lines = policy_path(name).read_text(encoding="utf-8").splitlines()
    seen = set()
    for i, line in enumerate(lines):
        match = re.match(r"^ *([a-z_]+):", line)
        if match and match.group(1) in _KNOBS:
            seen.add(match.group(1))
            assert lines[i - 1].lstrip().startswith("#"), f"{name}.yaml:{i + 1} has no comment"
    assert seen == _KNOBS  # every knob is spelled out, so the file documents all of them


def test_bundled_policies_have_their_documented_character() -> None:
    default = load_policy("default")
    saver = load_policy("cost-saver")
    quality = load_policy("quality-first")

    assert default.mode == "hybrid"
    assert default.shadow.rate == 0.1

    assert saver.mode in ("route", "hybrid")
    assert saver.thresholds.route < default.thresholds.route
    assert saver.thresholds.cascade < default.thresholds.cascade
    assert saver.budget.daily_usd == 5.0
    assert saver.budget.on_exceeded == "local"

    assert quality.mode == "cascade"
    assert quality.thresholds.cascade > default.thresholds.cascade
    assert quality.shadow.rate == 0.2
    assert quality.budget.on_exceeded == "fail"

    assert len({default.version, saver.version, quality.version}) == 3


def test_load_policy_accepts_path_objects_and_strings(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("mode: route\nthresholds:\n  route: 0.7\n", encoding="utf-8")
    assert load_policy(path) == load_policy(str(path))
    assert load_policy(path).thresholds.route == 0.7
    assert load_policy(path).cloud == CloudConfig()  # unspecified sections take defaults


def test_unknown_bundled_name_suggests_the_closest() -> None:
    with pytest.raises(PolicyError, match=r"did you mean the bundled policy 'cost-saver'"):
        load_policy("cost-savr")
    # The locator raises its own plain error (it imports nothing from router) ...
    with pytest.raises(UnknownPolicyError, match=r"did you mean 'default'") as info:
        policy_path("defualt")
    assert isinstance(info.value, ValueError) and not isinstance(info.value, PolicyError)


def test_the_locator_error_becomes_a_policy_error(monkeypatch: pytest.MonkeyPatch) -> None:
    # ... which router.policy translates, should a bundled name ever fail to resolve.
    import policies

    def broken(name: str) -> Path:
        raise UnknownPolicyError(f"unknown bundled policy {name!r}")

    monkeypatch.setattr(policies, "policy_path", broken)
    with pytest.raises(PolicyError, match="unknown bundled policy 'default'") as info:
        load_policy("default")
    assert info.value.__cause__ is None  # one clear message, no chained locator error


# ----------------------------------------------------------------------------- error messages


def _error(text: str, tmp_path: Path) -> str:
    path = tmp_path / "x.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    message = str(info.value)
    assert message.startswith(str(path)), message
    return message[len(str(path)) :]


def test_error_names_file_line_and_field(tmp_path: Path) -> None:
    text = "name: x\nmode: route\n\nthresholds:\n  cascade: 0.5\n\n  route: high\n"
    assert _error(text, tmp_path) == (
        ":7: thresholds.route: must be a number between 0 and 1, got 'high'"
    )


def test_unknown_key_is_named_with_closest_valid_key(tmp_path: Path) -> None:
    message = _error("mode: route\nthresholds:\n  rout: 0.5\n", tmp_path)
    assert message.startswith(":3: thresholds.rout: unknown key; did you mean 'route'?")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mode: fast\n", ":1: mode: must be one of"),
        ("mode: hybird\n", "did you mean 'hybrid'"),
        ("cloud:\n  timeout_s: '60'\n", ":2: cloud.timeout_s: must be a number > 0, got '60'"),
        ("cloud:\n  max_retries: 1.5\n", ":2: cloud.max_retries: must be an integer >= 0"),
        ("cloud:\n  timeout_s: 2\n  connect_timeout_s: 5\n", ":3: cloud.connect_timeout_s:"),
        ("local:\n  max_batch_size: 0\n", ":2: local.max_batch_size: must be an integer >= 1"),
        ("local:\n  max_batch_size: 32\n  max_queue: 8\n", ":3: local.max_queue: must be >="),
        ("local:\n  adapter: ''\n", ":2: local.adapter: must be a non-empty string or null"),
        (
            "budget:\n  daily_usd: -1\n",
            ":2: budget.daily_usd: must be a number >= 0 or null, got -1",
        ),
        (
            "budget:\n  on_exceeded: panic\n",
            ":2: budget.on_exceeded: must be one of 'local', 'fail'",
        ),
        ("budget:\n  timezone: Mars/Base\n", ":2: budget.timezone: must be an IANA time zone"),
        ("shadow:\n  rate: 1.5\n", ":2: shadow.rate: must be a number between 0 and 1, got 1.5"),
        ("shadow:\n  rate: -0.1\n", ":2: shadow.rate: must be a number between 0 and 1"),
        ("cache:\n  enabled: maybe\n", ":2: cache.enabled: must be true or false, got 'maybe'"),
        ("cache:\n  ttl_s: 0\n", ":2: cache.ttl_s: must be a number > 0 or null"),
        ("cache: 5\n", ":1: cache: must be a mapping of settings, got 5"),
        ("rules:\n  force_cloud_tags: legal\n", ":2: rules.force_cloud_tags: must be a list"),
        (
            "rules:\n  force_cloud_tags: [pii]\n  force_local_tags: [pii]\n",
            ":3: rules.force_local_tags: tags ['pii'] are also in rules.force_cloud_tags",
        ),
        (
            "local:\n  max_prompt_tokens: 100\nrules:\n  max_local_prompt_tokens: 200\n",
            ":4: rules.max_local_prompt_tokens: must be <= local.max_prompt_tokens (100)",
        ),
        ("store_content: 1\n", ":1: store_content: must be true or false, got 1"),
        ("thresholds:\n  route: true\n", ":2: thresholds.route: must be a number between 0 and 1"),
        ("thresholds:\n  route: .nan\n", ":2: thresholds.route: must be a number"),
        (
            "cloud:\n  prices:\n    gpt-4o:\n      input_per_mtok: 1\n",
            ":3: cloud.prices.gpt-4o.output_per_mtok: is required",
        ),
        (
            "cloud:\n  prices:\n    gpt-4o:\n      input_per_mtok: -1\n      output_per_mtok: 2\n",
            ":4: cloud.prices.gpt-4o.input_per_mtok: must be a number >= 0, got -1",
        ),
        (
            "cloud:\n  prices:\n    gpt-4o:\n      input: 1\n",
            ":4: cloud.prices.gpt-4o.input: unknown",
        ),
        ("mode: route\nmode: cloud\n", ":2: mode: duplicate key (first set on line 1)"),
    ],
)
def test_invalid_setting_is_a_clear_policy_error(text: str, expected: str, tmp_path: Path) -> None:
    assert expected in _error(text, tmp_path)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("thresholds:\n  hybrid_low: 0.9\n  hybrid_high: 0.5\n", 2),
        ("thresholds:\n  hybrid_high: 0.1\n", 2),  # low left at its default: point at high
    ],
)
def test_hybrid_low_above_high_is_refused(text: str, line: int, tmp_path: Path) -> None:
    message = _error(text, tmp_path)
    assert message.startswith(f":{line}: thresholds.hybrid_low: must be <= thresholds.hybrid_high")


@pytest.mark.parametrize(
    "text",
    [
        "cloud:\n  api_key: sk-live-0123456789abcdef\n",
        "api_key: sk-live-0123456789abcdef\n",
        "cloud:\n  openai_api_key: sk-live-0123456789abcdef\n",
        "cloud:\n  api_key_env: sk-live-0123456789abcdef\n",
    ],
)
def test_inline_api_key_is_refused_without_echoing_it(text: str, tmp_path: Path) -> None:
    message = _error(text, tmp_path)
    assert "environment variable" in message
    assert "0123456789abcdef" not in message


def test_api_key_env_accepts_a_variable_name() -> None:
    policy = parse_policy("cloud:\n  api_key_env: MY_PROXY_KEY\n")
    assert policy.cloud.api_key_env == "MY_PROXY_KEY"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "empty policy file"),
        ("# only comments\n", "empty policy file"),
        ("- mode: route\n", ":1: the top level must be a mapping of settings"),
        ("just a string\n", "the top level must be a mapping"),
        ("mode: route\nthresholds: [\n", ":3: invalid YAML"),
        ("mode: cloud\n---\nmode: local\n", "invalid YAML"),
    ],
)
def test_malformed_file_is_a_policy_error(text: str, expected: str, tmp_path: Path) -> None:
    assert expected in _error(text, tmp_path)


def test_missing_file_is_a_policy_error(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="no such policy file"):
        load_policy(tmp_path / "absent.yaml")


def test_yaml_tags_that_build_python_objects_are_refused(tmp_path: Path) -> None:
    assert "invalid YAML" in _error("mode: !!python/object/apply:os.getcwd []\n", tmp_path)


# ----------------------------------------------------------------------------- objects


def test_direct_construction_validates_too() -> None:
    with pytest.raises(PolicyError, match=r"^thresholds\.route: must be a number between 0 and 1"):
        Thresholds(route=1.2)
    with pytest.raises(PolicyError, match=r"^budget\.daily_usd"):
        BudgetConfig(daily_usd=-5)
    with pytest.raises(PolicyError, match=r"^thresholds: must be a Thresholds, got dict"):
        RoutingPolicy(thresholds={"route": 0.5})  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Thresholds(0.5)  # type: ignore[misc]  # keyword-only


def test_policy_is_frozen_and_hashable() -> None:
    policy = load_policy("default")
    with pytest.raises(dataclasses.FrozenInstanceError):
        policy.mode = "local"  # type: ignore[misc]
    with pytest.raises(TypeError):
        policy.cloud.prices["gpt-4o"] = ModelPrice(input_per_mtok=1, output_per_mtok=1)  # type: ignore[index]
    assert {policy: 1}[load_policy("default")] == 1


def test_integers_and_floats_give_the_same_policy_and_version() -> None:
    a = parse_policy("thresholds:\n  route: 1\ncloud:\n  timeout_s: 60\n")
    b = parse_policy("thresholds:\n  route: 1.0\ncloud:\n  timeout_s: 60.0\n")
    assert a == b
    assert a.version == b.version
    assert isinstance(a.thresholds.route, float)


def test_version_is_a_content_hash() -> None:
    policy = load_policy("default")
    assert re.fullmatch(r"[0-9a-f]{12}", policy.version)
    assert policy.replace(**{"thresholds.route": 0.5}).version == policy.version
    assert policy.replace(**{"thresholds.route": 0.55}).version != policy.version


def test_replace_supports_dotted_and_object_values() -> None:
    policy = load_policy("default")
    tuned = policy.replace(mode="route", **{"thresholds.route": 0.7, "local.max_batch_size": 4})
    assert (tuned.mode, tuned.thresholds.route, tuned.local.max_batch_size) == ("route", 0.7, 4)
    assert tuned.thresholds.cascade == policy.thresholds.cascade
    assert policy.thresholds.route == 0.5  # the original is untouched
    swapped = policy.replace(local=LocalConfig(adapter=None), budget=BudgetConfig(daily_usd=1))
    assert swapped.local == LocalConfig(adapter=None)
    assert swapped.budget.daily_usd == 1.0
    priced = policy.replace(
        **{"cloud.prices": {"m": ModelPrice(input_per_mtok=1, output_per_mtok=2)}}
    )
    assert priced.cloud.prices["m"].output_per_mtok == 2.0


def test_replace_validates() -> None:
    policy = load_policy("default")
    with pytest.raises(PolicyError, match=r"^thresholds\.route: must be a number between 0 and 1"):
        policy.replace(**{"thresholds.route": 7})
    with pytest.raises(PolicyError, match=r"did you mean 'route'"):
        policy.replace(**{"thresholds.rout": 0.7})
    with pytest.raises(PolicyError, match=r"^mode: must be one of"):
        policy.replace(mode="sometimes")


def test_policy_from_dict_names_its_source() -> None:
    with pytest.raises(
        PolicyError, match=r"^tuned: shadow\.rate: must be a number between 0 and 1"
    ):
        policy_from_dict({"shadow": {"rate": 2}}, source="tuned")
    with pytest.raises(PolicyError, match=r"unknown key; did you mean 'shadow'"):
        policy_from_dict({"shadw": {}})


def test_relative_classifier_path_resolves_against_policy_file(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    path = tmp_path / "conf" / "p.yaml"
    path.write_text("mode: route\nclassifier: models/clf.json\n", encoding="utf-8")
    policy = load_policy(path)
    assert Path(policy.classifier or "") == tmp_path / "conf" / "models" / "clf.json"
    absolute = tmp_path / "abs.json"
    path.write_text(f"classifier: {absolute}\n", encoding="utf-8")
    assert load_policy(path).classifier == str(absolute)
    # Saving elsewhere keeps pointing at the same file.
    save_policy(policy, tmp_path / "other" / "p.yaml")
    assert load_policy(tmp_path / "other" / "p.yaml").classifier == policy.classifier


def test_max_local_prompt_tokens_falls_back_to_the_local_limit() -> None:
    policy = parse_policy("local:\n  max_prompt_tokens: 800\n")
    assert policy.max_local_prompt_tokens == 800
    assert policy.replace(**{"rules.max_local_prompt_tokens": 300}).max_local_prompt_tokens == 300


@pytest.mark.parametrize("module", ["router.policy", "router.ledger", "router.ledger.pricing"])
def test_importing_policy_and_ledger_pulls_no_sdk(module: str) -> None:
    """The CLI's fast paths: no openai/httpx (0.7 s), let alone torch or litellm."""
    code = (
        f"import sys, {module}; "
        "heavy = {'openai', 'httpx', 'torch', 'litellm', 'transformers'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run(
        [sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[3]
    )


def test_the_bundled_policy_locator_imports_nothing_from_router() -> None:
    code = (
        "import sys, policies; policies.policy_path('default'); "
        "mine = [m for m in sys.modules if m == 'router' or m.startswith('router.')]; "
        "assert not mine, mine"
    )
    subprocess.run(
        [sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[3]
    )


def test_importing_policy_module_stays_light() -> None:
    code = (
        "import sys, router.policy, policies; router.policy.load_policy('default'); "
        "heavy = {'torch', 'transformers', 'peft', 'litellm'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run(
        [sys.executable, "-c", code], check=True, cwd=Path(__file__).resolve().parents[3]
    )


def test_distill_section_and_local_classes_validate_and_round_trip(tmp_path: Path) -> None:
    """#9.17 knobs: the gate's floor and data filter, and the classes an adapter may serve."""
    policy = parse_policy(
        "rules:\n  local_classes: ['  Reply with the label.  ', '', 'Reply with the label.']\n"
        "distill:\n  max_answer_chars: null\n  min_agreement: 0.6\n  min_class_examples: 20\n"
    )
    assert policy.rules.local_classes == ("Reply with the label.", "")  # stripped, deduped
    assert policy.distill.max_answer_chars is None and policy.distill.min_agreement == 0.6
    assert policy.distill.min_gain == 0.01 and policy.distill.min_class_examples == 20
    save_policy(policy, tmp_path / "p.yaml")
    assert load_policy(tmp_path / "p.yaml") == policy
    assert load_policy("default").rules.local_classes is None  # null: every class
    assert policy.replace(**{"rules.local_classes": []}).rules.local_classes == ()
    for text, expected in [
        ("distill:\n  min_agreement: 1.5\n", "distill.min_agreement: must be a number between 0"),
        ("distill:\n  max_answer_chars: 0\n", "distill.max_answer_chars: must be an integer >= 1"),
        ("distill:\n  min_class_examples: 0\n", "distill.min_class_examples"),
        ("rules:\n  local_classes: intents\n", "rules.local_classes: must be a list"),
        ("rules:\n  local_classes: [1]\n", "rules.local_classes: must be a list of strings"),
    ]:
        with pytest.raises(PolicyError, match=re.escape(expected)):
            parse_policy(text, source="x.yaml")


# ----------------------------------------------------------------------------- one home per default


def test_section_defaults_come_from_router_defaults() -> None:
    from router import _defaults as d

    cloud, local, cache = CloudConfig(), LocalConfig(), CacheSettings()
    assert (cloud.timeout_s, cloud.connect_timeout_s, cloud.deadline_s) == (
        d.CLOUD_TIMEOUT_S,
        d.CLOUD_CONNECT_TIMEOUT_S,
        d.CLOUD_DEADLINE_S,
    )
    assert (cloud.max_retries, cloud.backoff_base_s, cloud.backoff_max_s) == (
        d.CLOUD_MAX_RETRIES,
        d.BACKOFF_BASE_S,
        d.BACKOFF_MAX_S,
    )
    assert (local.max_batch_size, local.max_wait_ms, local.max_queue) == (
        d.LOCAL_MAX_BATCH_SIZE,
        d.LOCAL_MAX_WAIT_MS,
        d.LOCAL_MAX_QUEUE,
    )
    assert (local.max_prompt_tokens, local.max_new_tokens) == (
        d.LOCAL_MAX_PROMPT_TOKENS,
        d.LOCAL_MAX_NEW_TOKENS,
    )
    assert (cache.ttl_s, cache.size_limit_mb) == (d.CACHE_TTL_S, d.CACHE_SIZE_LIMIT_MB)


def test_local_section_builds_the_engine_config_without_drift() -> None:
    """``local_models`` cannot import ``router._defaults``; its copies must agree with the
    policy's, and every shared field must come from the policy, not from those copies."""
    from local_models.config import LocalModelConfig

    assert LocalConfig().engine_config() == LocalModelConfig()
    local = LocalConfig(
        model="m.gguf", precision="int8", max_batch_size=4, max_wait_ms=1, max_queue=8
    )
    built = local.engine_config(adapter_path="/a/v7", adapter_version="v7")
    assert (built.model, built.precision, built.adapter_path, built.adapter_version) == (
        "m.gguf",
        "int8",
        "/a/v7",
        "v7",
    )
    assert (built.max_batch_size, built.max_wait_ms, built.max_queue) == (4, 1.0, 8)
