"""Training the probe: the continual-learning terms, the replay buffer, augmentation in training only,
and a seeded two-task run where replay + distillation forgets less than fine-tuning alone."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch.nn import functional as F

from tasks.data.frames import Frame
from tasks.model import augment
from tasks.model.detector import Detector
from tasks.train.continual import anchor_of, diagonal_fisher, distillation_loss, ewc_penalty
from tasks.train.job import select_training_rows
from tasks.train.probe import (
    _head_module,
    _logits,
    _to_arrays,
    fit_probe,
    restandardised,
)


def test_distillation_is_zero_when_the_student_equals_the_teacher():
    logits = torch.tensor([-3.0, -0.2, 0.0, 1.5, 4.0])
    assert float(distillation_loss(logits, logits.clone(), 2.0)) == pytest.approx(0.0, abs=1e-7)
    assert float(distillation_loss(logits + 1.0, logits, 2.0)) > 0.0


def test_ewc_is_zero_at_the_anchor_and_grows_away_from_it(probe_config):
    torch.manual_seed(0)
    head = _head_module(16, probe_config)
    z, y = torch.randn(32, 16), (torch.rand(32) > 0.5).float()
    fisher = diagonal_fisher(
        head, lambda i: F.binary_cross_entropy_with_logits(head(z[i : i + 1])[:, 0], y[i : i + 1]), len(z)
    )
    assert all(float(f.sum()) > 0 for f in fisher.values())
    anchor = anchor_of(head)
    assert ewc_penalty(head, anchor, fisher).item() == 0.0
    with torch.no_grad():
        for p in head.parameters():
            p.add_(0.1)
    assert ewc_penalty(head, anchor, fisher).item() > 0.0


@pytest.mark.parametrize("kind", ["linear", "mlp"])
def test_a_restandardised_head_gives_the_same_logits_on_every_image(probe_config, kind):
    rng = np.random.default_rng(0)
    config = probe_config.with_overrides({"head.kind": kind})
    weights = _to_arrays(_head_module(8, config))
    x = rng.normal(3.0, 2.0, (50, 8))
    old_mean, old_scale = rng.normal(size=8), rng.uniform(0.5, 2.0, 8)
    new_mean, new_scale = x.mean(axis=0), x.std(axis=0)
    moved = restandardised(weights, old_mean, old_scale, new_mean, new_scale)
    before = _logits(weights, (x - old_mean) / old_scale)
    after = _logits(moved, (x - new_mean) / new_scale)
    np.testing.assert_allclose(after, before, rtol=1e-4, atol=1e-4)
    assert not np.allclose(moved[0], weights[0])  # the weights did change: the features moved


def _frame(rows: list[dict]) -> Frame:
    return Frame(pd.DataFrame(rows), "synthetic rows")


def test_the_replay_buffer_is_balanced_over_generators_and_labels_and_respects_its_budget():
    rows = [{"image_id": f"a{i}", "label": "fake", "generator": "A", "source": "demo"} for i in range(40)]
    rows += [{"image_id": f"b{i}", "label": "fake", "generator": "B", "source": "demo"} for i in range(6)]
    rows += [{"image_id": f"r{i}", "label": "real", "generator": None, "source": "demo"} for i in range(40)]
    rows += [{"image_id": f"n{i}", "label": "fake", "generator": "C", "source": "demo"} for i in range(12)]
    seen = {r["image_id"] for r in rows if not r["image_id"].startswith("n")}
    selected, counts = select_training_rows(_frame(rows), seen, "new", seed=0)
    table = selected.table
    replayed = table[table["image_id"].isin(seen)]
    assert counts == {"train_new": 12, "train_seen": 86, "train_replayed": 12, "train_total": 24}
    per_cell = replayed.groupby([replayed["label"], replayed["generator"].fillna("-")]).size().to_dict()
    assert per_cell == {("fake", "A"): 4, ("fake", "B"): 4, ("real", "-"): 4}  # even over the cells
    big, counts = select_training_rows(_frame(rows), seen, 30, seed=0)
    assert counts["train_replayed"] == 30
    cells = big.table[big.table["image_id"].isin(seen)].groupby(["label", "generator"], dropna=False).size()
    assert cells.min() == 6 and cells.max() == 12  # B has only 6: the others share the rest evenly
    assert select_training_rows(_frame(rows), seen, 30, seed=0)[0].table.equals(big.table)  # deterministic


def test_augmentation_happens_in_training_only(
    probe_config, probe_dir, demo_frames, feature_cache, monkeypatch
):
    from tasks.evaluate import evaluate_detector

    calls = []
    real = augment.reencode
    monkeypatch.setattr(augment, "reencode", lambda *a, **k: calls.append(1) or real(*a, **k))
    config = probe_config.with_overrides({"augment.views": 1, "seed": 7, "train.epochs": 2})
    train = demo_frames["train"]
    fit_probe(config, train, demo_frames["val"], np.zeros(len(train), bool), feature_cache)
    assert len(calls) == len(train)  # one new view per training image (seed 7: not cached yet)
    calls.clear()
    detector = Detector.load(probe_dir)
    evaluate_detector(detector, demo_frames["test"], with_robustness=True)
    detector.score(demo_frames["test"].images())
    assert calls == []  # evaluation (also its JPEG and resize conditions) and scoring never augment


def _task(rng, n, fake_direction, real_shift):
    """Standardised features of one task: reals around ``real_shift``, fakes shifted along ``fake_direction``."""
    dims = 16
    reals = rng.normal(size=(n, dims)) + real_shift
    fakes = rng.normal(size=(n, dims)) + 4.0 * fake_direction
    return np.concatenate([reals, fakes]).astype(np.float32), np.r_[np.zeros(n), np.ones(n)]


def test_replay_and_distillation_forget_the_old_generator_less_than_fine_tuning(probe_config):
    """Task 1: fakes along e0. Task 2: new fakes along e1, and new real photos that look like task 1's fakes
    (shifted along e0). Fine-tuning on task 2 alone learns "e0 means real" and forgets task 1; replaying
    task-1 images and distilling from the task-1 head keep it (a seeded small run of the real trainer)."""
    from tasks.train.probe import train_head

    rng = np.random.default_rng(0)
    e0, e1 = np.eye(16)[0], np.eye(16)[1]
    x1, y1 = _task(rng, 200, e0, 0.0)
    x1_test, y1_test = _task(rng, 200, e0, 0.0)
    x2, y2 = _task(rng, 200, e1, 2.5 * e0)
    config = probe_config.with_overrides(
        {"train.epochs": 40, "train.early_stopping_patience": 40, "head.kind": "linear", "head.dropout": 0.0}
    )
    first = train_head(config, x1, y1, x1_test, y1_test)
    teacher = lambda x: _logits(first.weights, x)  # noqa: E731

    def after_task_2(replay: bool, distill: float) -> float:
        cfg = config.with_overrides({"continual.distillation_weight": distill})
        x, y, seen = x2, y2, np.zeros(len(x2), bool)
        if replay:  # a balanced buffer of task-1 images, as many as the new ones would be too many here
            keep = np.r_[np.arange(0, 200, 2), np.arange(200, 400, 2)]
            x, y, seen = (
                np.concatenate([x2, x1[keep]]),
                np.r_[y2, y1[keep]],
                np.r_[seen, np.ones(len(keep), bool)],
            )
        head = train_head(cfg, x, y, x2, y2, init=first.weights, teacher_logits=teacher(x), seen=seen)
        return roc_auc_score(y1_test, _logits(head.weights, x1_test))

    before = roc_auc_score(y1_test, teacher(x1_test))
    fine_tuned = after_task_2(replay=False, distill=0.0)
    kept = after_task_2(replay=True, distill=1.0)
    assert before > 0.95
    assert before - fine_tuned > 0.1, (before, fine_tuned)  # fine-tuning alone forgets
    assert before - kept < (before - fine_tuned) / 2, (
        before,
        fine_tuned,
        kept,
    )  # replay + KD keep most of it
    # same seed, same data: the same model
    again = after_task_2(replay=True, distill=1.0)
    assert again == kept
