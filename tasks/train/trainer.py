"""The Hugging Face Trainer, evaluated by validation ROC AUC through the detector's own scoring path.

Trainer gives gradient accumulation, gradient checkpointing, bf16, DDP/DeepSpeed, checkpoints with
optimizer/scheduler/RNG state and resumption. Vigil changes four things: ``evaluate`` scores the
validation images with :func:`tasks.model.vlm.score_images` (the serving path) and reports ROC
AUC, which selects the best checkpoint and drives early stopping; a continued job adds distillation
and EWC to the loss (:class:`ContinualTerms`); the per-step log lines become MLflow metrics; and progress is told in log lines, not bars: one every 30 s (:class:`ProgressLines`) and a
summary at the end of each epoch (:class:`EpochSummary`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset
from transformers import Trainer, TrainerCallback

from tasks.data.frames import Frame
from tasks.evaluate.metrics import binary_metrics, threshold_at_fpr
from tasks.images import load_image
from tasks.model import augment
from tasks.model.config import AugmentSettings, ContinualSettings
from tasks.model.processing import IGNORE_INDEX, Preprocessor, answer_for
from tasks.model.vlm import score_images
from tasks.train.continual import distillation_loss, ewc_penalty

log = logging.getLogger("vigil.train")
PROGRESS_INTERVAL_S = 30.0  # seconds between two progress lines
EPOCH_METRICS = ("roc_auc", "average_precision", "accuracy", "balanced_accuracy", "f1", "ece", "threshold")


class AnswerDataset(Dataset):
    """Images of a frame with their target answers; decoding happens in the data loader.

    With ``augment.views``, the dataset also holds that many re-encoded copies of every image (the
    same deterministic views the probe family trains on, :mod:`tasks.model.augment`). With
    ``teacher_logits`` (the champion's binary logit per image), each item carries its image's teacher
    logit for distillation: a view is distilled toward the champion's verdict on the clean image.
    """

    def __init__(
        self,
        frame: Frame,
        augment: AugmentSettings | None = None,
        seed: int = 0,
        teacher_logits: np.ndarray | None = None,
    ) -> None:
        self.files = frame.table["file"].tolist()
        self.ids = frame.table["image_id"].astype(str).tolist()
        self.answers = [answer_for(label) for label in frame.table["label"]]
        self.augment, self.seed = augment, seed
        self.views = augment.views if augment is not None else 0
        self.teacher = None if teacher_logits is None else np.asarray(teacher_logits, dtype=np.float32)

    def __len__(self) -> int:
        return len(self.files) * (1 + self.views)

    def __getitem__(self, i: int) -> dict[str, Any]:
        row, view = i % len(self.files), i // len(self.files) - 1  # view -1: the image itself
        with open(self.files[row], "rb") as fh:
            image = load_image(fh.read())
        if view >= 0:
            rng = np.random.default_rng(augment.view_seed(self.ids[row], view, self.seed))
            image = augment.reencode(image, self.augment, rng)
        item = {"image": image, "answer": self.answers[row]}
        if self.teacher is not None:
            item["teacher_logit"] = float(self.teacher[row])
        return item


def collator(preprocessor: Preprocessor) -> Callable[[list[dict]], dict[str, torch.Tensor]]:
    def collate(rows: list[dict]) -> dict[str, torch.Tensor]:
        batch = preprocessor.encode([r["image"] for r in rows], [r["answer"] for r in rows])
        if rows and "teacher_logit" in rows[0]:
            batch["teacher_logits"] = torch.tensor([r["teacher_logit"] for r in rows], dtype=torch.float32)
        return batch

    return collate


def answer_logits(logits: torch.Tensor, labels: torch.Tensor, yes_id: int, no_id: int) -> torch.Tensor:
    """The binary logit ``logit(Yes) - logit(No)`` where each row predicts its first answer token
    (the quantity the detector scores with, :func:`tasks.model.vlm.score_images`)."""
    first = (labels != IGNORE_INDEX).int().argmax(dim=1)
    at = logits[torch.arange(len(labels), device=labels.device), first - 1]
    return (at[:, yes_id] - at[:, no_id]).float()


@dataclass
class ContinualTerms:
    """What a continued job adds to the answer loss: distillation and EWC (:mod:`tasks.train.continual`)."""

    settings: ContinualSettings
    anchor: dict[str, torch.Tensor] | None = None
    fisher: dict[str, torch.Tensor] | None = None


class DetectorTrainer(Trainer):
    """A Trainer whose evaluation is the detector's validation ROC AUC (and friends)."""

    def __init__(
        self,
        *args,
        preprocessor: Preprocessor,
        val_frame: Frame,
        target_fpr: float,
        continual: ContinualTerms | None = None,
        **kwargs,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.preprocessor = preprocessor
        self.val_images = val_frame.images()
        self.val_labels = val_frame.labels
        self.target_fpr = target_fpr
        self.continual = continual

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """The answer's cross-entropy, plus distillation toward the champion and EWC when continuing."""
        teacher = inputs.pop("teacher_logits", None)
        loss, outputs = super().compute_loss(
            model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
        )
        terms = self.continual
        if terms is None or not model.training:
            return (loss, outputs) if return_outputs else loss
        extra = loss.new_zeros(())
        if teacher is not None and terms.settings.distillation_weight:
            student = answer_logits(
                outputs.logits, inputs["labels"], self.preprocessor.yes_id, self.preprocessor.no_id
            )
            kd = distillation_loss(
                student, teacher.to(student.device), terms.settings.distillation_temperature
            )
            extra = extra + terms.settings.distillation_weight * kd
        if terms.fisher is not None:
            extra = extra + terms.settings.ewc_lambda / 2 * ewc_penalty(model, terms.anchor, terms.fisher)
        # Trainer divides the loss by the accumulation steps unless the model already normalised it by
        # the batch's token count: these batch means must be scaled the same way as the answer loss.
        scaled = (
            self.loss_is_scaled_for_ga
            if self.loss_is_scaled_for_ga is not None
            else (self.model_accepts_loss_kwargs and num_items_in_batch is not None)
        )
        loss = loss + (extra / self.current_gradient_accumulation_steps if scaled else extra)
        return (loss, outputs) if return_outputs else loss

    # Trainer reloads full weights with load_state_dict(strict=True), but save_pretrained writes
    # Qwen2.5-VL's original key names: every key would be silently skipped. Reload through
    # from_pretrained (which maps the names back) and insist that every key matches.
    def _full_weights(self) -> bool:
        from peft import PeftModel

        return not isinstance(self.model, PeftModel) and not self.is_deepspeed_enabled

    def _load_full_checkpoint(self, folder: str) -> None:
        from transformers import AutoModelForImageTextToText

        dtype = next(self.model.parameters()).dtype
        saved = AutoModelForImageTextToText.from_pretrained(folder, dtype=dtype)
        self.model.load_state_dict(saved.state_dict(), strict=True)

    def _load_from_checkpoint(self, resume_from_checkpoint: str, model=None) -> None:
        if self._full_weights() and (model is None or model is self.model):
            self._load_full_checkpoint(resume_from_checkpoint)
        else:
            super()._load_from_checkpoint(resume_from_checkpoint, model)

    def _load_best_model(self) -> None:
        if self._full_weights():
            log.info(
                "loading the best epoch's weights from %s (val AUC %s)",
                self.state.best_model_checkpoint,
                self.state.best_metric,
            )
            self._load_full_checkpoint(self.state.best_model_checkpoint)
        else:
            super()._load_best_model()

    def validation_scores(self) -> np.ndarray:
        model = self.model
        was_training = model.training
        model.eval()
        try:
            return score_images(
                model, self.preprocessor, self.val_images, self.args.per_device_eval_batch_size
            )
        finally:
            model.train(was_training)

    def evaluate(
        self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"
    ) -> dict[str, float]:
        start = time.monotonic()
        scores = self.validation_scores()
        threshold = threshold_at_fpr(self.val_labels, scores, self.target_fpr)
        report = binary_metrics(self.val_labels, scores, threshold)
        metrics = {
            f"{metric_key_prefix}_{k}": float(report[k]) for k in EPOCH_METRICS if report[k] is not None
        }
        metrics[f"{metric_key_prefix}_seconds"] = round(time.monotonic() - start, 3)
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        return metrics


class ProgressLines(TrainerCallback):
    """Progress as a log line every ``interval_s`` seconds, instead of progress bars (a task log shows a
    bar's carriage-return redraws as one endless line): epoch, step, loss, learning rate, the latest and
    best validation AUC, throughput and the time left at this pace (early stopping may end sooner)."""

    def __init__(
        self,
        epochs: int,
        interval_s: float = PROGRESS_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.epochs = epochs
        self.interval_s = interval_s
        self.clock = clock
        self.started = self.last = 0.0
        self.first_step = 0
        self.loss: float | None = None
        self.learning_rate: float | None = None
        self.val_auc: float | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.started = self.last = self.clock()
        self.first_step = state.global_step  # a resumed job: its throughput counts from here

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        self.val_auc = (metrics or {}).get("eval_roc_auc", self.val_auc)

    def on_log(self, args, state, control, logs=None, **kwargs):
        """After each training step's log (``logging_steps``): the loss is known, the line can be told."""
        logs = logs or {}
        if "loss" not in logs:  # evaluation or end-of-training logs
            return
        self.loss = logs["loss"]
        self.learning_rate = logs.get("learning_rate", self.learning_rate)
        now = self.clock()
        first = self.last == self.started  # the pace, as soon as it is known
        if not state.is_world_process_zero or (not first and now - self.last < self.interval_s):
            return
        self.last = now
        log.info("%s", self.line(state, args, now))

    def line(self, state, args, now: float) -> str:
        steps_done = state.global_step - self.first_step
        elapsed = max(now - self.started, 1e-9)
        per_step = elapsed / steps_done if steps_done else None
        samples = args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size
        epoch = max(1, min(math.ceil(state.epoch or 0), self.epochs))
        total = state.max_steps or 0
        parts = [
            f"epoch {epoch}/{self.epochs}",
            f"step {state.global_step}/{total}" + (f" ({state.global_step / total:.0%})" if total else ""),
            f"loss {_num(self.loss)}",
            f"lr {self.learning_rate:.2e}" if self.learning_rate is not None else "lr –",
            f"val AUC {_num(self.val_auc)} (best {_num(state.best_metric)})",
            f"{samples / per_step:.1f} samples/s" if per_step else "– samples/s",
            f"ETA {_duration(per_step * (total - state.global_step))}" if per_step and total else "ETA –",
        ]
        return "progress: " + " | ".join(parts)


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def _duration(seconds: float) -> str:
    seconds = max(round(seconds), 0)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class EpochSummary(TrainerCallback):
    """One log line per epoch and per saved checkpoint (also how a restart shows where it resumed)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs
        self.started = time.monotonic()

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.started = time.monotonic()

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        if not state.is_world_process_zero or not metrics:
            return
        epoch = round(state.epoch or 0)
        losses = [
            e["loss"] for e in state.log_history if "loss" in e and epoch - 1 < e.get("epoch", 0) <= epoch
        ]
        best = state.best_metric if state.best_metric is not None else metrics.get("eval_roc_auc")
        log.info(
            "epoch %d/%d: train loss %.4f | val AUC %.4f AP %.4f ECE %.4f | best val AUC %.4f | %.1f s",
            epoch,
            self.epochs,
            float(np.mean(losses)) if losses else float("nan"),
            metrics.get("eval_roc_auc", float("nan")),
            metrics.get("eval_average_precision", float("nan")),
            metrics.get("eval_ece", float("nan")),
            max(best or 0.0, metrics.get("eval_roc_auc", 0.0)),
            time.monotonic() - self.started,
        )

    def on_save(self, args, state, control, **kwargs):
        if state.is_world_process_zero:
            log.info("checkpoint saved: epoch %d, step %d", round(state.epoch or 0), state.global_step)


class MlflowMetrics(TrainerCallback):
    """Per-step training loss/learning rate and per-epoch validation metrics into the active MLflow run."""

    def __init__(self, run_id: str, tracking_uri: str) -> None:
        from mlflow import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri)
        self.run_id = run_id

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        now = int(time.time() * 1000)
        from mlflow.entities import Metric

        metrics = []
        for key, value in logs.items():
            if not isinstance(value, (int, float)) or key in ("epoch", "total_flos"):
                continue
            if key.startswith("eval_"):
                metrics.append(Metric(f"val_{key[5:]}", float(value), now, round(state.epoch or 0)))
            elif key in ("loss", "learning_rate", "grad_norm"):
                metrics.append(
                    Metric("train_loss" if key == "loss" else key, float(value), now, state.global_step)
                )
            elif key.startswith("train_"):
                metrics.append(Metric(key, float(value), now, state.global_step))
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)
