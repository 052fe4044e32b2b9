"""Fixtures of the model tests: demo data published as snapshots, a tiny base model, quick configs.

Until curation is merged, snapshots are built here from ``tasks.demo_data`` output with the documented
manifest columns (``publish_demo_snapshot``); curation's own pipeline replaces this in e2e tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from tasks.demo_data import DemoSpec, generate
from tasks.snapshots import export_path, latest_version, publish_snapshot, read_snapshot

SMALL = (("train", 24), ("val", 8), ("test", 8))


def publish_demo_snapshot(store, root: Path):
    """Publish the demo folder ``root`` as a new snapshot on top of the latest one (cumulative)."""
    parent = latest_version(store)
    previous = read_snapshot(store, parent).table if parent else None
    records = [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines()]
    batch_id = f"demo-{root.name}"
    rows = []
    for record in records:
        data = (root / record["file_name"]).read_bytes()
        key = store.put_content(data, "curated", "png")
        image_id = key.rsplit("/", 1)[-1].removesuffix(".png")
        split, label_dir = record["file_name"].split("/")[:2]
        label = "real" if label_dir == "0_real" else "fake"
        rows.append({"image_id": image_id, "key": key, "path": export_path(split, label, image_id), "split": split,
                     "label": label, "label_source": "folder", "source": root.name, "batch_id": batch_id,
                     "group_id": image_id, "phash": "0" * 16, "width": 56, "height": 56, "original_format": "PNG",
                     "original_size_bytes": len(data), "generator": record.get("generator")})
    table = pd.DataFrame(rows)
    if previous is not None:
        table = pd.concat([previous, table], ignore_index=True).drop_duplicates("image_id")
    return publish_snapshot(store, table, parent, [batch_id])


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory) -> Path:
    """Small demo sets of generators A and B (24/8/8 images per class and split)."""
    dest = tmp_path_factory.mktemp("demo")
    for generator in ("A", "B"):
        generate(dest, DemoSpec(generator=generator, per_split=SMALL, seed=1))
    return dest


@pytest.fixture(scope="session")
def tiny_config():
    """The repository's tiny setup, shortened for tests."""
    from tasks.model.config import load_config
    from tasks.settings import Settings

    return load_config(None, Settings()).with_overrides({"train.epochs": 3, "train.batch_size": 16,
                                                         "train.early_stopping_patience": 3})


@pytest.fixture(scope="session")
def tiny_base(tiny_config, tmp_path_factory):
    """The tiny base model and preprocessor (built once per session)."""
    from tasks.model.detector import load_base

    return load_base(tiny_config, tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def demo_frames(demo_root):
    """Generator A's small demo folder as train/val/test frames."""
    from tasks.model.frames import folder_frame

    frame = folder_frame(demo_root / "demo_a")
    return {s: frame.where(frame.table["split"].to_numpy() == s, f"demo_a {s}") for s in ("train", "val", "test")}


@pytest.fixture(scope="session")
def trained(tiny_config, demo_frames, tmp_path_factory):
    """The tiny profile fully fine-tuned for a bounded number of steps (25 epochs x 3 steps) on generator A."""
    from tasks.settings import Settings
    from tasks.train.job import StartingPoint, TrainingData, fit

    config = tiny_config.with_overrides({"train.epochs": 25, "train.batch_size": 16,
                                         "train.early_stopping_patience": 25})
    data = TrainingData(demo_frames["train"], demo_frames["val"], demo_frames["test"], {})
    trainer = fit(config, Settings(), StartingPoint("base"), data, tmp_path_factory.mktemp("checkpoints"),
                  tmp_path_factory.mktemp("cache"))
    return trainer, config


@pytest.fixture(scope="session")
def trained_dir(trained, demo_frames, tmp_path_factory) -> Path:
    """The trained tiny detector saved as a detector folder, threshold chosen on val for 5% FPR."""
    from tasks.evaluate.metrics import threshold_at_fpr
    from tasks.model.detector import DetectorCard, save_detector

    trainer, config = trained
    threshold = threshold_at_fpr(demo_frames["val"].labels, trainer.validation_scores(), config.target_fpr)
    card = DetectorCard.from_config(config, threshold=threshold, snapshot="demo_a")
    return save_detector(tmp_path_factory.mktemp("detector") / "detector", trainer.model, trainer.preprocessor, card,
                         config)


@pytest.fixture(scope="session")
def publish_demo():
    """``publish_demo(store, folder)`` publishes a demo folder as the next snapshot."""
    return publish_demo_snapshot
