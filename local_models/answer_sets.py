"""Closed answer sets per traffic class: what lets a 135M student classify reliably.

Much app traffic is classification in disguise: a fixed system prompt ("Reply with the intent
label only") and a few dozen possible answers. When the teacher's answers for one *traffic
class* (requests sharing a system prompt) form a small closed set, decoding constrained to that
set turns a model that rambles into one that always emits a valid label. Training detects the
sets (``training.evaluate.answer_sets``) and stores them in the adapter's ``metadata.json``; the
engine reads them with the adapter and applies them to matching requests, so served accuracy is
the accuracy the promotion gate measured.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from local_models.errors import ModelLoadError

ADAPTER_METADATA_FILE = "metadata.json"
"""Written next to a registered adapter's weights (``local_models.registry``)."""

AnswerSets = Mapping[str, tuple[str, ...]]
"""Traffic class (see :func:`traffic_class`) -> the answers allowed for it."""


def traffic_class(messages: Sequence[Mapping[str, Any]]) -> str:
    """The key a request's answer set is stored under: its system prompt, ``""`` without one."""
    if messages and messages[0].get("role") == "system":
        content = messages[0].get("content")
        return content.strip() if isinstance(content, str) else ""
    return ""


def read_answer_sets(adapter_path: str | Path | None) -> dict[str, tuple[str, ...]]:
    """The answer sets stored beside an adapter; ``{}`` when there are none (or no metadata).

    A plain PEFT directory without our metadata is served unconstrained, as before. A metadata
    file that exists but cannot be parsed is an error, not ``{}``: serving the adapter
    unconstrained would silently give a different accuracy from the one its gate measured.

    Raises:
        ModelLoadError: ``metadata.json`` is unreadable or not JSON; the message names it.
    """
    if adapter_path is None:
        return {}
    meta_file = Path(adapter_path) / ADAPTER_METADATA_FILE
    if not meta_file.is_file():
        return {}
    try:
        raw = json.loads(meta_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ModelLoadError(
            f"{meta_file}: broken adapter metadata ({exc}); fix or restore the file, or "
            "serve another adapter (hybridgate adapters rollback)"
        ) from None
    sets = raw.get("answer_sets") if isinstance(raw, dict) else None
    if not isinstance(sets, dict):
        return {}
    return {
        str(key): tuple(a for a in answers if isinstance(a, str) and a)
        for key, answers in sets.items()
        if isinstance(answers, list) and any(isinstance(a, str) and a for a in answers)
    }


__all__ = ["ADAPTER_METADATA_FILE", "AnswerSets", "read_answer_sets", "traffic_class"]
