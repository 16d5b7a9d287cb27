"""Rebuild the committed data slices from the full public data sets (maintainers only).

Run ``python -m router.devtools.data._make_slices --data ../shared/data``; the output is deterministic
(seeded), so a rebuild reproduces the committed files byte for byte.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
from collections import defaultdict
from pathlib import Path

from router.devtools.data import demo_intents

_HERE = Path(__file__).parent
BANKING77_ROWS = 3000
GSM8K_ROWS = 300
SEED = 0
_STRONG = "gpt-4-1106-preview"
_WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"


def slice_banking77(*, data: Path, rows: int = BANKING77_ROWS, seed: int = SEED) -> list[dict]:
    """Stratified sample (every category keeps its share of rows, at least one), plus every row
    of the demo's intents, so the demo's two phases can use disjoint, unseen texts."""
    with open(data / "banking77" / "train.csv", newline="", encoding="utf-8") as f:
        all_rows = list(csv.DictReader(f))
    by_cat: dict[str, list[dict]] = defaultdict(list)
    for row in all_rows:
        by_cat[row["category"]].append({"text": row["text"], "category": row["category"]})
    rng = random.Random(seed)
    out: list[dict] = []
    for cat in sorted(by_cat):
        members = by_cat[cat]
        k = max(1, round(len(members) * rows / len(all_rows)))
        out.extend(rng.sample(members, min(k, len(members))))
    picked = {row["text"] for row in out}
    for cat in demo_intents(list(by_cat)):
        out.extend(r for r in by_cat[cat] if r["text"] not in picked)
    rng.shuffle(out)
    return out


def slice_gsm8k(*, data: Path, rows: int = GSM8K_ROWS, seed: int = SEED) -> list[dict]:
    """Random non-contaminated RouteLLM GSM8K rows with GPT-4's answer and both correctness bits."""
    src = data / "routellm_gsm8k"
    with open(src / "contaminated_prompts.jsonl", encoding="utf-8") as f:
        contaminated = {json.loads(line)["eval_prompt"].strip() for line in f if line.strip()}
    with open(src / "gsm8k_responses.csv", newline="", encoding="utf-8") as f:
        clean = [r for r in csv.DictReader(f) if r["prompt"].strip() not in contaminated]
    rng = random.Random(seed)
    picked = rng.sample(clean, rows)
    return [
        {
            "prompt": r["prompt"],
            "answer": r[f"{_STRONG}_response"],
            "weak_correct": r[_WEAK] == "True",
            "strong_correct": r[_STRONG] == "True",
        }
        for r in picked
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    args = parser.parse_args()
    banking = slice_banking77(data=args.data)
    with open(_HERE / "banking77.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=["text", "category"])
        writer.writeheader()
        writer.writerows(banking)
    gsm = slice_gsm8k(data=args.data)
    with open(_HERE / "gsm8k_gpt4.jsonl", "w", encoding="utf-8") as f:
        for row in gsm:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"banking77.csv: {len(banking)} rows; gsm8k_gpt4.jsonl: {len(gsm)} rows")


if __name__ == "__main__":
    main()
