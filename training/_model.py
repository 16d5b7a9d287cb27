"""Base-model loading and prompt encoding for training and evaluation (one switch point).

Loading, prompt rendering and weight hashing are ``local_models``' (the serving side): this
module only turns them into what training needs (fp32 model + tokenizer, token ids).
``prompt_messages`` and ``hash_model_files`` are re-exported from there.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from local_models.adapter_checks import hash_model_files
from local_models.errors import ModelLoadError
from local_models.prompt import prompt_messages, render_chat


def resolve_base(spec: str) -> Path:
    """Resolve a model spec to a HF safetensors directory via ``local_models``.

    Raises:
        ModelLoadError: the spec names nothing loadable.
    """
    from local_models.loader import resolve_model

    return resolve_model(spec)


def load_trainable(spec_or_model: Any, tokenizer: Any = None) -> tuple[Any, Any, Path | None]:
    """Load an fp32 model + tokenizer for training/evaluation.

    Args:
        spec_or_model: a model spec/dir, or an already loaded ``PreTrainedModel``.
        tokenizer: required when a model object is given.

    Returns:
        ``(model, tokenizer, model_dir or None)``.

    Raises:
        ModelLoadError: unloadable spec, or a model object given without a tokenizer.
    """
    if not isinstance(spec_or_model, str | Path):
        if tokenizer is None:
            raise ModelLoadError("a model object needs its tokenizer (tokenizer=...)")
        return spec_or_model, _with_pad(tokenizer), None
    from local_models.loader import load_fp32_weights, load_tokenizer

    path = resolve_base(str(spec_or_model))
    # The loaders serving uses too (ModelLoadError naming the directory on failure).
    model = load_fp32_weights(path)
    tok = tokenizer or load_tokenizer(path)
    return model, _with_pad(tok), path


def _with_pad(tok: Any) -> Any:
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def encode_prompt(
    tokenizer: Any, messages: Sequence[dict[str, Any]], *, system_prompt: str | None
) -> list[int]:
    """Token ids of the templated prompt, ending with the assistant-turn header.

    Rendering goes through ``local_models.prompt.render_chat``, the one definition serving
    uses (it drops a chat template's injected default system prompt, e.g. SmolLM2's ~17
    tokens), so the adapter is trained on exactly the text it is served with.
    """
    text = render_chat(tokenizer, prompt_messages(messages, system_prompt=system_prompt))
    return list(tokenizer(text, add_special_tokens=False).input_ids)


def encode_answer(tokenizer: Any, answer: str) -> list[int]:
    """Token ids of the assistant answer followed by the end-of-turn token (what is learned)."""
    ids = list(tokenizer(answer, add_special_tokens=False).input_ids)
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    return ids


__all__ = [
    "encode_answer",
    "encode_prompt",
    "hash_model_files",
    "load_trainable",
    "prompt_messages",
    "resolve_base",
]
