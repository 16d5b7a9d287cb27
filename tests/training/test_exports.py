from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import training


def test_all_names_are_exported() -> None:
    for name in training.__all__:
        assert hasattr(training, name), name
    public = {n for n in vars(training) if not n.startswith("_") and n[0].isupper()}
    assert public <= set(training.__all__)


def test_import_does_not_load_heavy_libraries() -> None:
    code = "import sys, training; print([m for m in ('torch','transformers','peft','litellm') if m in sys.modules])"
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert out.stdout.strip() == "[]"
