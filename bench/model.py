"""Benchmark of the tiny detector on CPU: training throughput and scoring throughput.

Prints one table. Training: the real Trainer (full fine-tuning, per-epoch validation and checkpoints)
on generator A's demo images, at 1 and at 2 torch threads. Scoring: Vigil's batched single forward
pass (P(fake) from the Yes/No logits) against the baseline of earlier systems — per-image
``generate()`` of the answer text, then parsing Yes/No — on the same trained model in the same run,
with their ratio and how often the two verdicts agree.

    PYTHONPATH=. python bench/model.py [--train-per-class 64] [--score-images 256] [--baseline-images 48]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--train-per-class", type=int, default=64)
    parser.add_argument(
        "--epochs", type=int, default=15, help="epochs of the 1-thread run (its model is scored)"
    )
    parser.add_argument("--score-images", type=int, default=256)
    parser.add_argument("--baseline-images", type=int, default=48)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    import logging

    import numpy as np
    import torch

    from tasks.data.frames import folder_frame
    from tasks.demo.data import DemoSpec, generate
    from tasks.model.card import InferenceSettings, card_for
    from tasks.model.config import load_config
    from tasks.model.detector import Detector
    from tasks.model.processing import parse_verdict
    from tasks.model.vlm import save_detector
    from tasks.settings import Settings
    from tasks.train.job import StartingPoint, TrainingData, fit

    logging.disable(logging.INFO)
    tmp = Path(tempfile.mkdtemp(prefix="vigil-bench-"))
    root = generate(
        tmp / "demo",
        DemoSpec(
            generator="A",
            per_split=(
                ("train", args.train_per_class),
                ("val", 16),
                ("test", max(16, args.score_images // 2)),
            ),
        ),
    )
    frame = folder_frame(root)
    split = {s: frame.where(frame.table["split"].to_numpy() == s) for s in ("train", "val", "test")}
    data = TrainingData(split["train"], split["val"], split["test"], {})
    config = load_config(None, Settings())
    rows = []
    # Training throughput at 2 threads (a short run), then at 1 thread (long enough to learn the answers).
    trainer = None
    for threads, epochs in ((2, 3), (1, args.epochs)):
        run_config = config.with_overrides({"train.epochs": epochs, "train.early_stopping_patience": epochs})
        settings = Settings(home=tmp / "home", training={"cpu_threads": threads})
        start = time.perf_counter()
        trainer = fit(
            run_config, settings, StartingPoint("base"), data, tmp / f"checkpoints-{threads}", tmp / "cache"
        )
        seconds = time.perf_counter() - start
        samples = len(split["train"]) * epochs
        rows.append(
            (
                f"training: Trainer, full fine-tuning, batch {config.train.batch_size}, {threads} thread(s)",
                f"{samples / seconds:,.0f} samples/s",
                f"{samples} samples in {seconds:.1f} s (with per-epoch validation and checkpoints)",
            )
        )

    card = card_for(config)
    folder = save_detector(tmp / "detector", trainer.model, trainer.preprocessor, card, config)
    images = (split["test"].images() * 4)[: args.score_images]
    few = images[: args.baseline_images]
    for threads in (1, 2):
        detector = Detector.load(folder, InferenceSettings(batch_size=args.batch_size, threads=threads))
        detector.score(images[: args.batch_size])  # warm-up
        start = time.perf_counter()
        scores = detector.score(images)
        batched = len(images) / (time.perf_counter() - start)
        detector.answer(few[:1], max_new_tokens=16)  # warm-up
        start = time.perf_counter()
        answers = [detector.answer([image], max_new_tokens=16)[0] for image in few]
        generated = len(few) / (time.perf_counter() - start)
        verdicts = [parse_verdict(a) for a in answers]
        agree = np.mean([v == bool(p > 0.5) for v, p in zip(verdicts, scores[: len(few)], strict=True)])
        rows += [
            (
                f"scoring: batched single forward, Yes/No logits (batch {args.batch_size}), {threads} thread(s)",
                f"{batched:,.0f} images/s",
                f"{len(images)} images",
            ),
            (
                f"baseline: per-image generate(max 16 tokens) + parse, {threads} thread(s)",
                f"{generated:,.1f} images/s",
                f"{len(few)} images; verdicts agree with p > 0.5 on {agree:.0%}, "
                f"{sum(v is None for v in verdicts)} unparsable",
            ),
            (
                f"ratio batched / baseline, {threads} thread(s) (target >= 10x)",
                f"{batched / generated:,.1f}x",
                "",
            ),
        ]
    width = max(len(r[0]) for r in rows)
    print(f"\ntiny profile on CPU ({os.cpu_count()} cores), torch {torch.__version__}, images 56x56\n")
    print(f"| {'measurement':<{width}} | {'result':>18} | note")
    print(f"| {'-' * width} | {'-' * 18} | ---")
    for name, value, note in rows:
        print(f"| {name:<{width}} | {value:>18} | {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
