"""The local inference engine: a HF causal LM, its adapters, its prompts, and batched decoding.

Why not ``model.generate``: it has no closed answer sets, per-row stop strings with streamed
safe text, a shared-prefix KV cache, requests joining a running batch, or adapter swaps between
steps. Its speed is not the reason: ``benchmarks/decode_paths.py`` measures the decode loop
against it; what makes the local tier fast is the ``int4`` precision (``quant_int4``) and
continuous batching (``running_batch``: prefill once per newcomer group, one token per step,
rows join and leave between steps). A prompt prefix every newcomer shares (the app's system
prompt) is prefilled once and its KV cache kept. A re-entrant lock around every model call makes
adapter swaps land between steps; a batch started on the old adapter finishes on it. Rows bound
to a closed answer set pick their tokens through ``local_models.constrained`` and prompts are
rendered by ``local_models.prompt``: the promotion gate decodes through this engine too, so it
measures what is served.
"""

from __future__ import annotations

import collections
import copy
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from local_models.answer_checker import AnswerChecker, read_answer_checker
from local_models.answer_sets import AnswerSets, read_answer_sets
from local_models.config import GenerationRequest, GenerationResult, LocalModelConfig
from local_models.constrained import TrieCache
from local_models.errors import InvalidRequest, ModelLoadError
from local_models.memory import trim_heap
from local_models.prompt import render_chat
from local_models.running_batch import RunningBatch
from local_models.threads import default_threads, release_thread_pool

DeltaCallback = Callable[[int, str], None]
"""``on_delta(index_in_batch, text)`` receives streamed text pieces."""

MIN_SHARED_PREFIX = 8
"""Shared prefixes shorter than this many tokens are not worth a separate prefill."""
PREFIX_CACHE_ENTRIES = 8
"""Prefix KV caches kept (least recently used dropped first); SmolLM2-135M in fp32 holds
~46 KB per prefix token."""


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
        self.model_lock = threading.RLock()
        """Held around every model call (re-entrant): adapter swaps and direct ``generate``
        calls never interleave with a running batch's step."""
        self.adapter_version: str | None = config.adapter_version
        self.adapter_path: str | None = config.adapter_path
        self.answer_sets: AnswerSets = read_answer_sets(config.adapter_path)
        """Closed answer sets per traffic class, from the adapter's metadata (may be empty)."""
        self.checker: AnswerChecker | None = read_answer_checker(config.adapter_path)
        """The adapter's answer checker (``answer_checker.py``), None without one."""
        self.tries = TrieCache(tokenizer)
        self._prefixes: collections.OrderedDict[tuple[int, ...], Any] = collections.OrderedDict()
        """Prefix token ids -> their KV cache (batch 1) under the model now serving."""
        self._special_ids = {int(t) for t in getattr(tokenizer, "all_special_ids", [])}
        torch.set_num_threads(config.threads or default_threads())
        if tokenizer.pad_token_id is None:
            tokenizer.pad_token = tokenizer.eos_token
        self.pad_id = int(tokenizer.pad_token_id)
        self.eos_ids = self._collect_eos_ids(model, tokenizer)

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
        trim_heap()  # what an earlier phase (training, say) freed, before this load adds to it
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
        release_thread_pool()  # the batcher's model thread should be the only torch team
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
        release_thread_pool()
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
        checker = read_answer_checker(path)
        release_thread_pool()  # this thread is done with torch; the model thread keeps its team
        with self.model_lock:  # model, answer sets and checker change together, between batches
            self._model = merged
            self.adapter_path = path
            self.adapter_version = version
            self.answer_sets = answer_sets
            self.checker = checker
            # prefix KV was computed by the old weights; a batch still on them keeps its own
            self._prefixes = collections.OrderedDict()

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
    def encode(self, req: GenerationRequest) -> list[int]:
        """The request's prompt token ids, checked against the context window.

        Raises:
            InvalidRequest: Malformed messages, or a prompt of ``max_context_tokens`` or more.
        """
        ids = self._encode(req.messages)
        limit = self.config.max_context_tokens
        if len(ids) >= limit:
            raise InvalidRequest(
                f"prompt is {len(ids)} tokens, the local context limit is {limit} "
                "(max_context_tokens)",
                param="messages",
            )
        return ids

    def open_batch(self) -> RunningBatch:
        """A running batch on the model serving now; requests join it between steps
        (``local_models.running_batch``: continuous batching)."""
        with self.model_lock:
            return RunningBatch(
                self,
                self._model,
                answer_sets=self.answer_sets,
                adapter_version=self.adapter_version,
                checker=self.checker,
                prefixes=self._prefixes,
            )

    @property
    def serving_model(self) -> Any:
        """The model new batches decode with (replaced by :meth:`swap_adapter`)."""
        return self._model

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
        encoded = []
        for i, req in enumerate(requests):
            try:
                encoded.append(self.encode(req))
            except InvalidRequest as exc:
                raise InvalidRequest(f"request {i}: {exc}", param=exc.param) from None
        callbacks = [
            None if on_delta is None else (lambda text, i=i: on_delta(i, text))
            for i in range(len(requests))
        ]
        with self.model_lock:  # one batch at a time on this model; swaps land between calls
            batch = self.open_batch()
            rows = batch.add(requests, encoded, on_delta=callbacks)
            while batch.rows:
                batch.step()
        return [batch.result(row) for row in rows]

    def shared_prefix_len(
        self, encoded: Sequence[list[int]], kept_prefixes: Mapping[tuple[int, ...], Any]
    ) -> int:
        """Tokens at the start of every prompt worth prefilling once, 0 when none.

        The common prefix is cut back to just after its last special token (a chat-turn
        boundary such as ``<|im_start|>``), so later batches with other user texts hit the
        same cached prefix; every row keeps at least one token of its own. A lone prompt uses
        the longest prefix already in ``kept_prefixes`` that it starts with: under continuous
        batching newcomers often arrive one at a time, and re-prefilling the app's system
        prompt for each stalled every running row for it.
        """
        if not self.config.prefix_cache or not encoded:
            return 0
        if len(encoded) == 1:
            ids = encoded[0]
            return max(
                (len(p) for p in kept_prefixes if len(p) < len(ids) and tuple(ids[: len(p)]) == p),
                default=0,
            )
        first, n = encoded[0], min(len(ids) for ids in encoded) - 1
        common = 0
        while common < n and all(ids[common] == first[common] for ids in encoded):
            common += 1
        while common > 0 and first[common - 1] not in self._special_ids:
            common -= 1
        return common if common >= MIN_SHARED_PREFIX else 0

    def prefix_cache(
        self, model: Any, prefix: tuple[int, ...], batch: int, kept_prefixes: Any
    ) -> Any:
        """A fresh KV cache holding ``prefix`` for ``batch`` rows (prefilled once, then kept
        in ``kept_prefixes``, the store of the model that computed it)."""
        import torch
        from transformers import DynamicCache

        if not prefix:
            return DynamicCache()
        kept = kept_prefixes.get(prefix)
        if kept is None:
            kept = DynamicCache()
            ids = torch.tensor([prefix], dtype=torch.long, device=self.device)
            model(input_ids=ids, past_key_values=kept, use_cache=True, logits_to_keep=1)
            kept_prefixes[prefix] = kept
            while len(kept_prefixes) > PREFIX_CACHE_ENTRIES:
                kept_prefixes.popitem(last=False)
        kept_prefixes.move_to_end(prefix)
        cache = copy.deepcopy(kept)
        if batch > 1:
            cache.batch_repeat_interleave(batch)
        return cache


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
