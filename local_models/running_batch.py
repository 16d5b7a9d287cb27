"""Continuous batching: one running decode batch that requests join and leave between steps.

vLLM's scheduler idea at the size of one CPU process. A newcomer group is prefilled on its own
(left-padded, one pass, only the last position's logits), picks its first token, and its KV
cache is spliced into the running one: both are left-padded to the same length and stacked on
the batch axis, padding masked out, each row keeping its own positions. Every step then decodes
one token for all running rows; a row that ends (eos, stop string, answer-set leaf, max_tokens,
or a caller that went away) leaves at once, and columns only padding now covers are cut off the
left. So a request never waits for a whole earlier generation (the old "wave"), only for the
step in progress. ``LocalEngine.generate`` is one batch opened, filled once and run dry; the
``DynamicBatcher`` keeps one open and feeds it. ``benchmarks/local_throughput.py`` measures it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from local_models.answer_checker import AnswerChecker, checker_text
from local_models.answer_sets import AnswerSets, traffic_class
from local_models.config import GenerationRequest, GenerationResult
from local_models.constrained import TrieCursor, pick

if TYPE_CHECKING:  # pragma: no cover
    from local_models.engine import LocalEngine

TextCallback = Callable[[str], None]


class Row:
    """Decode state of one request inside the running batch."""

    def __init__(
        self,
        req: GenerationRequest,
        prompt_len: int,
        max_new: int,
        *,
        tag: Any = None,
        on_delta: TextCallback | None = None,
    ) -> None:
        self.req = req
        self.prompt_len = prompt_len
        self.max_new = max_new
        self.tag = tag
        """Whatever the caller attached (the batcher's queue item)."""
        self.on_delta = on_delta
        self.ids: list[int] = []
        self.logprobs: list[float] = []
        self.text = ""
        self.emitted = 0
        self.finish: str | None = None
        self.compute_seconds = 0.0
        """This row's share of the wall time of every model call it took part in."""
        self.generator = None
        self.cursor: TrieCursor | None = None
        """Position in the row's answer trie when it is constrained (``constrained.py``)."""
        self.check_class: str | None = None
        """The traffic class whose adapter answer set constrains the row (then the adapter's
        answer checker, if any, scores the answer); None for a caller's own choices."""

    def result(
        self, adapter_version: str | None, checker: AnswerChecker | None = None
    ) -> GenerationResult:
        check = None
        if checker is not None and self.check_class is not None:
            text = checker_text(self.req.messages)
            check = checker.probability(self.check_class, text, self.text)
        return GenerationResult(
            text=self.text,
            finish_reason=self.finish or "length",
            prompt_tokens=self.prompt_len,
            completion_tokens=len(self.ids),
            token_logprobs=self.logprobs,
            token_ids=self.ids,
            compute_seconds=self.compute_seconds,
            adapter_version=adapter_version,
            closed_answer=self.cursor is not None,
            answer_check=check,
        )


class RunningBatch:
    """The rows decoding together under one model (one adapter version).

    >>> batch = engine.open_batch()
    >>> done = batch.add([req], [engine.encode(req)])    # prefill; may finish at once
    >>> while batch.rows: done += batch.step()           # newcomers may be added between steps
    """

    def __init__(
        self,
        engine: LocalEngine,
        model: Any,
        *,
        answer_sets: AnswerSets,
        adapter_version: str | None,
        checker: AnswerChecker | None = None,
        prefixes: Any,
    ) -> None:
        self.engine = engine
        self.model = model
        self.answer_sets = answer_sets
        self.checker = checker
        """The answer checker trained with this batch's adapter (``answer_checker.py``)."""
        self.adapter_version = adapter_version
        self._prefixes = prefixes
        self.rows: list[Row] = []
        """Running rows, in the order of the KV cache's batch axis."""
        self._cache: Any = None
        self._mask: Any = None
        self._next_pos: Any = None
        self._tokens: Any = None

    @property
    def serves_current_model(self) -> bool:
        """False once the engine swapped adapters: newcomers then wait for a fresh batch."""
        return self.model is self.engine.serving_model

    def result(self, row: Row) -> GenerationResult:
        """A finished row's result, labelled with this batch's adapter and checked by its
        answer checker."""
        return row.result(self.adapter_version, self.checker)

    # ------------------------------------------------------------------ joining
    def add(
        self,
        requests: Sequence[GenerationRequest],
        encoded: Sequence[list[int]],
        *,
        tags: Sequence[Any] | None = None,
        on_delta: Sequence[TextCallback | None] | None = None,
    ) -> list[Row]:
        """Prefill newcomers, pick their first token, and splice the unfinished ones in.

        Args:
            requests: The newcomers (already validated: prompts fit ``max_context_tokens``).
            encoded: Their prompt token ids (``LocalEngine.encode``).
            tags: One opaque value per request, kept on its row.
            on_delta: One text callback per request (or None).

        Returns:
            The newcomers' rows, in order (some may already be finished).
        """
        import torch

        if not requests:
            return []
        tags = tags if tags is not None else [None] * len(requests)
        callbacks = on_delta if on_delta is not None else [None] * len(requests)
        rows = [
            self._make_row(req, ids, tag, cb)
            for req, ids, tag, cb in zip(requests, encoded, tags, callbacks, strict=True)
        ]
        engine = self.engine
        shared = engine.shared_prefix_len(encoded, self._prefixes)
        tails = [ids[shared:] for ids in encoded]
        width = max(len(ids) for ids in tails)
        input_ids = torch.full((len(rows), width), engine.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, ids in enumerate(tails):
            input_ids[i, width - len(ids) :] = torch.tensor(ids, dtype=torch.long)
            mask[i, width - len(ids) :] = 1
        # Rows read [shared prefix][left padding][own tokens]: padding is masked out and
        # positions continue from the prefix, so each row sees exactly its own prompt.
        position = shared + (mask.cumsum(-1) - 1).clamp(min=0)
        if shared:
            mask = torch.cat([torch.ones((len(rows), shared), dtype=torch.long), mask], dim=1)
        dev = engine.device
        input_ids, mask, position = input_ids.to(dev), mask.to(dev), position.to(dev)
        start = time.perf_counter()
        with engine.model_lock, torch.inference_mode():
            cache = engine.prefix_cache(
                self.model, tuple(encoded[0][:shared]), len(rows), self._prefixes
            )
            out = self.model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=position,
                past_key_values=cache,
                use_cache=True,
                # An index tensor, not ``1``: HF slices ``hidden[:, -1:, :]`` for an int, a
                # strided view that makes the head's matmul copy its weight once per row (8 rows:
                # 450 MB copied, ~0.3 s); indexing yields a contiguous (rows, 1, hidden) input.
                logits_to_keep=torch.tensor([width - 1], device=dev),
            )
            tokens = self._pick(rows, out.logits[:, -1, :].float())
        _charge(rows, [len(t) for t in tails], time.perf_counter() - start)
        keep = [j for j, row in enumerate(rows) if row.finish is None]
        if keep:
            if len(keep) < len(rows):
                idx = torch.tensor(keep, dtype=torch.long, device=dev)
                cache.batch_select_indices(idx)
                mask, position, tokens = mask[idx], position[idx], tokens[idx]
            self._join([rows[j] for j in keep], cache, mask, position[:, -1:] + 1, tokens)
        return rows

    def _make_row(
        self, req: GenerationRequest, ids: list[int], tag: Any, on_delta: TextCallback | None
    ) -> Row:
        import torch

        limit = self.engine.config.max_context_tokens
        row = Row(req, len(ids), min(req.max_tokens, limit - len(ids)), tag=tag, on_delta=on_delta)
        if req.temperature > 0:
            row.generator = torch.Generator(device="cpu")
            row.generator.manual_seed(
                req.seed if req.seed is not None else int(time.time_ns() % 2**63)
            )
        allowed = req.allowed_answers
        if allowed is None and self.answer_sets:
            key = traffic_class(req.messages)
            allowed = self.answer_sets.get(key)
            row.check_class = key if allowed is not None else None
        if allowed is not None:
            row.cursor = self.engine.tries.get(allowed).cursor()
        return row

    def _join(self, rows: list[Row], cache: Any, mask: Any, next_pos: Any, tokens: Any) -> None:
        """Stack newcomers' KV cache and mask under the running rows', left-padding the
        shorter side (padding is masked, so no row sees another's tokens)."""
        import torch

        if not self.rows:
            self.rows, self._cache, self._mask = rows, cache, mask
            self._next_pos, self._tokens = next_pos, tokens
            return
        width = max(self._mask.shape[1], mask.shape[1])
        old_pad, new_pad = width - self._mask.shape[1], width - mask.shape[1]
        for old, new in zip(self._cache.layers, cache.layers, strict=True):
            old.keys = torch.cat([_left_pad(old.keys, old_pad), _left_pad(new.keys, new_pad)])
            old.values = torch.cat([_left_pad(old.values, old_pad), _left_pad(new.values, new_pad)])
        self._mask = torch.cat(
            [
                torch.nn.functional.pad(self._mask, (old_pad, 0)),
                torch.nn.functional.pad(mask, (new_pad, 0)),
            ]
        )
        self._next_pos = torch.cat([self._next_pos, next_pos])
        self._tokens = torch.cat([self._tokens, tokens])
        self.rows = self.rows + rows

    # ------------------------------------------------------------------ decoding
    def step(self) -> list[Row]:
        """Decode one token for every running row; returns the rows that finished."""
        import torch

        if not self.rows:
            return []
        rows = self.rows
        self._mask = torch.cat([self._mask, self._mask.new_ones((len(rows), 1))], dim=1)
        start = time.perf_counter()
        with self.engine.model_lock, torch.inference_mode():
            out = self.model(
                input_ids=self._tokens.to(self.engine.device),
                attention_mask=self._mask,
                position_ids=self._next_pos,
                past_key_values=self._cache,
                use_cache=True,
            )
            self._tokens = self._pick(rows, out.logits[:, -1, :].float())
        _charge(rows, [1] * len(rows), time.perf_counter() - start)
        self._next_pos = self._next_pos + 1
        done = [row for row in rows if row.finish is not None]
        if done:
            self._keep([j for j, row in enumerate(rows) if row.finish is None])
        return done

    def drop(self, rows: Sequence[Row]) -> None:
        """Take rows out before they finish (their caller went away)."""
        gone = {id(row) for row in rows}
        self._keep([j for j, row in enumerate(self.rows) if id(row) not in gone])

    def _keep(self, keep: list[int]) -> None:
        import torch

        if len(keep) == len(self.rows):
            return
        if not keep:
            self.rows, self._cache = [], None
            self._mask = self._next_pos = self._tokens = None
            return
        idx = torch.tensor(keep, dtype=torch.long, device=self.engine.device)
        self._cache.batch_select_indices(idx)
        self._mask, self._next_pos = self._mask[idx], self._next_pos[idx]
        self._tokens = self._tokens[idx]
        self.rows = [self.rows[j] for j in keep]
        # Columns that are padding for every row left (a long prompt's row finished): cut.
        lead = int(self._mask.any(0).to(torch.int8).argmax())
        if lead:
            self._mask = self._mask[:, lead:]
            for layer in self._cache.layers:
                layer.keys = layer.keys[:, :, lead:, :]
                layer.values = layer.values[:, :, lead:, :]

    def _pick(self, rows: list[Row], logits: Any) -> Any:
        """Pick one token per row, update text/stop state; returns (B, 1) tokens."""
        import torch

        engine = self.engine
        logprobs = torch.log_softmax(logits, dim=-1)
        chosen = torch.argmax(logits, dim=-1).cpu()
        for j, row in enumerate(rows):
            if row.cursor is not None:  # allowed tokens come from one place only
                chosen[j] = pick(logits[j], row.cursor.allowed(engine.eos_ids))
            elif row.req.temperature > 0:
                chosen[j] = _sample(logits[j], row.req.temperature, row.req.top_p, row.generator)
        picked = logprobs.gather(1, chosen.to(logprobs.device).unsqueeze(1)).squeeze(1).tolist()
        chosen_list = chosen.tolist()
        for j, row in enumerate(rows):
            self._advance(row, int(chosen_list[j]), float(picked[j]))
        return chosen.unsqueeze(1)

    def _advance(self, row: Row, token: int, logprob: float) -> None:
        row.ids.append(token)
        row.logprobs.append(logprob)
        if token in self.engine.eos_ids:
            row.finish = "stop"
            _flush(row, final=True)
            return
        if row.cursor is not None:
            row.cursor.advance(token)
        text = self.engine.tokenizer.decode(
            row.ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
        )
        row.text = text
        for stop in row.req.stop:
            # Only the tail can hold a new match: it must end in the latest token's text.
            at = text.find(stop, max(0, row.emitted - len(stop)))
            if at != -1:
                row.text = text[:at]
                row.finish = "stop"
                _flush(row, final=True)
                return
        if row.cursor is not None and row.cursor.finished:
            row.finish = "stop"
        elif len(row.ids) >= row.max_new:
            row.finish = "length"
        _flush(row, final=row.finish is not None)


def _charge(rows: list[Row], tokens: list[int], seconds: float) -> None:
    """Split one model call's wall time over its rows by the tokens each fed it, so a batch of
    16 costs what it took, not 16x that."""
    total = sum(tokens) or 1
    for row, n in zip(rows, tokens, strict=True):
        row.compute_seconds += seconds * n / total


def _left_pad(kv: Any, width: int) -> Any:
    """Zero-pad a (batch, heads, seq, dim) KV tensor by ``width`` positions on the left."""
    import torch

    return kv if width == 0 else torch.nn.functional.pad(kv, (0, 0, width, 0))


def _flush(row: Row, *, final: bool) -> None:
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
        if row.on_delta is not None:
            row.on_delta(piece)


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


__all__ = ["Row", "RunningBatch"]
