"""LoRA training settings as a frozen, self-validating value object (mechanics live in lora.py)."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

Precision = Literal["auto", "fp32", "bf16"]

DEFAULT_TARGET_MODULES: tuple[str, ...] = ("q_proj", "v_proj")
ALL_PROJECTIONS: tuple[str, ...] = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)


CPU_TOP_LAYERS = 15
"""Layers adapted for short label-style data on the CPU (half of SmolLM2-135M's 30)."""

CPU_SHORT_DATA_TOKENS = 300_000
"""Short label-style data on the CPU gets as many epochs (1 to ``CPU_SHORT_DATA_MAX_EPOCHS``)
as fit this many training tokens, ~14 minutes at the ~355 tok/s measured here with the
frozen-layer cache. Passes matter on many classes with few examples each: 1,600 Banking77
examples over all 77 intents agreed 73.2% after two epochs (453 s) and 81.3% after four (923 s);
4,500 agreed 86.7% after two against ~75% after one (``benchmarks/distill_banking77.py``)."""

CPU_SHORT_DATA_MAX_EPOCHS = 4.0
"""The most passes short data gets: a nightly set of ~20 examples per intent keeps learning up
to four (above), where the demo's 20 intents at ~37 each gained local share, not agreement,
from a third."""


@dataclass(frozen=True)
class LoraTrainingConfig:
    """How to fine-tune a LoRA adapter on teacher answers.

    >>> cfg = LoraTrainingConfig(epochs=2, lr=1e-3)
    >>> cfg.effective_batch_size
    16
    """

    r: int = 8
    """LoRA rank: adapter capacity. 8 is plenty for label-style answers."""
    alpha: int = 16
    """LoRA scaling numerator; the update is scaled by ``alpha / r``."""
    dropout: float = 0.05
    """Dropout on the LoRA input during training."""
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES
    """Linear layers that get adapters. More modules learn faster per step but cost time."""
    top_layers: int | None = None
    """Adapt only the top N transformer layers (None: all). The backward pass then stops at
    layer N from the top, and the layers below run without autograd: a step costs less."""
    frozen_cache: bool = True
    """With ``top_layers``: compute the frozen layers' output once per example and train on it
    (``training.lora.FrozenLayers``) instead of recomputing it every step of every epoch."""
    lr: float = 2e-4
    """Peak learning rate (AdamW) reached after warmup."""
    weight_decay: float = 0.0
    """AdamW weight decay on the adapter weights."""
    epochs: float = 1.0
    """Passes over the training set; fractions stop part-way through the last pass."""
    batch_size: int = 8
    """Sequences per forward pass; raise ``grad_accum`` rather than this to save memory."""
    grad_accum: int = 2
    """Micro-batches whose gradients are summed before one optimizer step."""
    max_seq_len: int = 256
    """Longer sequences are truncated from the left of the prompt; the answer is kept."""
    warmup_ratio: float = 0.05
    """Share of optimizer steps spent warming the learning rate up linearly from 0."""
    schedule: Literal["cosine", "linear", "constant"] = "cosine"
    """Learning-rate decay after warmup."""
    precision: Precision = "auto"
    """``auto``: bf16 on CUDA with bf16 support, else fp32. CPU bf16 autocast is opt-in
    (``"bf16"``) until a measurement on the target CPU shows it faster (``dry_run`` measures)."""
    gradient_checkpointing: bool = False
    """Recompute activations in the backward pass: less memory, ~30% slower."""
    qlora: bool = False
    """Load the base in 4-bit (bitsandbytes, CUDA only); training raises a clear error otherwise."""
    seed: int = 0
    """Seeds adapter init and batch order, so a resumed run replays the same batches."""
    system_prompt: str | None = None
    """System message added when a conversation has none. None: no system prompt at all (the
    template's injected default is dropped, as serving does: fewer tokens). Serving must use
    the same value; it is stored in the adapter's metadata."""
    checkpoint_every: int = 0
    """Save a resumable checkpoint every this many optimizer steps; 0 saves none."""
    length_grouped: bool = True
    """Batch sequences of similar length together so little compute is spent on padding."""
    num_threads: int | None = None
    """CPU threads for torch; None leaves torch's default."""
    extra: dict[str, Any] = field(default_factory=dict, compare=False)
    """Free-form notes carried into metadata (not used by training)."""

    def __post_init__(self) -> None:
        checks = [
            (self.r > 0, f"r must be > 0, got {self.r}"),
            (self.alpha > 0, f"alpha must be > 0, got {self.alpha}"),
            (0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout}"),
            (len(self.target_modules) > 0, "target_modules must not be empty"),
            (self.lr > 0, f"lr must be > 0, got {self.lr}"),
            (self.epochs > 0, f"epochs must be > 0, got {self.epochs}"),
            (self.batch_size > 0, f"batch_size must be > 0, got {self.batch_size}"),
            (self.grad_accum > 0, f"grad_accum must be > 0, got {self.grad_accum}"),
            (self.max_seq_len >= 8, f"max_seq_len must be >= 8, got {self.max_seq_len}"),
            (
                0.0 <= self.warmup_ratio < 1.0,
                f"warmup_ratio must be in [0, 1), got {self.warmup_ratio}",
            ),
            (
                self.schedule in ("cosine", "linear", "constant"),
                f"unknown schedule {self.schedule!r}",
            ),
            (self.precision in ("auto", "fp32", "bf16"), f"unknown precision {self.precision!r}"),
            (self.checkpoint_every >= 0, "checkpoint_every must be >= 0"),
            (
                self.top_layers is None or self.top_layers > 0,
                f"top_layers must be > 0 or None, got {self.top_layers}",
            ),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"LoraTrainingConfig: {msg}")
        if isinstance(self.target_modules, list):
            object.__setattr__(self, "target_modules", tuple(self.target_modules))

    @property
    def effective_batch_size(self) -> int:
        """Sequences per optimizer step."""
        return self.batch_size * self.grad_accum

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (round-trips through ``from_dict``)."""
        d = dataclasses.asdict(self)
        d["target_modules"] = list(self.target_modules)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoraTrainingConfig:
        """Build from ``to_dict`` output; unknown keys raise ``ValueError`` naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"LoraTrainingConfig: unknown fields {unknown}")
        d = dict(data)
        if "target_modules" in d:
            d["target_modules"] = tuple(d["target_modules"])
        return cls(**d)

    def describe(self) -> str:
        """One human-readable line per setting (for ``hybridgate distill --dry-run``)."""
        return "\n".join(
            f"{k:>22}: {json.dumps(v)}" for k, v in self.to_dict().items() if k != "extra"
        )


def _detect_device() -> tuple[str, float]:
    """(device, usable memory in GiB) without importing torch at module import time."""
    import torch

    if torch.cuda.is_available():
        free, _total = torch.cuda.mem_get_info()
        return "cuda", free / 2**30
    try:
        import os

        pages = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        return "cpu", pages / 2**30
    except (ValueError, OSError, AttributeError):
        return "cpu", 4.0


def _short_data_epochs(n_examples: int, avg_tokens: float, device: str) -> float:
    """As many epochs as fit the CPU's token budget, at most ``CPU_SHORT_DATA_MAX_EPOCHS``,
    never below one; two elsewhere."""
    if device != "cpu":
        return 2.0
    fit = CPU_SHORT_DATA_TOKENS / (n_examples * avg_tokens)
    return round(min(CPU_SHORT_DATA_MAX_EPOCHS, max(1.0, fit)), 2)


def hardware_defaults(
    n_examples: int,
    avg_tokens: float,
    *,
    device: str | None = None,
    memory_gib: float | None = None,
) -> LoraTrainingConfig:
    """Pick batch size, accumulation, rank and sequence length that fit this machine.

    Activation memory grows with batch x sequence; the CPU budget is kept small because large
    CPU batches thrash memory without raising throughput. Short label-style data gets more
    epochs and a higher learning rate (few steps per epoch).

    Args:
        n_examples: training examples available.
        avg_tokens: mean tokens per example (prompt + answer, after templating).
        device: ``"cpu"``/``"cuda"``; detected when None.
        memory_gib: usable memory; detected when None.

    Returns:
        A validated ``LoraTrainingConfig``.

    Raises:
        ValueError: ``n_examples`` < 1 or ``avg_tokens`` <= 0.
    """
    if n_examples < 1 or avg_tokens <= 0:
        raise ValueError(f"need n_examples >= 1 and avg_tokens > 0, got {n_examples}, {avg_tokens}")
    if device is None or memory_gib is None:
        d, m = _detect_device()
        device = device or d
        memory_gib = memory_gib if memory_gib is not None else m
    seq = int(min(1024, max(32, 2 ** (int(avg_tokens * 1.5) - 1).bit_length())))
    # Tokens per micro-batch. On the CPU, 512 (gradient accumulation keeps the effective batch
    # at 16): 320 demo examples trained in 58 s at 1.8 GB peak RSS, vs 64 s at 3.9 GB with 2048
    # (same loss) - activations, not weights, set the peak, and bigger matmuls did not pay.
    # Elsewhere ~2 GiB per 8k tokens on a 135M model is conservative.
    budget_tokens = 512 if device == "cpu" else int(max(2048, memory_gib * 4096))
    batch = int(max(1, min(64, budget_tokens // seq)))
    target_effective = 16
    accum = max(1, target_effective // batch)
    short = avg_tokens <= 64
    return LoraTrainingConfig(
        r=8 if device == "cpu" else 16,
        alpha=16 if device == "cpu" else 32,
        # Short label-style data: LoRA on every projection at lr 3e-3 (cosine) took Banking77
        # from 2.7% to 76.3% agreement in one epoch over 3,000 examples here
        # (benchmarks/distill_banking77.py); more epochs where they fit (CPU_SHORT_DATA_TOKENS).
        # On the CPU only the top layers are adapted: a step costs ~60% as much, so two epochs
        # over 750 examples took about the time of one epoch on all layers and agreed more often.
        target_modules=ALL_PROJECTIONS
        if short
        else ("q_proj", "k_proj", "v_proj", "o_proj")
        if device != "cpu"
        else DEFAULT_TARGET_MODULES,
        top_layers=CPU_TOP_LAYERS if short and device == "cpu" else None,
        lr=3e-3 if short else 2e-4,
        epochs=_short_data_epochs(n_examples, avg_tokens, device) if short else 1.0,
        batch_size=batch,
        grad_accum=accum,
        max_seq_len=seq,
        precision="auto",
        gradient_checkpointing=device == "cuda" and memory_gib < 4,
    )
