"""Secrets never reach a stored row: key-shaped strings and configured key values are scrubbed.

Standard library only (the CLI's ``report`` path imports the ledger).
"""

from __future__ import annotations

import json
import re
from typing import Any

_REDACTED = "[REDACTED]"
_SECRET_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # OpenAI / Anthropic / most "sk-" style keys (sk-..., sk-proj-..., sk-ant-...).
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{12,}"), _REDACTED),
    # Authorization headers.
    (re.compile(r"(?i)\bBearer\s+[A-Za-z0-9._~+/=\-]{8,}"), "Bearer " + _REDACTED),
    # key=value / "key": "value" pairs whose name says secret.
    (
        re.compile(
            r"(?i)((?:api[_-]?key|apikey|x-api-key|access[_-]?token|auth[_-]?token|"
            r"secret(?:[_-]?key)?|password)[\"']?\s*[:=]\s*[\"']?)([^\s\"'&,;]{4,})"
        ),
        r"\1" + _REDACTED,
    ),
    # AWS access key ids and Google API keys.
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), _REDACTED),
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b"), _REDACTED),
)
_SECRET_HINT = re.compile(r"(?i)sk-|bearer|key|token|secret|password|AKIA|AIza")


def scrub_secrets(text: str) -> str:
    """Replace anything that looks like an API key or bearer token with ``[REDACTED]``.

    Args:
        text: Free text (a message, an answer, an error message).

    Returns:
        The text with secrets replaced; unchanged when nothing matched.
    """
    if not _SECRET_HINT.search(text):  # fast path: most rows hold no secret-like words
        return text
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def redact_values(text: str, values: tuple[str, ...]) -> str:
    """Replace each of ``values`` (configured secrets, whatever their shape) in ``text``."""
    for value in values:
        if value and value in text:
            text = text.replace(value, _REDACTED)
    return text


def _scrub_obj(value: Any) -> Any:
    """Scrub every string inside a JSON-like structure (before encoding, so JSON stays valid)."""
    if isinstance(value, str):
        return scrub_secrets(value)
    if isinstance(value, dict):
        return {str(k): _scrub_obj(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_scrub_obj(v) for v in value]
    return value


def _safe_text(text: str | None) -> str | None:
    """Make text storable: scrub secrets and replace unencodable characters (lone surrogates)."""
    if text is None:
        return None
    if not isinstance(text, str):
        text = str(text)
    text = scrub_secrets(text)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text


def _to_json(value: Any) -> str | None:
    """Encode scrubbed JSON; never raises (falls back to a JSON string of the repr)."""
    if value is None:
        return None
    try:
        return json.dumps(_scrub_obj(value), ensure_ascii=True, default=str)
    except (TypeError, ValueError, RecursionError):
        return json.dumps(scrub_secrets(repr(value)), ensure_ascii=True)


def _from_json(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


__all__ = ["redact_values", "scrub_secrets"]
