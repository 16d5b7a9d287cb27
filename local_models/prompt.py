"""The one prompt renderer: chat messages -> the text the local model reads.

Serving (``LocalEngine``), the promotion gate (which decodes through the engine) and LoRA
training (``training._model.encode_prompt``) all render here, so an adapter is trained and
judged on exactly the text it is served with.

>>> render_chat(tokenizer, [{"role": "user", "content": "hi"}])
'<|im_start|>user\\nhi<|im_end|>\\n<|im_start|>assistant\\n'
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from local_models.errors import InvalidRequest

_DEFAULT_SYSTEM_RE = re.compile(r"\A<\|im_start\|>system\n.*?<\|im_end\|>\n", re.DOTALL)


def chat_messages(messages: Sequence[Any]) -> list[dict[str, str]]:
    """``{"role", "content"}`` string pairs, as the chat template needs them.

    OpenAI content parts keep their text parts, joined with nothing in between (as the API
    reads them); other keys (``name``...) are dropped, since the template shows none of them.

    Raises:
        InvalidRequest: no messages, a message without a role, or content that is not text.
    """
    if not messages:
        raise InvalidRequest("messages must not be empty", param="messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, Mapping) or "role" not in m:
            raise InvalidRequest(f"messages[{i}] must be a dict with 'role'", param="messages")
        content = m.get("content")
        if isinstance(content, list):  # OpenAI content parts: keep the text ones
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
        if not isinstance(content, str):
            raise InvalidRequest(f"messages[{i}].content must be a string", param="messages")
        out.append({"role": str(m["role"]), "content": content})
    return out


def render_chat(tokenizer: Any, messages: Sequence[Any]) -> str:
    """The prompt text for ``messages``, ending with the assistant-turn header.

    SmolLM2's template injects a ~17-token default system prompt when the conversation has
    none; it is dropped, which shortens every prompt (prefill cost) and keeps the LoRA student
    trained on exactly the text it is served with. A tokenizer without a chat template gets a
    plain ``role: content`` transcript.

    Raises:
        InvalidRequest: see :func:`chat_messages`.
    """
    msgs = chat_messages(messages)
    if not getattr(tokenizer, "chat_template", None):
        return "".join(f"{m['role']}: {m['content']}\n" for m in msgs) + "assistant:"
    text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    if msgs[0]["role"] != "system":
        probe = tokenizer.apply_chat_template(
            [{"role": "user", "content": "x"}], tokenize=False, add_generation_prompt=True
        )
        if _DEFAULT_SYSTEM_RE.match(probe):
            text = _DEFAULT_SYSTEM_RE.sub("", text, count=1)
    return text


def prompt_messages(
    messages: Sequence[Mapping[str, Any]], *, system_prompt: str | None
) -> list[dict[str, Any]]:
    """The conversation as the student sees it: ``system_prompt`` is put first when the
    conversation has no system message of its own; None adds nothing.

    Training stores its ``system_prompt`` in the adapter's metadata; the gate and relabelling
    add it the same way before rendering.
    """
    msgs = [dict(m) for m in messages]
    if system_prompt is None or (msgs and msgs[0].get("role") == "system"):
        return msgs
    return [{"role": "system", "content": system_prompt}, *msgs]


__all__ = ["chat_messages", "prompt_messages", "render_chat"]
