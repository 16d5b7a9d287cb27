"""Per-token cloud prices and local compute cost, without importing litellm.

Why not ``litellm.cost_per_token``: importing litellm takes seconds, and ``hybridgate report``
must start fast. litellm ships its price map as a JSON file
(``model_prices_and_context_window_backup.json``); we locate it with ``importlib`` (which does
not import the package), read it once on first use and keep it for the process.

Units: the litellm map and :class:`ModelPrice` hold **USD per token**; prices written in a
policy (``cloud.prices``) are **USD per 1M tokens** (``input_per_mtok``/``output_per_mtok``),
the unit providers publish.
"""

from __future__ import annotations

import importlib.util
import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LITELLM_PRICE_FILE = "model_prices_and_context_window_backup.json"
TOKENS_PER_MTOK = 1_000_000

_price_map: dict[str, ModelPrice] | None = None
_price_map_lock = threading.Lock()


@dataclass(frozen=True)
class ModelPrice:
    """Price of one model, in USD per token.

    >>> p = ModelPrice.per_million(input_per_mtok=0.15, output_per_mtok=0.6)
    >>> p.cost(prompt_tokens=1000, completion_tokens=100)
    0.00021
    """

    input_per_token: float
    """USD per prompt token."""
    output_per_token: float
    """USD per completion token."""

    def __post_init__(self) -> None:
        for name in ("input_per_token", "output_per_token"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"ModelPrice.{name} must be a number >= 0, got {value!r}")

    @classmethod
    def per_million(cls, *, input_per_mtok: float, output_per_mtok: float) -> ModelPrice:
        """Build from USD per 1M tokens (the unit of ``cloud.prices`` in a policy)."""
        return cls(
            input_per_token=float(input_per_mtok) / TOKENS_PER_MTOK,
            output_per_token=float(output_per_mtok) / TOKENS_PER_MTOK,
        )

    @classmethod
    def from_config(cls, model: str, value: ModelPrice | Mapping[str, Any]) -> ModelPrice:
        """Parse one ``cloud.prices`` entry.

        Args:
            model: The model the price is for (named in errors).
            value: A ``ModelPrice`` or ``{"input_per_mtok": 10, "output_per_mtok": 30}``.

        Returns:
            The price.

        Raises:
            PolicyError: Keys are missing, unknown or not numbers.
        """
        if isinstance(value, ModelPrice):
            return value
        from router.errors import PolicyError

        if not isinstance(value, Mapping):
            raise PolicyError(
                f"cloud.prices[{model!r}] must be a mapping with input_per_mtok and "
                f"output_per_mtok (USD per 1M tokens), got {type(value).__name__}"
            )
        expected = {"input_per_mtok", "output_per_mtok"}
        missing, unknown = expected - set(value), set(value) - expected
        if missing or unknown:
            raise PolicyError(
                f"cloud.prices[{model!r}] needs exactly input_per_mtok and output_per_mtok "
                f"(USD per 1M tokens); missing {sorted(missing)}, unknown {sorted(unknown)}"
            )
        try:
            return cls.per_million(
                input_per_mtok=float(value["input_per_mtok"]),
                output_per_mtok=float(value["output_per_mtok"]),
            )
        except (TypeError, ValueError) as exc:
            raise PolicyError(f"cloud.prices[{model!r}]: {exc}") from exc

    def cost(self, *, prompt_tokens: int, completion_tokens: int) -> float:
        """USD for one call with these token counts."""
        return prompt_tokens * self.input_per_token + completion_tokens * self.output_per_token


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
            out[model] = ModelPrice(input_per_token=float(inp), output_per_token=float(outp))
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

    >>> book = PriceBook({"my-finetune": {"input_per_mtok": 10, "output_per_mtok": 30}})
    >>> book.cloud_cost("openai/gpt-4o-mini", 1000, 100)
    0.00021
    """

    def __init__(
        self,
        custom: Mapping[str, ModelPrice | Mapping[str, Any]] | None = None,
        *,
        builtin: Mapping[str, ModelPrice] | None = None,
    ) -> None:
        """Create a price book.

        Args:
            custom: Policy prices, ``{model: ModelPrice | {"input_per_mtok", "output_per_mtok"}}``
                in **USD per 1M tokens**; they override litellm's map.
            builtin: The fallback map; default litellm's shipped prices (loaded lazily).

        Raises:
            PolicyError: A custom price is malformed.
        """
        self.custom: dict[str, ModelPrice] = {
            str(model): ModelPrice.from_config(str(model), value)
            for model, value in (custom or {}).items()
        }
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
            Its per-token price.

        Raises:
            PolicyError: No price is known (a ``ValueError``); the message says how to add one.
        """
        found = self._lookup(model)
        if found is None:
            from router.errors import PolicyError

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
    "ModelPrice",
    "PriceBook",
    "litellm_price_file",
    "litellm_prices",
    "local_cost",
    "parse_price_map",
]
