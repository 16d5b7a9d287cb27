"""The local inference engine: a lean batched decode loop over a HF causal LM.

Why not ``model.generate``: it has no closed answer sets, per-row stop strings with streamed
safe text, a shared-prefix KV cache or adapter swaps between batches. Its speed is no longer the
reason: ``benchmarks/decode_paths.py`` measures this loop at parity with ``generate`` for one
stream and ~0.6x at batch 32 in fp32 (the gap is not found yet); what makes the local tier fast
is the ``int4`` precision (``quant_int4``). Here a batch is prefilled once (left-padded, only the last position's logits computed),
then decoded one token per step with the KV cache; finished rows leave the batch so the
rest run faster. A prompt prefix every row shares (the app's system prompt) is prefilled once
and its KV cache kept for later batches. A lock around each batch makes adapter swaps land
between batches. Rows bound to a closed answer set pick their tokens through
``local_models.constrained`` and prompts are rendered by ``local_models.prompt``: the promotion
gate decodes through this engine too, so it measures what is served.
"""

from __future__ import annotations

import collections
import copy
import os
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from local_models.answer_sets import AnswerSets, read_answer_sets, traffic_class
from local_models.config import GenerationRequest, GenerationResult, LocalModelConfig
from local_models.constrained import TrieCache, TrieCursor, pick
from local_models.errors import InvalidRequest, ModelLoadError
from local_models.prompt import render_chat

DeltaCallback = Callable[[int, str], None]
"""``on_delta(index_in_batch, text)`` receives streamed text pieces."""

MIN_SHARED_PREFIX = 8
"""Shared prefixes shorter than this many tokens are not worth a separate prefill."""
PREFIX_CACHE_ENTRIES = 8
"""Prefix KV caches kept (least recently used dropped first); SmolLM2-135M in fp32 holds
~46 KB per prefix token."""


def _default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


class _Row:
    """Decode state of one request inside a batch."""

    def __init__(self, index: int, req: GenerationRequest, prompt_len: int, max_new: int) -> None:
        self.index = index
        self.req = req
        self.prompt_len = prompt_len
        self.max_new = max_new
        self.ids: list[int] = []
        self.logprobs: list[float] = []
        self.text = ""
        self.emitted = 0
        self.finish: str | None = None
        self.generator = None
        self.cursor: TrieCursor | None = None
        """Position in the row's answer trie when it is constrained (``constrained.py``)."""


class LocalEngine:
    """Batched generation on a local causal LM, with hot-swappable LoRA adapters.

    >>> engine = LocalEngine.from_config(LocalModelConfig(precision="int8"))
    >>> [r] = engine.generate([GenerationRequest(messages=({"role": "user", "content": "hi"},))])
    >>> r.text, r.adapter_version
    """

    def __init__(
        self,
        *,
        model: Any,
        tokenizer: Any,
        config: LocalModelConfig,
        device: str = "cpu",
        base_factory: Callable[[], Any] | None = None,
        convert: Callable[[Any], Any] | None = None,
        merge: bool = True,
    ) -> None:
        """Wrap an already-loaded serving model; prefer ``from_config``/``from_pretrained_model``.

        Args:
            model: The serving model (already in its precision).
            tokenizer: Its tokenizer (chat template used when present).
            config: Engine config.
            device: Resolved device of ``model``.
            base_factory: Returns a fresh fp32 base model, used to merge a new adapter.
            convert: Turns a merged fp32 model into the serving precision.
            merge: False when ``convert`` takes the adapter unmerged (``int4``).
        """
        import torch

        self.config = config
        self.device = device
        self.tokenizer = tokenizer
        self._model = model
        self._base_factory = base_factory
        self._convert = convert
        self._merge = merge
        self._lock = threading.Lock()
        self.adapter_version: str | None = config.adapter_version
        self.adapter_path: str | None = config.adapter_path
        self.answer_sets: AnswerSets = read_answer_sets(config.adapter_path)
        """Closed answer sets per traffic class, from the adapter's metadata (may be empty)."""
        self._tries = TrieCache(tokenizer)
        self._prefixes: collections.OrderedDict[tuple[int, ...], Any] = collections.OrderedDict()
        """Prefix token ids -> their KV cache (batch 1) under the model now serving."""
        self._special_ids = {int(t) for t in getattr(tokenizer, "all_special_ids", [])}
        torch.set_num_threads(config.threads or _default_threads())
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self._pad_id = int(tokenizer.pad_token_id)
        self._eos_ids = self._collect_eos_ids(model, tokenizer)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, config: LocalModelConfig) -> LocalEngine:
        """Resolve, convert if needed, load in ``config.precision`` and merge the adapter.

        Raises:
            ModelLoadError: Weights/adapter missing or corrupt, or precision unsupported here.
        """
        from local_models.loader import load_fp32_weights, load_tokenizer, resolve_model
        from local_models.quantization import get_backend, resolve_device

        device = resolve_device(config.device)
        backend = get_backend(config.precision, device=device)
        path = resolve_model(config.model)
        tokenizer = load_tokenizer(path)
        if config.adapter_path is not None:
            if backend.convert is None:
                raise ModelLoadError(
                    f"precision {backend.name!r} cannot merge adapters; use bf16 or fp32"
                )
            model = backend.convert(
                _merge_adapter(
                    load_fp32_weights(path), config.adapter_path, merge=backend.merges_adapter
                )
            )
        else:
            model = backend.load(path, device=device)
        model.eval()
        return cls(
            model=model,
            tokenizer=tokenizer,
            config=config,
            device=device,
            base_factory=lambda: load_fp32_weights(path),
            convert=backend.convert,
            merge=backend.merges_adapter,
        )

    @classmethod
    def from_pretrained_model(
        cls, model: Any, tokenizer: Any, config: LocalModelConfig, *, keep_base: bool = True
    ) -> LocalEngine:
        """Serve an in-memory fp32 model (tests, training evaluation).

        The model is copied (the caller's stays as it was), converted to ``config.precision``
        and ``config.adapter_path`` is merged, as :meth:`from_config` does.

        Args:
            model: A plain HF causal LM (merge a PEFT wrapper first).
            tokenizer: Its tokenizer.
            config: Engine config.
            keep_base: Keep a second fp32 copy so :meth:`swap_adapter` works later; an engine
                that never swaps (the promotion gate) saves that memory with False.

        Raises:
            ModelLoadError: The precision cannot convert an in-memory model, or the adapter
                does not load.
        """
        from local_models.quantization import get_backend, resolve_device

        device = resolve_device(config.device)
        backend = get_backend(config.precision, device=device)
        if backend.convert is None:
            raise ModelLoadError(f"precision {backend.name!r} needs loading from a model dir")
        base = copy.deepcopy(model).float().eval()
        serving = copy.deepcopy(base) if keep_base else base
        if config.adapter_path is not None:
            serving = _merge_adapter(serving, config.adapter_path, merge=backend.merges_adapter)
        serving = backend.convert(serving).eval()
        return cls(
            model=serving,
            tokenizer=tokenizer,
            config=config,
            device=device,
            base_factory=(lambda: copy.deepcopy(base)) if keep_base else None,
            convert=backend.convert,
            merge=backend.merges_adapter,
        )

    # ------------------------------------------------------------------ adapters
    def swap_adapter(self, path: str, *, version: str) -> None:
        """Serve a new LoRA adapter from the next batch on; in-flight batches finish unchanged.

        The merged model is built outside the lock, so serving continues meanwhile; a bad
        adapter raises and leaves the old one serving.

        Args:
            path: PEFT adapter directory (``adapter_config.json`` + safetensors weights).
            version: Label reported on results produced with it.

        Raises:
            ModelLoadError: The adapter dir is missing, corrupt or does not fit the model.
        """
        if self._base_factory is None or self._convert is None:
            raise ModelLoadError(
                "adapter swap needs a precision that can take adapters (fp32, bf16, int4, cpu int8) "
                "and an engine that kept its base weights (keep_base=True)"
            )
        merged = self._convert(_merge_adapter(self._base_factory(), path, merge=self._merge)).eval()
        answer_sets = read_answer_sets(path)
        with self._lock:  # model and its answer sets change together, between batches
            self._model = merged
            self.adapter_path = path
            self.adapter_version = version
            self.answer_sets = answer_sets
            self._prefixes.clear()  # prefix KV was computed by the old weights

    # ------------------------------------------------------------------ prompts
    @staticmethod
    def _collect_eos_ids(model: Any, tokenizer: Any) -> set[int]:
        ids: set[int] = set()
        if tokenizer.eos_token_id is not None:
            ids.add(int(tokenizer.eos_token_id))
        gen = getattr(model, "generation_config", None)
        eos = getattr(gen, "eos_token_id", None) if gen is not None else None
        if isinstance(eos, int):
            ids.add(eos)
        elif isinstance(eos, (list, tuple)):
            ids.update(int(e) for e in eos)
        im_end = tokenizer.convert_tokens_to_ids("<|im_end|>")
        if isinstance(im_end, int) and im_end != tokenizer.unk_token_id:
            ids.add(im_end)
        return ids

    def render_prompt(self, messages: Sequence[dict[str, Any]]) -> str:
        """Chat-template the messages exactly as training and the gate do
        (``local_models.prompt.render_chat``).

        Raises:
            InvalidRequest: Malformed messages.
        """
        return render_chat(self.tokenizer, messages)

    def _encode(self, messages: Sequence[dict[str, Any]]) -> list[int]:
        return list(
            self.tokenizer(self.render_prompt(messages), add_special_tokens=False).input_ids
        )

    def count_prompt_tokens(self, messages: Sequence[dict[str, Any]]) -> int:
        """Number of prompt tokens the model would see for these messages."""
        return len(self._encode(messages))

    # ------------------------------------------------------------------ generation
    def generate(
        self, requests: list[GenerationRequest], *, on_delta: DeltaCallback | None = None
    ) -> list[GenerationResult]:
        """Run one batch to completion (each request stops at its own stop/eos/max_tokens).

        Args:
            requests: The batch (any size; the batcher caps it at ``max_batch_size``).
            on_delta: Called with ``(index, text)`` as safe-to-show text appears.

        Returns:
            One result per request, in order.

        Raises:
            InvalidRequest: A prompt is malformed or longer than ``max_context_tokens``.
        """
        if not requests:
            return []
        encoded = [self._encode(r.messages) for r in requests]
        limit = self.config.max_context_tokens
        for i, ids in enumerate(encoded):
            if len(ids) >= limit:
                raise InvalidRequest(
                    f"request {i}: prompt is {len(ids)} tokens, the local context limit is "
                    f"{limit} (max_context_tokens)",
                    param="messages",
                )
        with self._lock:
            model, version = self._model, self.adapter_version
            start = time.perf_counter()
            rows = self._decode(model, requests, encoded, on_delta, self.answer_sets)
            elapsed = time.perf_counter() - start
        # The batch shared the machine: each request pays its token share of the wall time,
        # so a batch of 16 costs what it took, not 16x that.
        total = sum(row.prompt_len + len(row.ids) for row in rows) or 1
        return [
            GenerationResult(
                text=row.text,
                finish_reason=row.finish or "length",
                prompt_tokens=row.prompt_len,
                completion_tokens=len(row.ids),
                token_logprobs=row.logprobs,
                compute_seconds=elapsed * (row.prompt_len + len(row.ids)) / total,
                adapter_version=version,
            )
            for row in rows
        ]

    def _make_rows(
        self,
        requests: list[GenerationRequest],
        encoded: list[list[int]],
        answer_sets: AnswerSets,
    ) -> list[_Row]:
        import torch

        rows = []
        for i, (req, ids) in enumerate(zip(requests, encoded, strict=True)):
            row = _Row(
                i, req, len(ids), min(req.max_tokens, self.config.max_context_tokens - len(ids))
            )
            if req.temperature > 0:
                row.generator = torch.Generator(device="cpu")
                row.generator.manual_seed(
                    req.seed if req.seed is not None else int(time.time_ns() % 2**63)
                )
            allowed = req.allowed_answers
            if allowed is None and answer_sets:
                allowed = answer_sets.get(traffic_class(req.messages))
            if allowed is not None:
                row.cursor = self._tries.get(allowed).cursor()
            rows.append(row)
        return rows

    def _decode(
        self,
        model: Any,
        requests: list[GenerationRequest],
        encoded: list[list[int]],
        on_delta: DeltaCallback | None,
        answer_sets: AnswerSets,
    ) -> list[_Row]:
        import torch

        rows = self._make_rows(requests, encoded, answer_sets)
        dev = self.device
        shared = self._shared_prefix_len(encoded)
        tails = [ids[shared:] for ids in encoded]
        width = max(len(ids) for ids in tails)
        input_ids = torch.full((len(rows), width), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, ids in enumerate(tails):
            input_ids[i, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            mask[i, width - len(ids) :] = 1
        # Rows read [shared prefix][left padding][own tokens]: padding is masked out and
        # positions continue from the prefix, so each row sees exactly its own prompt.
        position = shared + (mask.cumsum(-1) - 1).clamp(min=0)
        if shared:
            mask = torch.cat([torch.ones((len(rows), shared), dtype=torch.long), mask], dim=1)
        input_ids, mask, position = input_ids.to(dev), mask.to(dev), position.to(dev)
        active = list(rows)
        with torch.inference_mode():
            cache = self._prefix_cache(model, tuple(encoded[0][:shared]), len(rows))
            out = model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=position,
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
            next_pos = position[:, -1:] + 1
            while True:
                logits = out.logits[:, -1, :].float()
                tokens = self._step(active, logits, on_delta)
                keep = [j for j, row in enumerate(active) if row.finish is None]
                if not keep:
                    break
                if len(keep) < len(active):
                    idx = torch.tensor(keep, dtype=torch.long, device=dev)
                    cache.batch_select_indices(idx)
                    mask, next_pos, tokens = mask[idx], next_pos[idx], tokens[idx]
                    active = [active[j] for j in keep]
                mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
                out = model(
                    input_ids=tokens.to(dev),
                    attention_mask=mask,
                    position_ids=next_pos,
                    past_key_values=cache,
                    use_cache=True,
                )
                next_pos = next_pos + 1
        return rows

    def _shared_prefix_len(self, encoded: list[list[int]]) -> int:
        """Tokens at the start of every prompt worth prefilling once, 0 when none.

        The common prefix is cut back to just after its last special token (a chat-turn
        boundary such as ``<|im_start|>``), so later batches with other user texts hit the
        same cached prefix; every row keeps at least one token of its own. Batches of one
        are prefilled whole (``benchmarks/prefix_cache.py``: the split was slower there).
        """
        if not self.config.prefix_cache or len(encoded) < 2:
            return 0  # a lone request: the split prefill measured slower than one pass
        first, n = encoded[0], min(len(ids) for ids in encoded) - 1
        common = 0
        while common < n and all(ids[common] == first[common] for ids in encoded):
            common += 1
        while common > 0 and first[common - 1] not in self._special_ids:
            common -= 1
        return common if common >= MIN_SHARED_PREFIX else 0

    def _prefix_cache(self, model: Any, prefix: tuple[int, ...], batch: int) -> Any:
        """A fresh KV cache holding ``prefix`` for ``batch`` rows (prefilled once, then kept)."""
        import torch
        from transformers import DynamicCache

        if not prefix:
            return DynamicCache()
        kept = self._prefixes.get(prefix)
        if kept is None:
            kept = DynamicCache()
            ids = torch.tensor([prefix], dtype=torch.long, device=self.device)
            model(input_ids=ids, past_key_values=kept, use_cache=True, logits_to_keep=1)
            self._prefixes[prefix] = kept
            while len(self._prefixes) > PREFIX_CACHE_ENTRIES:
                self._prefixes.popitem(last=False)
        self._prefixes.move_to_end(prefix)
        cache = copy.deepcopy(kept)
        if batch > 1:
            cache.batch_repeat_interleave(batch)
        return cache

    def _step(self, active: list[_Row], logits: Any, on_delta: DeltaCallback | None) -> Any:
        """Pick one token per active row, update text/stop state; returns (B, 1) tokens."""
        import torch

        logprobs = torch.log_softmax(logits, dim=-1)
        chosen = torch.argmax(logits, dim=-1).cpu()
        for j, row in enumerate(active):
            if row.cursor is not None:  # allowed tokens come from one place only
                chosen[j] = pick(logits[j], row.cursor.allowed(self._eos_ids))
            elif row.req.temperature > 0:
                chosen[j] = _sample(logits[j], row.req.temperature, row.req.top_p, row.generator)
        picked = logprobs.gather(1, chosen.to(logprobs.device).unsqueeze(1)).squeeze(1).tolist()
        chosen_list = chosen.tolist()
        for j, row in enumerate(active):
            self._advance(row, int(chosen_list[j]), float(picked[j]), on_delta)
        return chosen.unsqueeze(1)

    def _advance(
        self, row: _Row, token: int, logprob: float, on_delta: DeltaCallback | None
    ) -> None:
        row.ids.append(token)
        row.logprobs.append(logprob)
        if token in self._eos_ids:
            row.finish = "stop"
            self._flush(row, on_delta, final=True)
            return
        if row.cursor is not None:
            row.cursor.advance(token)
        text = self.tokenizer.decode(
            row.ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        row.text = text
        for stop in row.req.stop:
            # Only the tail can hold a new match: it must end in the latest token's text.
            at = text.find(stop, max(0, row.emitted - len(stop)))
            if at != -1:
                row.text = text[:at]
                row.finish = "stop"
                self._flush(row, on_delta, final=True)
                return
        if row.cursor is not None and row.cursor.finished:
            row.finish = "stop"
        elif len(row.ids) >= row.max_new:
            row.finish = "length"
        self._flush(row, on_delta, final=row.finish is not None)

    @staticmethod
    def _flush(row: _Row, on_delta: DeltaCallback | None, *, final: bool) -> None:
        """Emit text that can no longer change: hold back a possible stop-string prefix."""
        text = row.text
        if final:
            safe = len(text)
        else:
            hold = max((len(s) - 1 for s in row.req.stop), default=0)
            safe = len(text) - hold
            while safe > row.emitted and text[safe - 1] == "\ufffd":  # partial UTF-8 char
                safe -= 1
        if safe > row.emitted:
            piece = text[row.emitted : safe]
            row.emitted = safe
            if on_delta is not None:
                on_delta(row.index, piece)


def _sample(logits: Any, temperature: float, top_p: float, generator: Any) -> int:
    import torch

    probs = torch.softmax(logits / temperature, dim=-1)
    if top_p < 1.0:
        sorted_probs, order = torch.sort(probs, descending=True)
        cum = sorted_probs.cumsum(-1)
        cut = cum - sorted_probs > top_p  # drop tokens once the mass before them exceeds p
        sorted_probs[cut] = 0.0
        probs = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return int(torch.multinomial(probs.cpu(), 1, generator=generator).item())


def _merge_adapter(model: Any, adapter_path: str, *, merge: bool = True) -> Any:
    """Merge a PEFT LoRA adapter into an fp32 model (or, ``merge=False``, attach it unmerged
    for a precision that keeps it apart); a bad dir raises ModelLoadError."""
    path = Path(adapter_path)
    if not (path / "adapter_config.json").is_file():
        raise ModelLoadError(f"{path} is not a PEFT adapter dir (no adapter_config.json)")
    if not (path / "adapter_model.safetensors").is_file():
        raise ModelLoadError(
            f"{path} has no adapter_model.safetensors (pickled adapters are not loaded)"
        )
    try:
        from peft import PeftModel
    except ImportError as exc:  # pragma: no cover - peft is a core dependency
        raise ModelLoadError("LoRA adapters need peft: pip install peft") from exc
    try:
        peft_model = PeftModel.from_pretrained(model, str(path), is_trainable=False)
        return peft_model.merge_and_unload() if merge else peft_model
    except Exception as exc:  # noqa: BLE001 - any peft/safetensors failure = bad adapter
        raise ModelLoadError(f"could not load LoRA adapter {path}: {exc}") from exc
