"""Synthetic label-style traffic for training tests."""

from __future__ import annotations

from training.dataset import Example

LABELS = ("card_arrival", "lost_card", "top_up_failed")


def make_examples(n: int, *, start_ts: float = 0.0) -> list[Example]:
    """Label-style traffic: prompt i gets label i % 3 (distinct prompts, ascending ts)."""
    prompts = ("where is my new card {}", "I lost my card number {}", "my top up {} failed")
    return [
        Example(
            messages=({"role": "user", "content": prompts[i % 3].format(i)},),
            answer=LABELS[i % 3],
            ts=start_ts + i,
            source_id=f"t{i}",
        )
        for i in range(n)
    ]
