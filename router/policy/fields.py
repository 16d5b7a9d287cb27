"""Field validators for the policy sections: each checks one value and names the field it is.

Why hand-rolled and not pydantic: every message must read ``thresholds.route: must be a number
between 0 and 1, got 'high'`` and carry the field's dotted path so the YAML loader can add the
file and line; pydantic's messages and ``loc`` tuples would need a translation layer as long as
these validators, and importing pydantic and building one model costs ~0.08 s on the CLI's
fast path (measured on the reference machine).

Each validator takes the field's path (``("thresholds", "route")``) and the value, returns the
normalized value (ints become floats for float fields, so equal policies hash equal) and raises
:class:`FieldError` otherwise.

>>> number(("thresholds", "route"), 1, lo=0, hi=1)
1.0
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Mapping
from typing import Any

from router._errors import PolicyError

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SECRET_PREFIXES = ("sk-", "sk_", "pk-", "rk-", "xai-", "gsk_", "AIza", "hf_")


class FieldError(PolicyError):
    """A ``PolicyError`` that knows which field (dotted path) is wrong, and where.

    >>> str(FieldError(("mode",), "must be one of ...", source="p.yaml", line=3))
    'p.yaml:3: mode: must be one of ...'

    Args:
        path: The field's path from the top of the policy (``("cloud", "timeout_s")``).
        reason: What is wrong, starting lower case (``must be a number > 0, got '60'``).
        also: Related fields whose line may stand in when ``path`` is not in the file (a
            contradiction between two keys, one of them left at its default).
        source: File (or other source) name, once known.
        line: 1-based line of the key in ``source``, once known.
    """

    def __init__(
        self,
        path: tuple[str, ...],
        reason: str,
        *,
        also: tuple[tuple[str, ...], ...] = (),
        source: str | None = None,
        line: int | None = None,
    ) -> None:
        self.path = path
        self.field = ".".join(path)
        self.reason = reason
        self.also = also
        self.source = source
        self.line = line
        where = ""
        if source is not None:
            where = f"{source}:{line}: " if line is not None else f"{source}: "
        prefix = f"{self.field}: " if self.field else ""
        super().__init__(f"{where}{prefix}{reason}")

    def at(
        self, *, source: str | None, line: int | None = None, prefix: tuple[str, ...] = ()
    ) -> FieldError:
        """The same error located in ``source`` (and under ``prefix``, for nested values)."""
        return FieldError(
            (*prefix, *self.path),
            self.reason,
            also=tuple((*prefix, *p) for p in self.also),
            source=source,
            line=line,
        )


def show(value: Any) -> str:
    """Render an offending value for an error message, shortened."""
    text = repr(value) if not isinstance(value, bool) else str(value).lower()
    if value is None:
        text = "null"
    elif isinstance(value, Mapping):
        text = "a mapping"
    elif isinstance(value, (list, tuple)) and len(text) > 60:
        text = "a list"
    return text if len(text) <= 60 else text[:57] + "..."


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def number(
    path: tuple[str, ...],
    value: Any,
    *,
    lo: float | None = None,
    hi: float | None = None,
    lo_open: bool = False,
    optional: bool = False,
) -> float | None:
    """A float field in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``), returned as ``float``."""
    if value is None and optional:
        return None
    if lo is not None and hi is not None:
        want = f"a number between {lo:g} and {hi:g}"
    elif lo is not None:
        want = f"a number {'>' if lo_open else '>='} {lo:g}"
    else:
        want = "a number"
    if optional:
        want += " or null"
    ok = _is_number(value) and value == value  # NaN != NaN
    if ok:
        ok = (lo is None or (value > lo if lo_open else value >= lo)) and (
            hi is None or value <= hi
        )
    if not ok:
        raise FieldError(path, f"must be {want}, got {show(value)}")
    return float(value)


def integer(path: tuple[str, ...], value: Any, *, lo: int, optional: bool = False) -> int | None:
    """An int field ``>= lo`` (``True`` is not an int here)."""
    if value is None and optional:
        return None
    is_int = isinstance(value, int) and not isinstance(value, bool)
    if not is_int or value < lo:
        want = f"an integer >= {lo}" + (" or null" if optional else "")
        raise FieldError(path, f"must be {want}, got {show(value)}")
    return value


def boolean(path: tuple[str, ...], value: Any) -> bool:
    """A true/false field (``1`` and ``'yes'`` are refused: YAML users mean different things)."""
    if not isinstance(value, bool):
        raise FieldError(path, f"must be true or false, got {show(value)}")
    return value


def string(path: tuple[str, ...], value: Any, *, optional: bool = False) -> str | None:
    """A non-blank string field."""
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        want = "a non-empty string" + (" or null" if optional else "")
        raise FieldError(path, f"must be {want}, got {show(value)}")
    return value


def choice(path: tuple[str, ...], value: Any, choices: tuple[str, ...]) -> str:
    """One of ``choices``; a near miss gets a "did you mean" hint."""
    if not isinstance(value, str) or value not in choices:
        close = difflib.get_close_matches(value, choices, n=1) if isinstance(value, str) else []
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        listed = ", ".join(repr(c) for c in choices)
        raise FieldError(path, f"must be one of {listed}, got {show(value)}{hint}")
    return value


def tags(path: tuple[str, ...], value: Any) -> tuple[str, ...]:
    """A list of non-blank tag strings, as a tuple (a bare string is refused, not split)."""
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise FieldError(path, f"must be a list of tag strings, got {show(value)}")
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise FieldError(path, f"must be a list of non-empty tag strings, got {show(item)}")
    return tuple(value)


def classes(path: tuple[str, ...], value: Any) -> tuple[str, ...] | None:
    """Traffic classes are system prompts, stripped as ``traffic_class`` strips them; ``""``
    (no system prompt) is a class too, so unlike tags empty strings are allowed."""
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, (list, tuple)):
        raise FieldError(path, f"must be a list of system prompts or null, got {show(value)}")
    out: list[str] = []
    for item in value:
        if not isinstance(item, str):
            raise FieldError(path, f"must be a list of strings, got {show(item)}")
        if item.strip() not in out:
            out.append(item.strip())
    return tuple(out)


def _looks_like_secret(value: str) -> bool:
    """Env var names are short and mostly upper case; keys are prefixed or long mixed-case."""
    if value.startswith(_SECRET_PREFIXES):
        return True
    mixed = any(c.islower() for c in value) and any(c.isupper() for c in value)
    return len(value) >= 32 and mixed and any(c.isdigit() for c in value)


def env_var_name(path: tuple[str, ...], value: Any) -> str | None:
    """The NAME of an environment variable, or null; a pasted key is refused and never echoed."""
    if value is not None and (
        not isinstance(value, str) or not _ENV_NAME.fullmatch(value) or _looks_like_secret(value)
    ):
        raise FieldError(
            path,
            "must be the NAME of an environment variable (like OPENAI_API_KEY), not the key itself",
        )
    return value


def http_url(path: tuple[str, ...], value: Any) -> str | None:
    """An ``http(s)://`` URL, or null."""
    if value is not None and (
        not isinstance(value, str) or not value.startswith(("http://", "https://"))
    ):
        raise FieldError(path, f"must be an http(s):// URL or null, got {show(value)}")
    return value


def redis_url(path: tuple[str, ...], value: Any) -> str | None:
    """A ``redis://``, ``rediss://`` or ``unix://`` URL without a password in it, or null."""
    if value is None:
        return None
    if not isinstance(value, str) or not value.startswith(("redis://", "rediss://", "unix://")):
        raise FieldError(
            path, f"must be a redis:// (or rediss://, unix://) URL or null, got {show(value)}"
        )
    from urllib.parse import urlsplit

    parts = urlsplit(value)
    if parts.password or "password=" in parts.query:
        raise FieldError(
            path,
            "must not contain a password (policy files are not secret): name an environment "
            "variable in cache.password_env instead",
        )
    return value


def store(obj: Any, name: str, value: Any) -> None:
    """Store a normalized value on a frozen dataclass during ``__post_init__``."""
    object.__setattr__(obj, name, value)


class ReadOnlyDict(dict):
    """A hashable dict that refuses mutation, so a frozen policy stays frozen."""

    def _refuse(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError("policy prices are read-only; use RoutingPolicy.replace()")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _refuse  # type: ignore[assignment]
    __ior__ = _refuse  # type: ignore[assignment]

    def __hash__(self) -> int:  # type: ignore[override]
        return hash(frozenset(self.items()))

    def __copy__(self) -> ReadOnlyDict:
        return self

    def __deepcopy__(self, memo: dict[int, Any]) -> ReadOnlyDict:
        return self


def check_keys(cls: type, data: Mapping[Any, Any], path: tuple[str, ...]) -> None:
    """Refuse keys that are not fields of ``cls`` (suggesting the closest) and inline API keys."""
    valid = [f.name for f in dataclasses.fields(cls)]
    for key in data:
        here = (*path, str(key))
        if isinstance(key, str) and "api_key" in key.lower() and key != "api_key_env":
            raise FieldError(
                here,
                "refusing an inline API key: put the key in an environment variable "
                "and name it in cloud.api_key_env",
            )
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise FieldError(here, f"unknown key{hint} (valid keys: {', '.join(valid)})")


def plain(value: Any) -> Any:
    """Config objects as plain dicts/lists, ready for JSON or YAML (ClassVars are not fields)."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


__all__ = [
    "FieldError",
    "ReadOnlyDict",
    "boolean",
    "check_keys",
    "choice",
    "classes",
    "env_var_name",
    "http_url",
    "integer",
    "number",
    "plain",
    "show",
    "store",
    "string",
    "tags",
]
