"""Per-token cloud prices and local compute cost, without importing litellm.

Why not ``litellm.cost_per_token``: importing litellm takes seconds, and ``hybridgate report``
must start fast. litellm ships its price map as a JSON file
(``model_prices_and_context_window_backup.json``); we locate it with ``importlib`` (which does
not import the package), read it once on first use and keep it for the process.

Units: one price type, ``ModelPrice`` (defined with the policy sections, re-exported here), in
**USD per 1M tokens** (``input_per_mtok``/``output_per_mtok``), the unit providers publish and
policies (``cloud.prices``) are written in. litellm's map is USD per token; it is converted once,
when read. Custom prices are validated by the policy's own parser, so a bad price reads the same
from ``PriceBook(...)`` as from a policy file: ``cloud.prices.<model>.<key>: ...``.
"""

from __future__ import annotations

import importlib.util
import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from router._errors import PolicyError
from router.policy.sections import TOKENS_PER_MTOK, ModelPrice, parse_prices

LITELLM_PRICE_FILE = "model_prices_and_context_window_backup.json"

_price_map: dict[str, ModelPrice] | None = None
_price_map_lock = threading.Lock()


def litellm_price_file() -> Path | None:
    """Path of the price map litellm ships, found without importing litellm (None if absent)."""
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / LITELLM_PRICE_FILE
        if candidate.is_file():
            return candidate
    return None


def parse_price_map(raw: Mapping[str, Any]) -> dict[str, ModelPrice]:
    """Keep the entries of a litellm-format map that carry both per-token prices.

    Args:
        raw: ``{model: {"input_cost_per_token": .., "output_cost_per_token": ..}}``.

    Returns:
        ``{model: ModelPrice}``; entries without numeric prices (e.g. ``sample_spec``,
        image models) are skipped.
    """
    out: dict[str, ModelPrice] = {}
    for model, info in raw.items():
        if model == "sample_spec" or not isinstance(info, Mapping):
            continue
        inp, outp = info.get("input_cost_per_token"), info.get("output_cost_per_token")
        if isinstance(inp, (int, float)) and isinstance(outp, (int, float)):
            if inp < 0 or outp < 0:
                continue
            out[model] = ModelPrice.per_token(input_per_token=inp, output_per_token=outp)
    return out


def litellm_prices() -> dict[str, ModelPrice]:
    """litellm's shipped prices, loaded on first call and cached for the process.

    Returns:
        ``{model: ModelPrice}``; empty when litellm is not installed.
    """
    global _price_map
    if _price_map is None:
        with _price_map_lock:
            if _price_map is None:
                path = litellm_price_file()
                raw = json.loads(path.read_text(encoding="utf-8")) if path else {}
                _price_map = parse_price_map(raw)
    return _price_map


def local_cost(compute_seconds: float, usd_per_hour: float) -> float:
    """Cost of local compute: seconds used x hourly price of the machine (or its share).

    Args:
        compute_seconds: Wall-clock seconds the local backend spent on the request.
        usd_per_hour: What the hardware costs per hour (``local.usd_per_hour`` in a policy).

    Returns:
        USD.

    Raises:
        ValueError: A negative input.
    """
    if compute_seconds < 0 or usd_per_hour < 0:
        raise ValueError(
            f"local_cost needs compute_seconds >= 0 and usd_per_hour >= 0, "
            f"got {compute_seconds} and {usd_per_hour}"
        )
    return compute_seconds * usd_per_hour / 3600.0


class PriceBook:
    """Looks up what a cloud model costs: policy prices first, then litellm's map.

    >>> book = PriceBook(load_policy("default").cloud.prices)
    >>> book.cloud_cost("openai/gpt-4o-mini", 1000, 100)
    0.00021
    >>> PriceBook({"my-finetune": {"input_per_mtok": 10, "output_per_mtok": 30}})
    """

    def __init__(
        self,
        custom: Mapping[str, ModelPrice | Mapping[str, Any]] | None = None,
        *,
        builtin: Mapping[str, ModelPrice] | None = None,
    ) -> None:
        """Create a price book.

        Args:
            custom: Policy prices (``policy.cloud.prices``), or plain
                ``{model: {"input_per_mtok": .., "output_per_mtok": ..}}`` in **USD per 1M
                tokens**; they override litellm's map.
            builtin: The fallback map; default litellm's shipped prices (loaded lazily).

        Raises:
            PolicyError: A custom price is malformed (the message names
                ``cloud.prices.<model>``).
        """
        self.custom: dict[str, ModelPrice] = dict(parse_prices(custom or {}))
        self._builtin = builtin

    def _lookup(self, model: str) -> ModelPrice | None:
        candidates = [model]
        if "/" in model:
            candidates.append(model.split("/", 1)[1])
        for name in candidates:
            if name in self.custom:
                return self.custom[name]
        builtin = self._builtin if self._builtin is not None else litellm_prices()
        for name in candidates:
            if name in builtin:
                return builtin[name]
        return None

    def has_price(self, model: str) -> bool:
        """Whether :meth:`price` would succeed for ``model``."""
        return self._lookup(model) is not None

    def price(self, model: str) -> ModelPrice:
        """The price of ``model``; ``provider/name`` also tries ``name``.

        Args:
            model: Model name as given to the cloud (``gpt-4o-mini``, ``openai/gpt-4o-mini``).

        Returns:
            Its price.

        Raises:
            PolicyError: No price is known (a ``ValueError``); the message says how to add one.
        """
        found = self._lookup(model)
        if found is None:
            raise PolicyError(
                f"no price known for model {model!r}: add it under cloud.prices in your policy "
                "(input/output USD per 1M tokens)"
            )
        return found

    def cloud_cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> float:
        """USD a cloud call costs.

        Args:
            model: Model name (see :meth:`price`).
            prompt_tokens: Tokens sent.
            completion_tokens: Tokens received.

        Returns:
            USD.

        Raises:
            PolicyError: No price is known for ``model``.
            ValueError: Negative token counts.
        """
        if prompt_tokens < 0 or completion_tokens < 0:
            raise ValueError(
                f"token counts must be >= 0, got prompt={prompt_tokens} "
                f"completion={completion_tokens}"
            )
        return self.price(model).cost(
            prompt_tokens=prompt_tokens, completion_tokens=completion_tokens
        )

    def local_cost(self, compute_seconds: float, usd_per_hour: float) -> float:
        """Same as module-level :func:`local_cost` (so callers need only the book)."""
        return local_cost(compute_seconds, usd_per_hour)


__all__ = [
    "TOKENS_PER_MTOK",
    "ModelPrice",
    "PriceBook",
    "litellm_price_file",
    "litellm_prices",
    "local_cost",
    "parse_price_map",
]
