"""Policies in and out: plain data, YAML text and files, with errors that name file and line.

The sections only know dotted field paths (``thresholds.route``); this module composes the YAML
node tree first, so it knows each key's line, and turns a section's ``FieldError`` into::

    policies/x.yaml:7: thresholds.route: must be a number between 0 and 1, got 'high'

Only ``yaml.SafeLoader`` is used: a policy file cannot build Python objects.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from router._errors import PolicyError
from router.policy.fields import FieldError, show
from router.policy.sections import RoutingPolicy, build_policy


def policy_from_dict(
    data: Mapping[str, Any], *, source: str = "<dict>", base_dir: str | Path | None = None
) -> RoutingPolicy:
    """Build a policy from plain data (e.g. parsed YAML or ``RoutingPolicy.to_dict()``).

    >>> policy_from_dict({"mode": "route", "thresholds": {"route": 0.7}}).thresholds.route
    0.7

    Args:
        data: Mapping of policy fields; sections as nested mappings. Missing keys take defaults.
        source: Name used in error messages (a file name, ``"<dict>"``...).
        base_dir: Directory that a relative ``classifier`` path is resolved against;
            None leaves it as written.

    Returns:
        The validated, frozen ``RoutingPolicy``.

    Raises:
        PolicyError: Unknown key, wrong type, out-of-range value or contradictory settings;
            the message names ``source`` and the dotted field.
    """
    try:
        return build_policy(data, base_dir=Path(base_dir) if base_dir is not None else None)
    except FieldError as exc:
        raise exc.at(source=source) from None


def _key_lines(node: yaml.Node, source: str, prefix: tuple[str, ...] = ()) -> dict:
    """Map each key path in a composed YAML document to its 1-based line; refuse duplicates."""
    lines: dict[tuple[str, ...], int] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.value == "<<":
                continue
            path = (*prefix, str(key_node.value))
            line = key_node.start_mark.line + 1
            if path in lines:
                raise FieldError(
                    path,
                    f"duplicate key (first set on line {lines[path]})",
                    source=source,
                    line=line,
                )
            lines[path] = line
            lines.update(_key_lines(value_node, source, path))
    return lines


def _locate(exc: FieldError, lines: dict, source: str) -> FieldError:
    """Attach file and line: the failing key, else a related key, else the nearest parent."""
    for path in (exc.path, *exc.also):
        if path in lines:
            return exc.at(source=source, line=lines[path])
    for cut in range(len(exc.path) - 1, 0, -1):
        if exc.path[:cut] in lines:
            return exc.at(source=source, line=lines[exc.path[:cut]])
    return exc.at(source=source)


def parse_policy(
    text: str, *, source: str = "<string>", base_dir: str | Path | None = None
) -> RoutingPolicy:
    """Parse policy YAML text (SafeLoader only).

    >>> parse_policy("mode: cascade\\n").mode
    'cascade'

    Args:
        text: The YAML document.
        source: Name used in error messages, normally the file path.
        base_dir: Directory a relative ``classifier`` path is resolved against.

    Returns:
        The validated, frozen ``RoutingPolicy``.

    Raises:
        PolicyError: Invalid YAML, empty document, or an invalid setting; the message reads
            ``source:line: field: problem``.
    """
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = " ".join(
            part for part in (getattr(exc, "context", None), getattr(exc, "problem", None)) if part
        ) or str(exc)
        raise PolicyError(f"{where}: invalid YAML: {problem}") from None
    finally:
        loader.dispose()
    if node is None or data is None:
        raise PolicyError(f"{source}: empty policy file; expected a mapping such as 'mode: hybrid'")
    if not isinstance(data, Mapping):
        line = node.start_mark.line + 1
        raise PolicyError(
            f"{source}:{line}: the top level must be a mapping of settings, got {show(data)}"
        )
    lines = _key_lines(node, source)
    try:
        return build_policy(data, base_dir=Path(base_dir) if base_dir is not None else None)
    except FieldError as exc:
        raise _locate(exc, lines, source) from None


def _bundled_path(name: str) -> Path:
    """The bundled policy file ``name``; the locator's plain error becomes a ``PolicyError``."""
    from policies import UnknownPolicyError, policy_path

    try:
        return policy_path(name)
    except UnknownPolicyError as exc:
        raise PolicyError(str(exc)) from None


def load_policy(source: str | Path) -> RoutingPolicy:
    """Load a policy from a YAML file or a bundled name.

    >>> load_policy("cost-saver").budget.daily_usd
    5.0

    Args:
        source: A path to a YAML file, or a bundled policy name: ``"default"``,
            ``"cost-saver"`` or ``"quality-first"``. A ``Path`` is always a file.

    Returns:
        The validated, frozen ``RoutingPolicy``.

    Raises:
        PolicyError: The file is missing/unreadable or the policy is invalid; the message
            names the file, line and field.
    """
    from policies import BUNDLED_POLICIES

    bundled = isinstance(source, str) and source in BUNDLED_POLICIES
    path = _bundled_path(source) if bundled else Path(source)  # type: ignore[arg-type]
    label = str(path) if bundled else str(source)
    if not path.is_file():
        hint = ""
        if isinstance(source, str) and not source.endswith((".yaml", ".yml")) and "/" not in source:
            close = difflib.get_close_matches(source, BUNDLED_POLICIES, n=1)
            hint = f"; did you mean the bundled policy {close[0]!r}?" if close else ""
        raise PolicyError(
            f"{label}: no such policy file{hint} (bundled policies: {', '.join(BUNDLED_POLICIES)})"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"{label}: cannot read policy file: {exc}") from None
    return parse_policy(text, source=label, base_dir=path.parent)


def save_policy(policy: RoutingPolicy, path: str | Path) -> None:
    """Write ``policy`` as YAML to ``path`` (parent directories are created).

    >>> save_policy(load_policy("default").replace(mode="route"), "tuned/policy.yaml")

    Args:
        policy: The policy to write.
        path: Destination file; overwritten atomically (write then rename).

    Raises:
        PolicyError: ``policy`` is not a ``RoutingPolicy``.
    """
    if not isinstance(policy, RoutingPolicy):
        raise PolicyError(f"save_policy needs a RoutingPolicy, got {type(policy).__name__}")
    from router._paths import write_private

    write_private(path, policy.to_yaml())


__all__ = ["load_policy", "parse_policy", "policy_from_dict", "save_policy"]
