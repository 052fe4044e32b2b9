"""Benchmark of the two detector families on this CPU, trained the same way on the same demo data.

Both are trained from their base on generator A's demo set (DemoSpec defaults: 160/40/60 images per
class for train/val/test) and evaluated on its test split. Printed:

1. **probe** (the embedded default): training samples/s (head epochs over cached features) and
   feature extraction images/s, scoring images/s at batch 1 and 32, p50 single-image latency, test AUC;
2. **tiny VLM** (the VLM family's offline profile): training samples/s, batched scoring images/s
   against the baseline of earlier systems — per-image ``generate()`` and parsing Yes/No — and their
   ratio, test AUC;
3. **the cascade**: the probe for every image and the tiny VLM for the band, on the A+C validation
   split (the probe is weaker on C): the share of images sent to the VLM against the cascade's AUC.

    python bench/model.py [--threads 1]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tasks.data.frames import Frame, folder_frame
from tasks.demo.data import DemoSpec, generate
from tasks.evaluate.metrics import threshold_at_fpr
from tasks.model import backbone
from tasks.model.card import InferenceSettings, card_for
from tasks.model.cascade import choose_band
from tasks.model.config import load_config
from tasks.model.detector import Detector
from tasks.model.probe import save_probe
from tasks.settings import Settings


def split(frame: Frame, name: str) -> Frame:
    return frame.where(frame.table["split"].to_numpy() == name, f"{frame.name} {name}")


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return result, time.perf_counter() - start


def scoring_rows(detector: Detector, images: list, label: str) -> list[tuple[str, str, str]]:
    rows = []
    for batch in (1, 32):
        d = detector.with_inference(detector.inference.model_copy(update={"batch_size": batch}))
        d.score(images[:batch])  # warm-up
        _, seconds = timed(d.score, images)
        rows.append(
            (
                f"{label}: scoring, batch {batch}",
                f"{len(images) / seconds:,.0f} images/s",
                f"{len(images)} images",
            )
        )
    single = []
    for image in images[:40]:
        _, seconds = timed(detector.score, [image])
        single.append(seconds * 1000)
    rows.append((f"{label}: single-image latency p50", f"{statistics.median(single):.1f} ms", "40 requests"))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads of both families")
    parser.add_argument("--vlm-epochs", type=int, default=15)
    args = parser.parse_args()
    logging.disable(logging.INFO)
    work = Path(tempfile.mkdtemp(prefix="vigil-bench-model-"))
    settings = Settings(home=work / "home", training={"cpu_threads": args.threads})
    frame_a = folder_frame(generate(work / "data", DemoSpec(generator="A")))
    frame_c = folder_frame(generate(work / "data", DemoSpec(generator="C")))
    train, val, test = (split(frame_a, s) for s in ("train", "val", "test"))
    test_images, inference = test.images(), InferenceSettings(threads=args.threads)
    rows: list[tuple[str, str, str]] = []

    # -- the probe ------------------------------------------------------------------------------
    from tasks.train.probe import fit_probe

    probe_config = load_config(None, settings, profile="probe")
    cache = work / "cache"
    fit, seconds = timed(
        fit_probe, probe_config, train, val, np.zeros(len(train), bool), cache, threads=args.threads
    )
    views = 1 + probe_config.augment.views
    rows.append(
        (
            "probe: features (first time, incl. augmented views)",
            f"{len(train) * views / seconds:,.0f} images/s",
            f"{len(train)} images x {views}; head included",
        )
    )
    _, head_seconds = timed(fit_probe, probe_config, train, val, np.zeros(len(train), bool), cache)
    epochs = fit.best_epoch + probe_config.train.early_stopping_patience
    rows.append(
        (
            "probe: training the head (cached features)",
            f"{len(train) * views * epochs / head_seconds:,.0f} samples/s",
            f"{epochs} epochs in {head_seconds:.1f} s",
        )
    )
    threshold = threshold_at_fpr(val.labels, fit.val_scores, probe_config.target_fpr)
    card = card_for(
        probe_config, threshold=threshold, weights=backbone.identity(), feature_names=fit.feature_names
    )
    probe = Detector.load(save_probe(work / "probe", card, fit.head), inference)
    rows += scoring_rows(probe, test_images, "probe")
    probe_auc = roc_auc_score(test.labels, probe.score(test_images))
    rows.append(("probe: test ROC AUC on generator A", f"{probe_auc:.3f}", f"{len(test)} images"))

    # -- the tiny VLM ---------------------------------------------------------------------------
    from tasks.model.processing import parse_verdict
    from tasks.model.vlm import save_detector
    from tasks.train.job import StartingPoint, TrainingData
    from tasks.train.job import fit as fit_vlm

    vlm_config = load_config(None, settings, profile="tiny").with_overrides(
        {"train.epochs": args.vlm_epochs, "train.early_stopping_patience": args.vlm_epochs}
    )
    data = TrainingData(train, val, test, {})
    trainer, seconds = timed(
        fit_vlm, vlm_config, settings, StartingPoint("base"), data, work / "checkpoints", cache
    )
    rows.append(
        (
            "tiny VLM: training, full fine-tuning",
            f"{len(train) * args.vlm_epochs / seconds:,.0f} samples/s",
            f"{args.vlm_epochs} epochs in {seconds:.1f} s (with per-epoch validation and checkpoints)",
        )
    )
    vlm_threshold = threshold_at_fpr(val.labels, trainer.validation_scores(), vlm_config.target_fpr)
    folder = save_detector(
        work / "vlm",
        trainer.model,
        trainer.preprocessor,
        card_for(vlm_config, threshold=vlm_threshold),
        vlm_config,
    )
    vlm = Detector.load(folder, inference)
    rows += scoring_rows(vlm, test_images, "tiny VLM")
    few = test_images[:24]
    vlm.answer(few[:1], max_new_tokens=16)
    answers, seconds = timed(lambda: [vlm.answer([image], max_new_tokens=16)[0] for image in few])
    generated = len(few) / seconds
    _, batched_seconds = timed(vlm.score, test_images)
    batched = len(test_images) / batched_seconds
    agree = np.mean([parse_verdict(a) == bool(p > 0.5) for a, p in zip(answers, vlm.score(few), strict=True)])
    rows.append(
        (
            "tiny VLM: baseline per-image generate(16 tokens) + parse",
            f"{generated:,.1f} images/s",
            f"verdicts agree with p > 0.5 on {agree:.0%}",
        )
    )
    rows.append(("tiny VLM: batched scoring / baseline (target >= 10x)", f"{batched / generated:,.1f}x", ""))
    vlm_auc = roc_auc_score(test.labels, vlm.score(test_images))
    rows.append(("tiny VLM: test ROC AUC on generator A", f"{vlm_auc:.3f}", "trained on the same images"))

    # -- the cascade ----------------------------------------------------------------------------
    mixed = Frame(pd.concat([val.table, split(frame_c, "val").table], ignore_index=True), "A+C val")
    images, labels = mixed.images(), mixed.labels
    first, second = probe.score(images), vlm.score(images)
    cascade_rows = []
    for share in (0.0, 0.1, 0.25, 0.5, 1.0):
        chosen = choose_band(labels, first, second, max_share=share, max_auc_loss=0.0)
        cascade_rows.append((share, chosen["share"], chosen["auc"]))

    width = max(len(r[0]) for r in rows)
    print(f"\nboth families on CPU ({os.cpu_count()} cores), {args.threads} thread(s), demo images 56x56\n")
    print(f"| {'measurement':<{width}} | {'result':>16} | note")
    print(f"| {'-' * width} | {'-' * 16} | ---")
    for name, value, note in rows:
        print(f"| {name:<{width}} | {value:>16} | {note}")
    print(
        f"\ncascade on {mixed.name} ({len(mixed)} images): probe alone AUC {roc_auc_score(labels, first):.3f}, "
        f"tiny VLM alone {roc_auc_score(labels, second):.3f}\n"
    )
    print("| VLM share allowed | VLM share used | cascade ROC AUC |")
    print("|---:|---:|---:|")
    for allowed, used, auc in cascade_rows:
        print(f"| {allowed:.0%} | {used:.0%} | {auc:.3f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
