"""Base-model loading and prompt building shared by training and evaluation (one switch point)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from router.errors import ModelLoadError


def resolve_base(spec: str) -> Path:
    """Resolve a model spec to a HF safetensors directory via ``local_models``.

    Raises:
        ModelLoadError: the spec names nothing loadable.
    """
    try:
        from local_models.loader import resolve_model
    except ImportError:  # local_models not installed alongside: accept plain HF dirs only
        path = Path(spec).expanduser()
        if (path / "config.json").is_file():
            return path
        raise ModelLoadError(
            f"cannot resolve model {spec!r}: local_models is unavailable"
        ) from None
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
    from transformers import AutoTokenizer

    from local_models.loader import load_fp32_weights

    path = resolve_base(str(spec_or_model))
    model = load_fp32_weights(path)  # the one loader serving uses too (ModelLoadError on failure)
    try:
        tok = tokenizer or AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"could not load model from {path}: {exc}") from exc
    return model, _with_pad(tok), path


def _with_pad(tok: Any) -> Any:
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def prompt_messages(
    messages: Sequence[dict[str, Any]], *, system_prompt: str | None
) -> list[dict[str, Any]]:
    """The messages rendered for the student: ``system_prompt`` is added when the conversation
    has no system message of its own; None adds nothing."""
    msgs = [dict(m) for m in messages]
    if system_prompt is None or (msgs and msgs[0].get("role") == "system"):
        return msgs
    return [{"role": "system", "content": system_prompt}, *msgs]


def encode_prompt(
    tokenizer: Any, messages: Sequence[dict[str, Any]], *, system_prompt: str | None
) -> list[int]:
    """Token ids of the templated prompt, ending with the assistant-turn header.

    Rendering goes through ``local_models.engine.render_chat``, the one definition serving
    uses (it drops a chat template's injected default system prompt, e.g. SmolLM2's ~17
    tokens), so the adapter is trained on exactly the text it is served with.
    """
    from local_models.engine import render_chat

    text = render_chat(tokenizer, prompt_messages(messages, system_prompt=system_prompt))
    return list(tokenizer(text, add_special_tokens=False).input_ids)


def encode_answer(tokenizer: Any, answer: str) -> list[int]:
    """Token ids of the assistant answer followed by the end-of-turn token (what is learned)."""
    ids = list(tokenizer(answer, add_special_tokens=False).input_ids)
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    return ids


def hash_model_files(model_dir: Path | None) -> str | None:
    """sha256 over the model's weight files (safetensors or GGUF), in name order."""
    if model_dir is None:
        return None
    files = sorted([*Path(model_dir).glob("*.safetensors"), *Path(model_dir).glob("*.gguf")])
    if not files:
        return None
    h = hashlib.sha256()
    for f in files:
        with f.open("rb") as fh:
            for chunk in iter(lambda fh=fh: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()
