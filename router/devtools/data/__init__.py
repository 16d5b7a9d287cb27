"""Small public data slices shipped inside the package (see ``ATTRIBUTION.md``).

Tests, examples and the replay cloud read these instead of the full data sets, so they work
from a bare install with nothing beside the repository.

Example::

    from router.devtools.data import load_banking77
    rows = load_banking77()  # [{"text": ..., "category": ...}, ...]
"""

from __future__ import annotations

import csv
import io
import json
import random
from importlib import resources
from pathlib import Path
from typing import Any

DATA_FILES = ("banking77.csv", "gsm8k_gpt4.jsonl")
"""Data files shipped in this package (licences and ``ATTRIBUTION.md`` sit beside them)."""


def data_path(name: str) -> Path:
    """Return the path of one shipped data file.

    Args:
        name: A file name in this package, e.g. ``"banking77.csv"``.

    Returns:
        The file's path on disk.

    Raises:
        FileNotFoundError: ``name`` is not a shipped file; the message lists the ones that are.
    """
    path = Path(str(resources.files(__name__).joinpath(name)))
    if "/" in name or "\\" in name or not path.is_file():
        raise FileNotFoundError(
            f"no data file {name!r} in router.devtools.data; shipped files: {', '.join(DATA_FILES)}"
        )
    return path


def _read_text(name: str) -> str:
    return data_path(name).read_text(encoding="utf-8")


def load_banking77() -> list[dict[str, str]]:
    """Load the Banking77 slice: customer-support messages with their intent label.

    Returns:
        About 3,000 rows ``{"text": str, "category": str}`` covering all 77 intents.
    """
    reader = csv.DictReader(io.StringIO(_read_text("banking77.csv"), newline=""))
    return [{"text": row["text"], "category": row["category"]} for row in reader]


DEMO_INTENTS = 20
"""How many Banking77 intents the demo's support-bot traffic uses (all their rows ship)."""


def demo_intents(categories: list[str], *, n: int = DEMO_INTENTS, seed: int = 0) -> list[str]:
    """The intents the demo's traffic uses: an app's support bot handles a few, not all 77."""
    return sorted(random.Random(seed).sample(sorted(set(categories)), n))


def load_gsm8k() -> list[dict[str, Any]]:
    """Load the RouteLLM GSM8K slice: math questions with GPT-4's recorded answer.

    Returns:
        300 rows ``{"prompt": str, "answer": str, "weak_correct": bool,
        "strong_correct": bool}``; ``answer`` is gpt-4-1106-preview's response and the two
        flags say whether the strong (GPT-4) and weak (Mixtral-8x7B) model were correct.
    """
    return [json.loads(line) for line in _read_text("gsm8k_gpt4.jsonl").splitlines() if line]


__all__ = ["DATA_FILES", "data_path", "load_banking77", "load_gsm8k"]
