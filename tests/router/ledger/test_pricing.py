"""Prices: litellm's shipped map without importing litellm, policy overrides, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from router.errors import PolicyError
from router.ledger.pricing import (
    ModelPrice,
    PriceBook,
    litellm_price_file,
    local_cost,
    parse_price_map,
)

REPO = Path(__file__).resolve().parents[3]


def test_report_modules_import_without_heavy_libraries() -> None:
    """``hybridgate report`` must start fast: no torch/litellm/transformers on this path."""
    code = (
        "import sys, router.ledger, router.ledger.pricing, router.ledger.reports\n"
        "router.ledger.pricing.litellm_prices()\n"
        "heavy = [m for m in ('torch', 'litellm', 'transformers', 'peft', 'openai') "
        "if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == ""


def test_shipped_prices_match_the_litellm_file() -> None:
    path = litellm_price_file()
    assert path is not None and path.name == "model_prices_and_context_window_backup.json"
    raw = json.loads(path.read_text())["gpt-4o-mini"]
    price = PriceBook().price("gpt-4o-mini")
    assert price == ModelPrice.per_token(
        input_per_token=raw["input_cost_per_token"], output_per_token=raw["output_cost_per_token"]
    )
    assert price.input_per_token == pytest.approx(raw["input_cost_per_token"])


def test_provider_prefix_falls_back_to_bare_name() -> None:
    book = PriceBook()
    assert book.price("openai/gpt-4o-mini") == book.price("gpt-4o-mini")
    assert book.has_price("openai/gpt-4o-mini")


def test_full_name_wins_over_bare_name() -> None:
    builtin = {
        "azure/m": ModelPrice.per_token(input_per_token=2.0, output_per_token=2.0),
        "m": ModelPrice.per_token(input_per_token=1.0, output_per_token=1.0),
    }
    book = PriceBook(builtin=builtin)
    assert book.price("azure/m").input_per_token == 2.0
    assert book.price("other/m").input_per_token == 1.0


def test_custom_prices_are_per_million_tokens_and_override_litellm() -> None:
    book = PriceBook(
        {
            "my-finetune": {"input_per_mtok": 10, "output_per_mtok": 30},
            "gpt-4o-mini": {"input_per_mtok": 1, "output_per_mtok": 1},
        }
    )
    assert book.cloud_cost("my-finetune", 1_000_000, 1_000_000) == pytest.approx(40.0)
    assert book.cloud_cost("my-finetune", 2000, 500) == pytest.approx(0.02 + 0.015)
    assert book.cloud_cost("openai/gpt-4o-mini", 1_000_000, 0) == pytest.approx(1.0)


def test_cloud_cost_from_litellm_prices() -> None:
    # gpt-4o-mini in litellm 1.106.2: $0.15 / $0.60 per 1M tokens
    assert PriceBook().cloud_cost("gpt-4o-mini", 1000, 100) == pytest.approx(0.00021)


def test_unknown_model_names_the_fix() -> None:
    book = PriceBook()
    assert not book.has_price("acme/brand-new-model")
    with pytest.raises(PolicyError) as info:
        book.price("acme/brand-new-model")
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert "'acme/brand-new-model'" in message and "cloud.prices" in message
    assert "per 1M tokens" in message


@pytest.mark.parametrize(
    "bad",
    [
        {"input_per_mtok": 1},
        {"input_per_mtok": 1, "output_per_mtok": 2, "currency": "EUR"},
        {"input_per_mtok": "cheap", "output_per_mtok": 2},
        {"input_per_mtok": -1, "output_per_mtok": 2},
        [1, 2],
    ],
)
def test_malformed_custom_price_is_a_policy_error(bad: object) -> None:
    with pytest.raises(PolicyError, match=r"^cloud\.prices\.my-model"):
        PriceBook({"my-model": bad})


def test_one_price_type_for_policy_and_ledger() -> None:
    """A policy's prices go into the book as they are: no second class, no hand-copied dict."""
    from router.policy import ModelPrice as PolicyPrice
    from router.policy import load_policy

    assert PolicyPrice is ModelPrice
    prices = load_policy("default").cloud.prices
    book = PriceBook(prices)
    assert book.price("gpt-4o-mini") is prices["gpt-4o-mini"]
    assert book.cloud_cost("gpt-4o-mini", 2_000_000, 1_000_000) == pytest.approx(0.3 + 0.6)


def test_negative_tokens_rejected() -> None:
    with pytest.raises(ValueError, match="token counts"):
        PriceBook({"m": {"input_per_mtok": 1, "output_per_mtok": 1}}).cloud_cost("m", -1, 0)


def test_local_cost_is_compute_time_times_hourly_price() -> None:
    assert local_cost(3600, 2.0) == pytest.approx(2.0)
    assert local_cost(0.5, 0.72) == pytest.approx(0.0001)
    assert PriceBook().local_cost(1.8, 2.0) == pytest.approx(0.001)
    with pytest.raises(ValueError):
        local_cost(-1, 1.0)


def test_parse_price_map_skips_entries_without_token_prices() -> None:
    parsed = parse_price_map(
        {
            "sample_spec": {"input_cost_per_token": 0.0, "output_cost_per_token": 0.0},
            "chat": {"input_cost_per_token": 1e-6, "output_cost_per_token": 2e-6},
            "image": {"output_cost_per_image": 0.04},
            "odd": "not a mapping",
        }
    )
    assert parsed == {"chat": ModelPrice(input_per_mtok=1.0, output_per_mtok=2.0)}
