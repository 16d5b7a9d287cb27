"""``hybridgate simulate``: reading a team's traffic file, slicing it into nights, and (real
model) the whole loop on it."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from router.devtools.simulate import load_traffic, split_phases


def test_csv_and_jsonl_traffic_become_requests(tmp_path):
    csv_path = tmp_path / "t.csv"
    csv_path.write_text(
        "prompt,system,reference,class\nwhere is my card?,Reply with the intent.,card_arrival,bot\n"
        "hi,,hello there,\n",
        encoding="utf-8",
    )
    rows = load_traffic(csv_path)
    assert rows[0]["messages"] == [
        {"role": "system", "content": "Reply with the intent."},
        {"role": "user", "content": "where is my card?"},
    ]
    assert rows[0]["teacher"] == "card_arrival" and rows[0]["class"] == "bot"
    assert rows[1]["messages"] == [{"role": "user", "content": "hi"}]
    assert rows[1]["max_tokens"] >= 16  # sized for the reference when not given

    jsonl = tmp_path / "t.jsonl"
    msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}]
    jsonl.write_text(
        json.dumps({"messages": msgs, "answer": "a", "max_tokens": 5}) + "\n\n", encoding="utf-8"
    )
    (row,) = load_traffic(jsonl)
    assert row["messages"] == msgs and row["teacher"] == "a" and row["max_tokens"] == 5


@pytest.mark.parametrize(
    ("text", "match"),
    [
        (
            "prompt,reference\nhi,\n",
            r"row 2: no reference answer; give one of the columns reference",
        ),
        ("reference\nx\n", r"row 2: no conversation; give messages or one of the columns prompt"),
        ("prompt,reference,max_tokens\nhi,x,lots\n", r"row 2: max_tokens must be an integer"),
        ("prompt,reference\n", r"no requests in the file"),
    ],
)
def test_bad_traffic_names_the_file_row_and_column(tmp_path, text, match):
    path = tmp_path / "bad.csv"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=match):
        load_traffic(path)


def test_bad_messages_in_jsonl_are_refused(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"messages": [{"role": "assistant", "content": "x"}],
                                "reference": "y"}) + "\n", encoding="utf-8")  # fmt: skip
    with pytest.raises(ValueError, match="line 1: messages must be a non-empty list"):
        load_traffic(path)


def test_phases_hold_out_an_evaluation_slice_and_share_the_rest_between_nights():
    traffic = [
        {"messages": [{"role": "user", "content": str(i)}], "teacher": "x"} for i in range(100)
    ]
    phases = split_phases(traffic, nights=2, seed=1)
    assert [len(p) for p in phases] == [40, 40, 20]
    seen = [{r["messages"][0]["content"] for r in p} for p in phases]
    assert not (seen[0] & seen[2]) and not (seen[1] & seen[2]) and not (seen[0] & seen[1])
    given = [{"messages": [{"role": "user", "content": "e"}], "teacher": "y"}]
    assert split_phases(traffic, nights=1, eval_traffic=given)[-1] == given
    with pytest.raises(ValueError, match="nights must be >= 1"):
        split_phases(traffic, nights=0)


def test_cli_rejects_a_bad_traffic_file_with_one_line(tmp_path):
    from router.cli import app

    path = tmp_path / "bad.csv"
    path.write_text("prompt\nhi\n", encoding="utf-8")
    result = CliRunner().invoke(app, ["simulate", "--traffic", str(path), "--home", str(tmp_path)])
    assert result.exit_code == 2
    assert "row 2: no reference answer" in result.output


def test_cli_rejects_a_cloud_model_without_a_price_before_sending_anything(tmp_path):
    from router.cli import app

    path = tmp_path / "t.csv"
    path.write_text("prompt,reference\nhi,hello\n", encoding="utf-8")
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            "--traffic",
            str(path),
            "--home",
            str(tmp_path / "h"),
            "--cloud-model",
            "nope-1",
        ],
    )
    assert result.exit_code == 2
    assert "no price known for model 'nope-1'" in result.output
    assert not (tmp_path / "h").exists()


@pytest.mark.real_model
def test_simulate_runs_the_loop_on_a_users_traffic_file(tmp_path):
    """A team's own file (here: Banking77 texts with their intent, under their system prompt)
    goes through phase 1, one night and the held-out evaluation slice; every request has its
    ledger row and the JSON line carries the verdict."""
    from router.cli import app
    from router.devtools.data import load_banking77
    from router.ledger import Ledger

    rows = load_banking77()[:60]
    path = tmp_path / "traffic.jsonl"
    with path.open("w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps({"prompt": r["text"], "system": "Reply with the intent label.",
                                "reference": r["category"], "max_tokens": 12}) + "\n")  # fmt: skip
    home = tmp_path / "sim"
    result = CliRunner().invoke(
        app,
        [
            "simulate",
            "--traffic",
            str(path),
            "--home",
            str(home),
            "--train-examples",
            "30",
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "before (all cloud): 48 requests" in result.output
    assert "simulation finished" in result.output
    figures = json.loads(result.output.strip().splitlines()[-1])
    (evaluation,) = figures["rounds"]
    assert evaluation["requests"] == 12 and 0 <= evaluation["cost_share"] <= 1.5
    assert set(evaluation["by_class"]) == {"Reply with the intent label."}
    served = [r for r in Ledger(home / "ledger.sqlite").rows() if r.reason != "judge"]
    assert len(served) == 60  # every request has its row
    assert (home.stat().st_mode & 0o777) == 0o700
    # everything the run wrote (ledger, adapters, their lock; a fitted router, policy, status)
    # holds the user's traffic or is derived from it: private whatever the umask
    assert (home / "adapters" / "v0001" / "metadata.json").exists()
    for written in home.rglob("*"):
        want = 0o700 if written.is_dir() else 0o600
        assert written.stat().st_mode & 0o777 == want, written


def test_a_home_holding_an_earlier_run_is_refused_not_mixed_in(tmp_path):
    """An earlier run's ledger rows would be trained on and its adapters served: the figures
    would not be this run's (found when a second demo run promoted adapter v0003)."""
    from router.devtools.simulate import run_simulation

    (tmp_path / "ledger.sqlite").write_bytes(b"")
    phase = [{"messages": [{"role": "user", "content": "hi"}], "reference": "hello"}]
    with pytest.raises(ValueError, match="holds an earlier run .*ledger.sqlite.*another --home"):
        run_simulation([phase, phase], home=tmp_path, cloud_url="http://127.0.0.1:1/v1")
    assert (tmp_path / "ledger.sqlite").read_bytes() == b""  # left as it was


def test_the_demo_starts_fresh_in_its_own_home(tmp_path, monkeypatch):
    from router.cli.demo import _fresh

    home = tmp_path / "demo"
    (home / "adapters" / "v0001").mkdir(parents=True)
    (home / "ledger.sqlite").write_text("old")
    assert _fresh(home) == home and not home.exists()
    assert _fresh(tmp_path / "never-made") == tmp_path / "never-made"
