"""Value objects for the local engine: its config, one generation request, one result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from local_models.errors import InvalidRequest

DEFAULT_MAX_TOKENS = 256


@dataclass(frozen=True)
class LocalModelConfig:
    """How to load and serve the local model.

    >>> cfg = LocalModelConfig(precision="int8", max_batch_size=32)
    >>> engine = LocalEngine.from_config(cfg)
    >>> engine.generate([GenerationRequest(messages=({"role": "user", "content": "hi"},))])
    """

    model: str = "smollm2-135m-instruct"
    """Model spec: the default name, a HF safetensors dir, or a .gguf file/dir."""
    precision: str = "auto"
    """``fp32``, ``bf16``, ``int8`` (cpu dynamic / cuda bitsandbytes), ``nf4`` (cuda), ``auto``."""
    device: str = "auto"
    """``cpu``, ``cuda`` or ``auto`` (cuda when available)."""
    adapter_path: str | None = None
    """PEFT LoRA adapter dir merged on top of the base model at load time."""
    adapter_version: str | None = None
    """Label reported on every result produced with that adapter."""
    max_batch_size: int = 16
    """Most requests decoding together in the running batch."""
    max_wait_ms: float = 5.0
    """When the model is idle, how long a first request waits for company (one prefill for a
    burst); with rows running, newcomers join at the next step without waiting."""
    max_queue: int = 256
    """Queued requests beyond this are rejected at once with ``Overloaded``."""
    max_queue_wait_s: float | None = None
    """A request whose expected wait for a batch slot (requests ahead / measured saturated
    throughput) is longer than this is rejected at once with ``Overloaded``; None = no bound."""
    max_context_tokens: int = 2048
    """Prompt plus completion tokens allowed per request."""
    threads: int | None = None
    """torch intra-op threads; None = number of CPUs available to this process."""
    prefix_cache: bool = True
    """Prefill a prompt prefix the whole batch shares (a system prompt, say) once and keep its
    KV cache for later batches, instead of recomputing it for every request."""

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if self.max_queue < 1:
            raise ValueError(f"max_queue must be >= 1, got {self.max_queue}")
        if self.max_queue_wait_s is not None and self.max_queue_wait_s <= 0:
            raise ValueError(f"max_queue_wait_s must be > 0 or None, got {self.max_queue_wait_s}")
        if self.max_context_tokens < 2:
            raise ValueError(f"max_context_tokens must be >= 2, got {self.max_context_tokens}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {self.threads}")
        if self.adapter_version is not None and self.adapter_path is None:
            raise ValueError("adapter_version given without adapter_path")


@dataclass(frozen=True)
class GenerationRequest:
    """One chat prompt plus its sampling parameters.

    >>> req = GenerationRequest(messages=({"role": "user", "content": "2+2?"},), max_tokens=8)
    >>> engine.generate([req])[0].text
    """

    messages: tuple[dict[str, Any], ...]
    """OpenAI-style ``{"role": ..., "content": str}`` messages."""
    max_tokens: int = DEFAULT_MAX_TOKENS
    """Most tokens to generate (clamped to the context window)."""
    temperature: float = 0.0
    """0 = greedy; > 0 samples from softmax(logits / temperature)."""
    top_p: float = 1.0
    """Nucleus sampling mass (only when temperature > 0)."""
    stop: tuple[str, ...] = ()
    """Strings that end generation; they may span tokens and are not returned."""
    seed: int | None = None
    """Seed for sampling; same seed + same prompt = same answer."""
    allowed_answers: tuple[str, ...] | None = None
    """Constrain the output to exactly one of these strings (trie-constrained greedy)."""
    background: bool = False
    """Throughput work (shadow labels): it waits its turn; ``max_queue_wait_s`` never refuses
    or sheds it (``max_queue`` still bounds the queue)."""

    def __post_init__(self) -> None:
        """Reject out-of-range parameters as ``InvalidRequest`` (a ValueError) before decoding."""
        if self.max_tokens < 1:
            raise InvalidRequest(
                f"max_tokens must be >= 1, got {self.max_tokens}", param="max_tokens"
            )
        if self.temperature < 0:
            raise InvalidRequest(
                f"temperature must be >= 0, got {self.temperature}", param="temperature"
            )
        if not 0 < self.top_p <= 1:
            raise InvalidRequest(f"top_p must be in (0, 1], got {self.top_p}", param="top_p")
        if any(not isinstance(s, str) or not s for s in self.stop):
            raise InvalidRequest(
                f"stop must hold non-empty strings, got {self.stop!r}", param="stop"
            )
        if self.allowed_answers is not None and (
            not self.allowed_answers or any(not a for a in self.allowed_answers)
        ):
            raise InvalidRequest(
                "allowed_answers must be a non-empty tuple of non-empty strings",
                param="allowed_answers",
            )


@dataclass
class GenerationResult:
    """What the engine produced for one request."""

    text: str
    finish_reason: str
    """``stop`` (eos or stop string) or ``length`` (max_tokens/context reached)."""
    prompt_tokens: int
    completion_tokens: int
    """Tokens generated, including an eos/stop-completing token."""
    token_logprobs: list[float] = field(default_factory=list)
    """log p(token) under the model (temperature 1) for each generated token."""
    token_ids: list[int] = field(default_factory=list)
    """The generated token ids, one per ``token_logprobs`` entry."""
    compute_seconds: float = 0.0
    """This request's share of its batch's wall-clock seconds (by prompt + generated tokens);
    the shares of one batch add up to its wall time, so local cost is not counted N times."""
    adapter_version: str | None = None
    closed_answer: bool = False
    """Decoding was constrained to a closed answer set (``allowed_answers`` or the adapter's
    answer set for the traffic class): the answer is one of a few labels, so its confidence is
    the label's probability (``router.scoring.confidence``)."""
    answer_check: float | None = None
    """The adapter's answer checker's probability of this label (``answer_checker.py``), for an
    answer constrained to the adapter's answer set; None without a checker."""
