"""Message text helpers: the one place that says what text an OpenAI chat message carries.

The classifier, the replay cloud, tuning and the distillation data all read prompts out of
messages; with one copy each they drifted (one joined content parts with a space). The rule
here is the OpenAI API's: a message's text is its string content, or its text parts joined
with nothing in between. Standard library only, so the CLI and ``training`` may import it.

>>> content_text([{"type": "text", "text": "Hello, "}, {"type": "text", "text": "world"}])
'Hello, world'
>>> last_user_text([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}])
'hi'
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def content_text(content: Any) -> str:
    """The text of a message's ``content``.

    Args:
        content: A string, a list of OpenAI content parts, or None (an assistant message that
            only calls tools).

    Returns:
        The string itself; for parts, the ``text`` of each text part joined with ``""`` (as the
        OpenAI API reads them; parts without text, such as images, add nothing); ``""`` for
        None. Anything else is ``str(content)``, so a stored odd value still reads as text.
    """
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list | tuple):
        return "".join(
            part["text"]
            for part in content
            if isinstance(part, Mapping) and isinstance(part.get("text"), str)
        )
    return str(content)


def last_user_text(messages: Iterable[Mapping[str, Any]] | None) -> str:
    """The text of the last user message that has any: what the request is asking now.

    The difficulty classifier scores it, tuning fits on it and the replay cloud looks its
    answer up by it (stripped), so the three agree on which prompt a request is.

    Args:
        messages: OpenAI-style chat messages (non-mapping items are skipped); None when the
            ledger stored no content.

    Returns:
        That message's text, or ``""`` when no user message has text.
    """
    for message in reversed(list(messages or ())):
        if isinstance(message, Mapping) and message.get("role") == "user":
            text = content_text(message.get("content"))
            if text:
                return text
    return ""


def class_label(kind: str, *, width: int = 40, quote: bool = True) -> str:
    """A traffic class (its system prompt) short enough for a log line or a table cell:
    cut to ``width`` characters, quoted unless ``quote`` is False; ``"(no system prompt)"``
    for the empty class."""
    if not kind:
        return "(no system prompt)"
    short = kind if len(kind) <= width else kind[: width - 3] + "..."
    return repr(short) if quote else short


__all__ = ["class_label", "content_text", "last_user_text"]
