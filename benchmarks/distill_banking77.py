"""Distil Banking77 labels into SmolLM2-135M with LoRA and measure held-out agreement.

The teacher is the gold label (what a strong cloud model answers on this traffic). Reports
student agreement on held-out rows before and after training, training time and tokens/s, and
the end-to-end cost of a cascade (answer locally, keep the answer when the student's confidence
clears the threshold, else pay the cloud too) versus all-cloud. The threshold is tuned on one
half of the held-out rows to ``--target-quality`` and applied to the other half (2-fold, so no
row scores the threshold it was tuned on); cloud calls are priced as ``--cloud-model`` with
cl100k token counts, local ones as measured wall seconds x ``--usd-per-hour``.

    flock /tmp/hybridgate-cpu.lock python benchmarks/distill_banking77.py --json

Data: Banking77 (PolyAI-LDN/task-specific-datasets, CC-BY-4.0), read from ../shared/data
(the folder beside the repo; see ../shared/data/README.md) unless --data / --train-data say
otherwise. ``--train-examples`` / ``--eval-examples`` draw a seeded sample stratified by intent
from ``--train-data`` / ``--eval-data`` (those files are sorted by intent: their first 3,000 rows
hold 24 of the 77). Evaluation progress goes to stderr.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from router.devtools.demo import INTENT_SYSTEM  # noqa: E402
from training import (  # noqa: E402
    LoraTrainingConfig,
    closed_answer_set,
    evaluate,
    load_examples,
    train_lora,
)
from training.dataset import Example, stratified_sample  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "banking77" / "train.csv"
"""Banking77's train.csv in the shared data folder beside the repo (``../shared/data``)."""

CASCADE_FOLD_LABELS = 50
"""``tune_threshold``'s minimum labels per fold; the 2-fold cascade needs twice this many rows."""

PROGRESS_EVERY_S = 15.0
"""Seconds between evaluation progress lines on stderr."""


def _die(message: str) -> NoReturn:
    """Exit 2 with one line, like the CLI: what is wrong and which flag fixes it."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _read_examples(path: Path, flag: str) -> list[Example]:
    """``load_examples`` that names the file and the flag instead of a bare traceback."""
    if not path.is_file():
        _die(
            f"{path}: no such file; pass {flag} PATH (a text,category CSV, e.g. Banking77's "
            "train.csv: see ../shared/data/README.md)"
        )
    try:
        return load_examples(path)
    except (OSError, ValueError) as exc:
        _die(f"{flag} {exc}")


def _progress(label: str, every_s: float = PROGRESS_EVERY_S) -> Callable[[int, int], None]:
    """A ``(done, total)`` callback printing progress to stderr at most every ``every_s``
    seconds (and at the end): scoring 1,000 rows takes minutes on a CPU."""
    t0 = time.perf_counter()
    last = float("-inf")

    def report(done: int, total: int) -> None:
        nonlocal last
        now = time.perf_counter()
        if done < total and now - last < every_s:
            return
        last = now
        took = now - t0
        left = f", ~{took / done * (total - done):.0f} s left" if 0 < done < total else ""
        print(f"{label}: {done}/{total} rows, {took:.0f} s{left}", file=sys.stderr, flush=True)

    return report


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--data",
        type=Path,
        default=DEFAULT_DATA,
        help=f"text,category CSV to split [default: {DEFAULT_DATA}]",
    )
    p.add_argument("--train-data", type=Path, help="training CSV (text,category); skips the split")
    p.add_argument("--eval-data", type=Path, help="held-out CSV (text,category)")
    p.add_argument(
        "--demo-intents",
        action="store_true",
        help="the demo's traffic instead: its 20 intents from the shipped slice, trained on "
        "phase-1 texts and scored on later-phase texts, with the demo's system prompt",
    )
    p.add_argument("--holdout", type=int, default=1000, help="rows held out of --data (seeded)")
    p.add_argument("--train-examples", type=int, default=3000)
    p.add_argument("--eval-examples", type=int, default=1000, help="held-out rows scored")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--rank", type=int, default=8)
    p.add_argument(
        "--targets",
        default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
        help="comma-separated LoRA modules",
    )
    p.add_argument("--top-layers", type=int, help="LoRA on the top N layers only (default: all)")
    p.add_argument(
        "--no-frozen-cache",
        action="store_true",
        help="recompute the frozen bottom layers every step (the anchor for the cache's speed-up)",
    )
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument(
        "--system-prompt",
        default=None,
        help="system message added to each conversation (default: none)",
    )
    p.add_argument("--free-decoding", action="store_true", help="do not constrain to the labels")
    p.add_argument("--skip-before", action="store_true", help="skip the base-model evaluation")
    p.add_argument(
        "--no-cascade",
        action="store_true",
        help="skip the serving-path cascade figures (they need >= 100 held-out rows)",
    )
    p.add_argument("--model", default="smollm2-135m-instruct", help="model spec or HF dir")
    p.add_argument("--output-dir", type=Path, default=ROOT / ".bench" / "distill_banking77")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--target-quality", type=float, default=0.97)
    p.add_argument(
        "--cloud-model",
        default="gpt-4o-mini,gpt-4o,gpt-4-1106-preview",
        help="comma list: cloud prices (litellm's map) the cascade is costed against",
    )
    p.add_argument("--adapter", type=Path, help="skip training: evaluate this adapter dir")
    p.add_argument("--usd-per-hour", type=float, default=0.10, help="local hardware price")
    p.add_argument(
        "--precision",
        default="fp32",
        help="serving precision of the cascade figures (fp32, bf16, int4, auto)",
    )
    p.add_argument(
        "--rows-out",
        type=Path,
        help="write the cascade rows (label, score, local_seconds, tokens, answer, reference) as JSONL",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object")
    return p.parse_args(argv)


def serve_heldout(
    model_spec: str, adapter_dir: Path, heldout: list, labels: list[str] | None, args: Any
) -> Iterator[tuple[Example, Any]]:
    """Each held-out row with the serving engine's answer (``--precision``, batches of 16,
    constrained to ``labels`` when given): what a cascade would see for it."""
    from local_models import GenerationRequest, LocalEngine, LocalModelConfig
    from training._model import prompt_messages

    engine = LocalEngine.from_config(
        LocalModelConfig(
            model=model_spec,
            adapter_path=str(adapter_dir),
            adapter_version="bench",
            precision=args.precision,
        )
    )
    for i in range(0, len(heldout), 16):
        batch = heldout[i : i + 16]
        results = engine.generate(
            [
                GenerationRequest(
                    messages=tuple(prompt_messages(e.messages, system_prompt=args.system_prompt)),
                    max_tokens=16,
                    allowed_answers=tuple(labels) if labels else None,
                )
                for e in batch
            ]
        )
        yield from zip(batch, results, strict=True)


def cascade_costs(
    model_spec: str,
    adapter_dir: Path,
    train: list,
    heldout: list,
    labels: list[str] | None,
    args: Any,
) -> dict[str, Any]:
    """Serve the held-out rows through the serving engine (``--precision``, batches of 16,
    constrained to the answer set), then tune a cascade per cloud price and report its cost vs
    all-cloud, for the shipped confidence (the label probability with the answer checker the
    nightly fits on the same training rows, ``local_models.answer_checker``) and, side by side,
    the label probability alone."""
    import numpy as np
    from sklearn.metrics import roc_auc_score

    from local_models.answer_checker import checker_text, fit_answer_checker
    from router.devtools.replay import count_prompt_tokens, count_text_tokens
    from router.ledger.pricing import PriceBook
    from router.scoring.confidence import confidence
    from router.scoring.judges import label_match

    checker = None
    if labels:  # what training.promote.write_answer_checker fits, on the same rows
        t = time.perf_counter()
        rows = [(checker_text(e.messages), e.answer.strip()) for e in train]
        checker = fit_answer_checker({"": ([r[0] for r in rows], [r[1] for r in rows])})
        checker_fit_s = time.perf_counter() - t
    ok, conf, label_conf, seconds, tokens, answers = [], [], [], [], [], []
    own: list[str | None] = []  # the checker's own label
    check_s = 0.0
    show = _progress("cascade (serving engine)")
    for e, g in serve_heldout(model_spec, adapter_dir, heldout, labels, args):
        ok.append(int(label_match(answer=g.text, reference=e.answer)))
        answers.append((g.text, e.answer))
        lp = g.token_logprobs or []
        label_conf.append(confidence(lp, closed_answer=g.closed_answer))
        check = None
        if checker is not None and g.closed_answer:
            t = time.perf_counter()
            check = checker.probability("", checker_text(e.messages), g.text)
            check_s += time.perf_counter() - t
            own.append(checker.best("", checker_text(e.messages))[0])
        conf.append(confidence(lp, closed_answer=g.closed_answer, answer_check=check))
        seconds.append(g.compute_seconds)
        tokens.append((count_prompt_tokens(list(e.messages)), count_text_tokens(e.answer)))
        show(len(ok), len(heldout))
    y = np.array(ok)
    lo = np.array(seconds) * args.usd_per_hour / 3600
    if args.rows_out:  # per-row evidence for benchmarks/tune_guarantee.py
        args.rows_out.parent.mkdir(parents=True, exist_ok=True)
        with open(args.rows_out, "w", encoding="utf-8") as f:
            texts = [e.messages[-1]["content"] for e in heldout]
            rows_ = zip(ok, conf, label_conf, seconds, tokens, texts, answers, strict=True)
            for k, v, lv, sec, (pt, at), text, (said, ref) in rows_:
                row = {"label": k, "score": v, "label_score": lv, "local_seconds": sec}
                row |= {"text": text, "answer": said, "reference": ref}
                f.write(json.dumps({**row, "prompt_tokens": pt, "answer_tokens": at}) + "\n")
    prices = PriceBook()
    out: dict[str, Any] = {
        "served_accuracy": round(float(y.mean()), 4),
        "local_seconds_per_row": round(float(np.mean(seconds)), 4),
        "local_usd_per_row": float(lo.mean()),
    }
    if checker is not None and len(own) == len(y):
        agree = np.array([o == a for o, (a, _) in zip(own, answers, strict=True)])
        refs = [r for _, r in answers]
        right = np.array(
            [label_match(answer=o, reference=r) for o, r in zip(own, refs, strict=True)]
        )
        out["answer_checker"] = {
            "fit_seconds": round(checker_fit_s, 2),
            "ms_per_answer": round(1000 * check_s / len(y), 3),
            "accuracy": round(float(right.mean()), 4),
            "agrees_with_student": round(float(agree.mean()), 4),
            "student_accuracy_when_agreeing": round(float(y[agree].mean()), 4),
            "student_accuracy_when_not": round(float(y[~agree].mean()), 4)
            if (~agree).any()
            else None,
        }
    variants = {"cascade": np.array(conf), "cascade_label_only": np.array(label_conf)}
    if checker is None:
        variants = {"cascade": np.array(label_conf)}
    for name, c in variants.items():
        auc = roc_auc_score(y, c) if 0 < y.sum() < len(y) else None
        out[name] = {"auc": None if auc is None else round(float(auc), 4)}
        for model in [m.strip() for m in args.cloud_model.split(",") if m.strip()]:
            cl = np.array([prices.cloud_cost(model, p, a) for p, a in tokens])
            out[name][model] = _two_fold_cascade(y, c, cl, lo, args)
    return out


def _two_fold_cascade(y: Any, c: Any, cl: Any, lo: Any, args: Any) -> dict[str, Any]:
    """Tune on one half (seeded), apply to the other, and back: cost, quality, local share."""
    import numpy as np

    from router.tuning.sweep import tune_threshold

    order = np.random.default_rng(args.seed).permutation(len(y))
    folds = [order[: len(y) // 2], order[len(y) // 2 :]]
    spent = quality = kept = 0.0
    thresholds = []
    for tune_idx, test_idx in (folds, folds[::-1]):
        r = tune_threshold(
            c[tune_idx],
            y[tune_idx],
            cl[tune_idx],
            lo[tune_idx],
            escalation=True,  # an escalated row paid the local try and the cloud
            target_quality=args.target_quality,
            min_labels=CASCADE_FOLD_LABELS,
        )
        thresholds.append(round(r.threshold, 4))
        if r.all_cloud:  # the cascade does not pay (or cannot show the target): no local try
            spent += float(cl[test_idx].sum())
            quality += len(test_idx)
            continue
        keep = c[test_idx] >= r.threshold
        spent += float(np.where(keep, lo[test_idx], lo[test_idx] + cl[test_idx]).sum())
        quality += float(np.where(keep, y[test_idx], 1).sum())
        kept += float(keep.sum())
    return {
        "cloud_usd_per_row": float(cl.mean()),
        "thresholds": thresholds,
        "cost_ratio": round(spent / float(cl.sum()), 4),
        "quality": round(quality / len(y), 4),
        "local_share": round(kept / len(y), 4),
    }


def _demo_split(seed: int) -> tuple[list, list]:
    """The demo's pools (``router.devtools.demo._pools``): unique phase-1 texts to train on, the next
    phase's texts to score on."""
    from router.devtools.demo import _pools
    from training import Example

    def examples(rows: list[dict[str, str]]) -> list[Example]:
        seen: dict[str, str] = {}
        for r in rows:
            seen.setdefault(r["text"], r["category"])
        return [
            Example(
                messages=({"role": "user", "content": t},),
                answer=c,
                ts=float(i),
                source_id=f"demo:{i}",
            )
            for i, (t, c) in enumerate(seen.items())
        ]

    pools = _pools(seed)
    return examples(pools[0]), examples(pools[1])


def select_examples(args: argparse.Namespace) -> tuple[list[Example], list[Example]]:
    """The training and held-out rows the flags ask for, checked before any model loads.

    ``--train-data`` / ``--eval-data``: a seeded sample of ``--train-examples`` /
    ``--eval-examples`` rows stratified by label, not the first rows of a class-sorted file.
    ``--data``: a seeded shuffle split into ``--holdout`` and the rest. ``--demo-intents``: the
    demo's own phases. Exits 2 naming the flag when a file is missing or there are too few rows.
    """
    if args.demo_intents:
        train_all, held_all = _demo_split(args.seed)
        args.system_prompt = args.system_prompt or INTENT_SYSTEM
        train, heldout = train_all[: args.train_examples], held_all[: args.eval_examples]
    elif args.train_data or args.eval_data:
        if not (args.train_data and args.eval_data):
            _die("--train-data and --eval-data go together")
        train_all = _read_examples(args.train_data, "--train-data")
        held_all = _read_examples(args.eval_data, "--eval-data")
        train = stratified_sample(train_all, args.train_examples, seed=args.seed)
        heldout = stratified_sample(held_all, args.eval_examples, seed=args.seed)
    else:
        rows = _read_examples(args.data, "--data")
        random.Random(args.seed).shuffle(rows)
        if len(rows) <= args.holdout:
            _die(f"{args.data} has {len(rows)} rows; need more than --holdout {args.holdout}")
        held_all, train_all = rows[: args.holdout], rows[args.holdout :]
        train, heldout = train_all[: args.train_examples], held_all[: args.eval_examples]
    if not train and args.adapter is None:
        _die("no training rows: raise --train-examples or give --train-data / --data rows")
    if not heldout:
        _die("no held-out rows: raise --eval-examples or give --eval-data / --holdout rows")
    need = 2 * CASCADE_FOLD_LABELS
    if args.no_cascade and args.adapter is not None:
        _die("--adapter only reports the cascade figures; drop --no-cascade")
    if not args.no_cascade and len(heldout) < need:
        _die(
            f"the cascade figures need at least {need} held-out rows (2 folds of "
            f"{CASCADE_FOLD_LABELS}), have {len(heldout)}: raise --eval-examples, give "
            "--eval-data (or --holdout) more rows, or pass --no-cascade"
        )
    return train, heldout


def main(argv: list[str] | None = None) -> None:
    args = _parse(argv)
    train, heldout = select_examples(args)
    labels = None if args.free_decoding else closed_answer_set(train)
    cfg = LoraTrainingConfig(
        r=args.rank,
        alpha=2 * args.rank,
        target_modules=tuple(t.strip() for t in args.targets.split(",") if t.strip()),
        top_layers=args.top_layers,
        frozen_cache=not args.no_frozen_cache,
        lr=args.lr,
        epochs=args.epochs,
        batch_size=args.batch_size,
        grad_accum=args.grad_accum,
        max_seq_len=96,
        warmup_ratio=0.05,
        schedule="cosine",
        system_prompt=args.system_prompt,
        seed=args.seed,
        num_threads=args.threads,
    )
    eval_kw: dict[str, Any] = {"system_prompt": args.system_prompt, "allowed_answers": labels}
    if args.adapter is not None:  # only the serving-path cascade figures of a trained adapter
        print(json.dumps(cascade_costs(args.model, args.adapter, train, heldout, labels, args)))
        return
    before = None
    if not args.skip_before:
        t = time.perf_counter()
        before = evaluate(args.model, heldout, progress=_progress("eval before"), **eval_kw)
        before_s = time.perf_counter() - t
    res = train_lora(
        args.model, train, cfg, output_dir=args.output_dir, progress=not args.json, resume=False
    )
    t = time.perf_counter()
    after = evaluate(
        args.model,
        heldout,
        adapter_dir=res.adapter_dir,
        progress=_progress("eval after"),
        **eval_kw,
    )
    after_s = time.perf_counter() - t
    cascade = (
        {}
        if args.no_cascade
        else cascade_costs(args.model, Path(res.adapter_dir), train, heldout, labels, args)
    )
    report = {
        "train_examples": len(train),
        "eval_examples": len(heldout),
        "closed_answer_set": len(labels) if labels else None,
        "config": cfg.to_dict(),
        "agreement_before": before.agreement if before else None,
        "loss_before": before.loss if before else None,
        "agreement_after": after.agreement,
        "loss_after": after.loss,
        "train_seconds": round(res.train_seconds, 1),
        "train_tokens": res.tokens,
        "tokens_per_s": round(res.tokens_per_s, 1),
        "final_train_loss": res.final_loss,
        "eval_seconds_after": round(after_s, 1),
        "eval_seconds_before": round(before_s, 1) if before else None,
        **cascade,
    }
    if args.json:
        print(json.dumps(report))
        return
    for k, v in report.items():
        if k != "config":
            print(f"{k:>22}: {v}")


if __name__ == "__main__":
    main()
