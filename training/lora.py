"""LoRA supervised fine-tuning on teacher answers: completion-only loss, little padding, resumable.

Sequences are left-padded and batched by similar length, so padding waste is small and the
answer tokens sit at the end of every row: the LM head is evaluated only on the last
``max answer length + 1`` positions instead of the whole sequence (the head is ~20% of a
135M model's compute). Checkpoints hold the adapter and AdamW moments as safetensors plus
scalars as JSON; nothing is pickled.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from training._errors import TrainingError
from training._model import encode_answer, encode_prompt, load_trainable
from training.config import LoraTrainingConfig
from training.dataset import Example

IGNORE_INDEX = -100
CHECKPOINT_DIR = "checkpoint"
META_FILE = "training_meta.json"


@dataclass(frozen=True)
class StepInfo:
    """Progress after one optimizer step, handed to callbacks."""

    step: int
    total_steps: int
    loss: float
    lr: float
    tokens: int
    elapsed_s: float


@dataclass(frozen=True)
class TrainResult:
    """What a finished run produced.

    >>> res = train_lora("smollm2-135m-instruct", train, cfg, output_dir="out")
    >>> res.adapter_dir, round(res.tokens_per_s)
    (PosixPath('out'), 140)
    """

    adapter_dir: Path
    train_seconds: float
    tokens: int
    """Non-padding tokens processed (all epochs)."""
    tokens_per_s: float
    final_loss: float
    """Mean answer-token loss over the last optimizer steps (EMA)."""
    steps: int
    resumed_from_step: int = 0


@dataclass(frozen=True)
class DryRunEstimate:
    """Predicted cost of a run, from a short measurement on this machine."""

    total_tokens: int
    tokens_per_s: float
    est_seconds: float
    est_cost_usd: float

    def __str__(self) -> str:
        return (
            f"{self.total_tokens} tokens at {self.tokens_per_s:.0f} tok/s: "
            f"~{self.est_seconds / 60:.1f} min, ~${self.est_cost_usd:.4f}"
        )


@dataclass(frozen=True)
class Feature:
    """One tokenized training sequence: prompt ids then answer ids; labels mask the prompt."""

    input_ids: list[int]
    labels: list[int]

    @property
    def answer_len(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE_INDEX)


def build_feature(tokenizer: Any, example: Example, *, config: LoraTrainingConfig) -> Feature:
    """Tokenize an example with the chat template; only the answer (and end token) is learned.

    Over-long sequences lose prompt tokens from the left so the answer always survives.
    """
    prompt = encode_prompt(tokenizer, example.messages, system_prompt=config.system_prompt)
    answer = encode_answer(tokenizer, example.answer)[: config.max_seq_len - 1]
    room = config.max_seq_len - len(answer)
    if len(prompt) > room:
        prompt = prompt[len(prompt) - room :]
    return Feature(input_ids=prompt + answer, labels=[IGNORE_INDEX] * len(prompt) + answer)


def length_grouped_batches(
    lengths: Sequence[int], *, batch_size: int, seed: int, grouped: bool = True
) -> list[list[int]]:
    """Shuffle, then sort within windows of 50 batches by length, then shuffle batch order.

    Rows in a batch have similar lengths (little padding) while batches stay in random order.
    """
    rng = random.Random(seed)
    idx = list(range(len(lengths)))
    rng.shuffle(idx)
    if grouped:
        window = batch_size * 50
        idx = [
            i
            for start in range(0, len(idx), window)
            for i in sorted(idx[start : start + window], key=lambda j: lengths[j])
        ]
    batches = [idx[i : i + batch_size] for i in range(0, len(idx), batch_size)]
    rng.shuffle(batches)
    return batches


def collate_left(features: Sequence[Feature], *, pad_id: int) -> dict[str, Any]:
    """Left-pad a batch; returns tensors plus ``keep``, the trailing positions that need logits."""
    import torch

    width = max(len(f.input_ids) for f in features)
    ids = torch.full((len(features), width), pad_id, dtype=torch.long)
    labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(features), width), dtype=torch.long)
    for row, f in enumerate(features):
        n = len(f.input_ids)
        ids[row, width - n :] = torch.tensor(f.input_ids)
        labels[row, width - n :] = torch.tensor(f.labels)
        mask[row, width - n :] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    keep = min(width, max(f.answer_len for f in features) + 1)
    return {
        "input_ids": ids,
        "attention_mask": mask,
        "position_ids": pos,
        "labels": labels,
        "keep": keep,
    }


def answer_loss(model: Any, batch: dict[str, Any], *, reduction: str = "mean") -> Any:
    """Cross-entropy on answer tokens only.

    Only the last ``batch["keep"]`` positions get logits (the answers live there), which saves
    the vocabulary projection over the prompt. Labels are ``IGNORE_INDEX`` outside answers.
    With ``batch["inputs_embeds"]`` (the frozen layers' output, ``FrozenLayers``) only the
    layers ``model`` runs now see the batch.
    """
    import torch.nn.functional as F

    keep = batch["keep"]
    device = model.device
    tokens = (
        {"inputs_embeds": batch["inputs_embeds"].to(device)}
        if "inputs_embeds" in batch
        else {"input_ids": batch["input_ids"].to(device)}
    )
    out = model(
        **tokens,
        attention_mask=batch["attention_mask"].to(device),
        position_ids=batch["position_ids"].to(device),
        logits_to_keep=keep,
        use_cache=False,
    )
    width = batch["input_ids"].shape[1]
    targets = batch["labels"][:, width - keep + 1 :].to(device)
    logits = out.logits[:, :-1, :].float()
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]),
        targets.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction=reduction,
    )


FROZEN_STORE_HALF = True
"""Keep the frozen layers' output in float16 (half the memory; the top layers still compute in
the training precision). False: float32, bit-for-bit the recomputed values."""


class FrozenLayers:
    """The output of the layers LoRA leaves frozen, computed once per training example.

    With ``top_layers`` set, the bottom layers carry no adapter: their output for an example
    never changes while training, yet every step of every epoch would recompute it. Here it is
    computed once (inference, batched) and each step runs only the trained top layers on it:
    the same arithmetic on the same values, up to float16 storage (a test checks the loss).
    Memory: about ``tokens x hidden x 2`` bytes (4,500 Banking77 examples: ~0.4 GB).
    """

    def __init__(self, peft_model: Any, frozen: int) -> None:
        self.model = peft_model
        self.frozen = frozen
        self.inner = peft_model.get_base_model().model  # the decoder: .layers, .norm
        self.states: list[Any] = []

    def fill(self, features: Sequence[Feature], *, pad_id: int, batch_size: int) -> None:
        """Run the frozen layers over every feature (left-padded batches, no gradients)."""
        import torch

        layers, norm = self.inner.layers, self.inner.norm
        self.inner.layers = torch.nn.ModuleList(list(layers)[: self.frozen])
        self.inner.norm = torch.nn.Identity()  # the raw output of the last frozen layer
        device = self.model.device
        try:
            with torch.no_grad():
                for i in range(0, len(features), batch_size):
                    rows = features[i : i + batch_size]
                    batch = collate_left(rows, pad_id=pad_id)
                    out = self.inner(
                        input_ids=batch["input_ids"].to(device),
                        attention_mask=batch["attention_mask"].to(device),
                        position_ids=batch["position_ids"].to(device),
                        use_cache=False,
                    ).last_hidden_state
                    width = out.shape[1]
                    for row, f in enumerate(rows):
                        state = out[row, width - len(f.input_ids) :].float().cpu()
                        fits = bool(state.abs().max() < 60_000)  # float16's range
                        half = FROZEN_STORE_HALF and fits
                        self.states.append(state.half() if half else state)
        finally:
            self.inner.layers, self.inner.norm = layers, norm

    def batch(self, indices: Sequence[int], rows: Sequence[Feature], *, pad_id: int) -> dict:
        """``collate_left`` plus ``inputs_embeds``: the frozen output, left-padded with zeros
        (masked out, as the pad tokens are)."""
        import torch

        batch = collate_left(rows, pad_id=pad_id)
        width = batch["input_ids"].shape[1]
        hidden = self.states[indices[0]].shape[-1]
        embeds = torch.zeros((len(rows), width, hidden), dtype=torch.float32)
        for row, i in enumerate(indices):
            state = self.states[i]
            embeds[row, width - state.shape[0] :] = state.float()
        batch["inputs_embeds"] = embeds
        return batch

    @contextlib.contextmanager
    def top_only(self) -> Iterator[None]:
        """Run only the trained layers; module names are back before anything is saved."""
        import torch

        layers = self.inner.layers
        self.inner.layers = torch.nn.ModuleList(list(layers)[self.frozen :])
        try:
            yield
        finally:
            self.inner.layers = layers


def frozen_layer_count(model: Any, config: LoraTrainingConfig) -> int:
    """Bottom layers no adapter touches (0 without ``top_layers`` or with checkpointing)."""
    if config.top_layers is None or config.gradient_checkpointing:
        return 0
    return max(0, int(model.config.num_hidden_layers) - config.top_layers)


def _lr_lambda(config: LoraTrainingConfig, total_steps: int) -> Callable[[int], float]:
    warmup = int(total_steps * config.warmup_ratio)

    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        if config.schedule == "constant":
            return 1.0
        progress = (step - warmup) / max(1, total_steps - warmup)
        if config.schedule == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))

    return f


def _resolve_precision(config: LoraTrainingConfig, device: str) -> str:
    if config.precision != "auto":
        return config.precision
    import torch

    if device == "cuda" and torch.cuda.is_bf16_supported():
        return "bf16"
    return "fp32"


def _check_qlora(config: LoraTrainingConfig) -> None:
    if not config.qlora:
        return
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        raise TrainingError("qlora=True needs a CUDA GPU; set qlora=False to train on CPU")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise TrainingError("qlora=True needs bitsandbytes: pip install 'hybridgate[cuda]'")


def _load_for_training(
    base: Any, tokenizer: Any, config: LoraTrainingConfig
) -> tuple[Any, Any, Path | None]:
    if config.qlora and isinstance(base, str | Path):
        import torch
        from peft import prepare_model_for_kbit_training
        from transformers import AutoModelForCausalLM, AutoTokenizer, BitsAndBytesConfig

        from training._model import resolve_base

        path = resolve_base(str(base))
        quant = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
        )
        model = AutoModelForCausalLM.from_pretrained(
            path, quantization_config=quant, device_map="cuda"
        )
        model = prepare_model_for_kbit_training(model)
        tok = tokenizer or AutoTokenizer.from_pretrained(path)
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        return model, tok, path
    return load_trainable(base, tokenizer)


def _peft_wrap(model: Any, config: LoraTrainingConfig) -> Any:
    from peft import LoraConfig, get_peft_model

    layers = None
    if config.top_layers is not None:
        n = int(model.config.num_hidden_layers)
        layers = list(range(max(0, n - config.top_layers), n))
    lora = LoraConfig(
        r=config.r,
        lora_alpha=config.alpha,
        lora_dropout=config.dropout,
        target_modules=list(config.target_modules),
        layers_to_transform=layers,
        task_type="CAUSAL_LM",
    )
    try:
        with warnings.catch_warnings():  # peft asks a deprecated transformers property
            warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
            peft_model = get_peft_model(model, lora)
    except ValueError as exc:
        raise TrainingError(f"cannot attach LoRA to {list(config.target_modules)}: {exc}") from exc
    if config.gradient_checkpointing:
        peft_model.gradient_checkpointing_enable()
        peft_model.enable_input_require_grads()
    return peft_model


def _save_checkpoint(ckpt: Path, peft_model: Any, optimizer: Any, state: dict[str, Any]) -> None:
    """Adapter + AdamW moments as safetensors, counters as JSON; written to a temp dir first."""
    import shutil

    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    tmp = ckpt.with_name(ckpt.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    adapter = {
        k: v.detach().contiguous().cpu() for k, v in get_peft_model_state_dict(peft_model).items()
    }
    save_file(adapter, str(tmp / "adapter.safetensors"))
    tensors: dict[str, Any] = {}
    steps: dict[str, float] = {}
    params = [p for g in optimizer.param_groups for p in g["params"]]
    for i, p in enumerate(params):
        st = optimizer.state.get(p)
        if not st:
            continue
        tensors[f"{i}.exp_avg"] = st["exp_avg"].contiguous().cpu()
        tensors[f"{i}.exp_avg_sq"] = st["exp_avg_sq"].contiguous().cpu()
        steps[str(i)] = float(st["step"])
    if tensors:
        save_file(tensors, str(tmp / "optimizer.safetensors"))
    (tmp / "state.json").write_text(json.dumps({**state, "adam_steps": steps}))
    if ckpt.exists():
        shutil.rmtree(ckpt)
    os.replace(tmp, ckpt)


def _load_checkpoint(ckpt: Path, peft_model: Any, optimizer: Any) -> dict[str, Any]:
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = json.loads((ckpt / "state.json").read_text())
    set_peft_model_state_dict(peft_model, load_file(str(ckpt / "adapter.safetensors")))
    opt_file = ckpt / "optimizer.safetensors"
    if opt_file.exists():
        tensors = load_file(str(opt_file))
        params = [p for g in optimizer.param_groups for p in g["params"]]
        for key, step in state["adam_steps"].items():
            p = params[int(key)]
            optimizer.state[p] = {
                "step": torch.tensor(step),
                "exp_avg": tensors[f"{key}.exp_avg"].to(p.device),
                "exp_avg_sq": tensors[f"{key}.exp_avg_sq"].to(p.device),
            }
    return state


def _progress_bar(enabled: bool, total: int) -> Any:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    prog = Progress(
        TextColumn("[bold]LoRA"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}  {task.fields[tps]:.0f} tok/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        disable=not enabled,
    )
    task = prog.add_task("train", total=total, loss=float("nan"), tps=0.0)
    return prog, task


def train_lora(
    base: Any,
    train_examples: Sequence[Example],
    config: LoraTrainingConfig,
    *,
    output_dir: str | Path,
    tokenizer: Any = None,
    progress: bool = True,
    callbacks: Sequence[Callable[[StepInfo], None]] = (),
    resume: bool = True,
) -> TrainResult:
    """Fine-tune a LoRA adapter so the base model answers like the teacher.

    Args:
        base: model spec (``"smollm2-135m-instruct"``, a HF dir) or a loaded model.
        train_examples: the training set (already filtered and time-split).
        config: hyper-parameters.
        output_dir: where the adapter (PEFT files) and ``training_meta.json`` are written; a
            ``checkpoint/`` subdir holds resumable state while training runs.
        tokenizer: needed when ``base`` is a model object.
        progress: show a rich progress bar with loss, tokens/s and ETA.
        callbacks: called after every optimizer step; an exception stops training and
            propagates (the adapter in ``output_dir`` is then not written).
        resume: continue from ``output_dir/checkpoint`` when present (same data and config).

    Returns:
        A ``TrainResult``.

    Raises:
        ValueError: no training examples.
        TrainingError: QLoRA requested without CUDA/bitsandbytes, or bad target modules.
    """
    import torch

    if not train_examples:
        raise ValueError("train_lora needs at least one training example")
    _check_qlora(config)
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(config.seed)
    model, tok, base_dir = _load_for_training(base, tokenizer, config)
    device = "cuda" if str(model.device).startswith("cuda") else "cpu"
    precision = _resolve_precision(config, device)
    peft_model = _peft_wrap(model, config)
    peft_model.train()

    features = [build_feature(tok, ex, config=config) for ex in train_examples]
    lengths = [len(f.input_ids) for f in features]
    frozen = None
    if config.frozen_cache and frozen_layer_count(model, config):
        frozen = FrozenLayers(peft_model, frozen_layer_count(model, config))
        bf16 = precision == "bf16"
        with torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=bf16):
            frozen.fill(features, pad_id=tok.pad_token_id, batch_size=max(config.batch_size, 32))
    per_epoch = math.ceil(len(features) / config.batch_size)
    total_micro = max(1, math.ceil(per_epoch * config.epochs))
    total_steps = math.ceil(total_micro / config.grad_accum)

    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config, total_steps))

    ckpt = out / CHECKPOINT_DIR
    state = {"micro": 0, "step": 0, "tokens": 0, "seconds": 0.0, "loss_ema": None}
    if resume and (ckpt / "state.json").exists():
        state.update(_load_checkpoint(ckpt, peft_model, optimizer))
        with warnings.catch_warnings():  # replaying the schedule, not skipping a step
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(state["step"]):
                scheduler.step()
    resumed_from = int(state["step"])

    pad_id = tok.pad_token_id
    autocast = torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=precision == "bf16")
    prog, task = _progress_bar(progress, total_steps)
    prog.update(task, completed=state["step"])
    t0 = time.perf_counter() - float(state["seconds"])
    micro, step, tokens = int(state["micro"]), int(state["step"]), int(state["tokens"])
    loss_ema = state["loss_ema"]
    acc_loss, acc_n = 0.0, 0
    epoch_batches: dict[int, list[list[int]]] = {}
    with prog:
        while micro < total_micro:
            epoch, within = divmod(micro, per_epoch)
            if epoch not in epoch_batches:
                epoch_batches = {
                    epoch: length_grouped_batches(
                        lengths,
                        batch_size=config.batch_size,
                        seed=config.seed * 1_000_003 + epoch,
                        grouped=config.length_grouped,
                    )
                }
            indices = epoch_batches[epoch][within]
            rows = [features[i] for i in indices]
            if frozen is not None:
                batch = frozen.batch(indices, rows, pad_id=pad_id)
            else:
                batch = collate_left(rows, pad_id=pad_id)
            batch = {k: v.to(model.device) if hasattr(v, "to") else v for k, v in batch.items()}
            top = frozen.top_only() if frozen is not None else contextlib.nullcontext()
            with autocast, top:
                loss = answer_loss(peft_model, batch)
            (loss / config.grad_accum).backward()
            acc_loss += float(loss.detach())
            acc_n += 1
            tokens += int(batch["attention_mask"].sum())
            micro += 1
            if micro % config.grad_accum == 0 or micro == total_micro:
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                mean = acc_loss / acc_n
                loss_ema = mean if loss_ema is None else 0.9 * loss_ema + 0.1 * mean
                acc_loss, acc_n = 0.0, 0
                elapsed = time.perf_counter() - t0
                prog.update(task, completed=step, loss=loss_ema, tps=tokens / max(elapsed, 1e-9))
                info = StepInfo(
                    step, total_steps, loss_ema, scheduler.get_last_lr()[0], tokens, elapsed
                )
                for cb in callbacks:
                    cb(info)
                if (
                    config.checkpoint_every
                    and step % config.checkpoint_every == 0
                    and micro < total_micro
                ):
                    _save_checkpoint(
                        ckpt,
                        peft_model,
                        optimizer,
                        {
                            "micro": micro,
                            "step": step,
                            "tokens": tokens,
                            "seconds": elapsed,
                            "loss_ema": loss_ema,
                        },
                    )
    seconds = time.perf_counter() - t0
    peft_model.save_pretrained(str(out), safe_serialization=True)
    meta = {
        "config": config.to_dict(),
        "n_train": len(features),
        "steps": step,
        "tokens": tokens,
        "train_seconds": seconds,
        "final_loss": loss_ema,
        "precision": precision,
        "base_model_dir": str(base_dir) if base_dir else None,
        "min_ts": min(e.ts for e in train_examples),
        "max_ts": max(e.ts for e in train_examples),
    }
    (out / META_FILE).write_text(json.dumps(meta, indent=2))
    if ckpt.exists():
        import shutil

        shutil.rmtree(ckpt)
    return TrainResult(
        adapter_dir=out,
        train_seconds=seconds,
        tokens=tokens,
        tokens_per_s=tokens / max(seconds, 1e-9),
        final_loss=float(loss_ema if loss_ema is not None else float("nan")),
        steps=step,
        resumed_from_step=resumed_from,
    )


def dry_run(
    base: Any,
    train_examples: Sequence[Example],
    config: LoraTrainingConfig,
    *,
    tokenizer: Any = None,
    measure_batches: int = 3,
    usd_per_hour: float = 0.0,
) -> DryRunEstimate:
    """Estimate time and cost from a few measured training steps (with the frozen-layer cache
    when training would use it: its one-time fill timed apart from the steps).

    Args:
        base: model spec or loaded model (a loaded model is left without adapters).
        train_examples: the planned training set.
        config: the planned configuration.
        tokenizer: needed when ``base`` is a model object.
        measure_batches: micro-batches to time (the first is a warm-up and not counted).
        usd_per_hour: machine price, for the cost figure.

    Returns:
        A ``DryRunEstimate``.

    Raises:
        ValueError: no examples or ``measure_batches`` < 2.
    """

    if not train_examples:
        raise ValueError("dry_run needs at least one training example")
    if measure_batches < 2:
        raise ValueError("measure_batches must be >= 2 (one warm-up + one timed)")
    _check_qlora(config)
    model, tok, _ = _load_for_training(base, tokenizer, config)
    peft_model = _peft_wrap(model, config)
    peft_model.train()
    features = [build_feature(tok, ex, config=config) for ex in train_examples]
    lengths = [len(f.input_ids) for f in features]
    total_tokens = int(sum(lengths) * config.epochs)
    batches = length_grouped_batches(lengths, batch_size=config.batch_size, seed=config.seed)
    frozen = None
    if config.frozen_cache and frozen_layer_count(model, config):
        frozen = FrozenLayers(peft_model, frozen_layer_count(model, config))
    timed_tokens, timed_s, fill_s = 0, 0.0, 0.0
    for i, b in enumerate(batches[:measure_batches]):
        rows = [features[j] for j in b]
        t = time.perf_counter()
        if frozen is not None:  # what training does: fill once, then step on the top layers
            frozen.states = []
            frozen.fill(rows, pad_id=tok.pad_token_id, batch_size=len(rows))
            filled = time.perf_counter()
            batch = frozen.batch(list(range(len(rows))), rows, pad_id=tok.pad_token_id)
            with frozen.top_only():
                answer_loss(peft_model, batch).backward()
        else:
            filled = t
            batch = collate_left(rows, pad_id=tok.pad_token_id)
            answer_loss(peft_model, batch).backward()
        peft_model.zero_grad(set_to_none=True)
        if i:
            fill_s += filled - t
            timed_s += time.perf_counter() - filled
            timed_tokens += int(batch["attention_mask"].sum())
    if not isinstance(base, str | Path):
        peft_model.unload()
    from router.ledger.pricing import local_cost  # the one local-cost formula

    if not timed_tokens:
        return DryRunEstimate(total_tokens, 0.0, float("inf"), float("inf"))
    # the fill runs once per example; the steps once per epoch
    est = (fill_s * sum(lengths) + timed_s * total_tokens) / timed_tokens
    tps = total_tokens / max(est, 1e-9)
    return DryRunEstimate(total_tokens, tps, est, local_cost(est, usd_per_hour))
