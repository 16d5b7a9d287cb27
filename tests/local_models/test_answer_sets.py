"""Answer sets stored beside an adapter: read strictly, keyed by traffic class."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from local_models.answer_sets import read_answer_sets, traffic_class
from local_models.errors import ModelLoadError


def test_engine_refuses_unparseable_answer_sets_instead_of_serving_unconstrained(
    tmp_path: Path,
) -> None:
    assert read_answer_sets(tmp_path) == {}  # a plain PEFT dir: no metadata, no constraint
    (tmp_path / "metadata.json").write_text(json.dumps({"answer_sets": {"": ["yes", "no"]}}))
    assert read_answer_sets(tmp_path) == {"": ("yes", "no")}
    (tmp_path / "metadata.json").write_text('{"answer_sets": ')
    with pytest.raises(ModelLoadError, match="metadata.json: broken adapter metadata"):
        read_answer_sets(tmp_path)


def test_traffic_class_is_the_system_prompt() -> None:
    system = {"role": "system", "content": "  Label it. "}
    assert traffic_class([system, {"role": "user", "content": "x"}]) == "Label it."
    assert traffic_class([{"role": "user", "content": "x"}]) == ""
