"""Distillation: turn cloud answers into a LoRA adapter for the local model, gated and versioned.

>>> from training import load_examples, filter_examples, time_split, LoraTrainingConfig
>>> train, heldout = time_split(filter_examples(load_examples("data.csv"))[0])
>>> res = train_lora("smollm2-135m-instruct", train, LoraTrainingConfig(), output_dir="out")

Nothing here imports torch, transformers or peft at import time. The adapter registry lives in
``local_models.registry`` (serving reads it, training writes it) and is re-exported here.
"""

from local_models.registry import AdapterInfo, AdapterRegistry
from training._errors import AdapterMetadataError, RegistryError, TrainingError
from training._model import prompt_messages
from training.config import LoraTrainingConfig, hardware_defaults
from training.dataset import (
    Example,
    FilterReport,
    examples_from_ledger,
    filter_examples,
    is_refusal,
    load_examples,
    time_split,
)
from training.evaluate import (
    EvalResult,
    answer_sets,
    closed_answer_set,
    evaluate,
    predict,
)
from training.lora import (
    DryRunEstimate,
    StepInfo,
    TrainResult,
    build_feature,
    dry_run,
    train_lora,
)
from training.promote import (
    ClassVerdict,
    DistillOutcome,
    GateDecision,
    distill_and_promote,
    gate,
    gate_by_class,
)

__all__ = [
    "AdapterInfo",
    "AdapterMetadataError",
    "AdapterRegistry",
    "ClassVerdict",
    "DistillOutcome",
    "DryRunEstimate",
    "EvalResult",
    "Example",
    "FilterReport",
    "GateDecision",
    "LoraTrainingConfig",
    "RegistryError",
    "StepInfo",
    "TrainResult",
    "TrainingError",
    "build_feature",
    "answer_sets",
    "closed_answer_set",
    "distill_and_promote",
    "dry_run",
    "evaluate",
    "examples_from_ledger",
    "filter_examples",
    "gate",
    "gate_by_class",
    "hardware_defaults",
    "is_refusal",
    "load_examples",
    "predict",
    "prompt_messages",
    "time_split",
    "train_lora",
]
