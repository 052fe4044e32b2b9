"""Training progress as periodic log lines (epoch, step, loss, AUC, samples/s, ETA), not progress bars."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from transformers import TrainerControl, TrainerState

from tasks.train.trainer import ProgressLines


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_line_at_the_first_step_then_one_per_interval_with_pace_and_time_left(caplog):
    caplog.set_level(logging.INFO, logger="vigil.train")
    clock = Clock()
    progress = ProgressLines(epochs=10, interval_s=30, clock=clock)
    args = SimpleNamespace(per_device_train_batch_size=16, gradient_accumulation_steps=2, world_size=1)
    state, control = TrainerState(max_steps=100), TrainerControl()
    progress.on_train_begin(args, state, control)
    lines = []
    for step in range(1, 101):
        clock.now += 2.0  # two seconds per optimizer step of 32 images: 16 samples/s
        state.global_step, state.epoch = step, step / 10
        progress.on_step_end(args, state, control)  # what the Trainer calls, in its order
        progress.on_log(args, state, control, logs={"loss": 1.0 / step, "learning_rate": 1e-3})
        if step % 10 == 0:
            state.best_metric = 0.5 + step / 250
            progress.on_evaluate(args, state, control, metrics={"eval_roc_auc": 0.5 + step / 250})
            progress.on_log(args, state, control, logs={"eval_roc_auc": 0.5 + step / 250})
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("progress:")]
    # step 1 (with its loss), then every 30 s (15 steps of 2 s): 1, 16, 31, 46, 61, 76, 91
    assert len(lines) == 7, lines
    first, fourth = lines[0], lines[3]
    assert first.startswith("progress: epoch 1/10 | step 1/100 (1%) | loss 1.0000 | lr 1.00e-03")
    assert "val AUC – (best –)" in first and "16.0 samples/s" in first and "ETA 3m18s" in first
    assert fourth.startswith("progress: epoch 5/10 | step 46/100 (46%)")
    assert "val AUC 0.6600 (best 0.6600)" in fourth and "ETA 1m48s" in fourth
    assert all("\r" not in line and len(line) < 200 for line in lines)


def test_only_the_main_process_reports(caplog):
    caplog.set_level(logging.INFO, logger="vigil.train")
    progress = ProgressLines(epochs=1, interval_s=0, clock=Clock())
    state = TrainerState(max_steps=10, is_world_process_zero=False)
    args = SimpleNamespace(per_device_train_batch_size=1, gradient_accumulation_steps=1, world_size=2)
    progress.on_train_begin(args, state, TrainerControl())
    state.global_step = 1
    progress.on_log(args, state, TrainerControl(), logs={"loss": 0.5})
    assert not caplog.records
