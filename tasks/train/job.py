"""A training job: snapshot in, registered challenger out; resumable, deterministic for a seed.

The job's identity is a hash of the setup, the snapshot version and the starting model, and its work
folder is ``<settings.home>/train/<job_id>``: Hugging Face checkpoints (model, optimizer, scheduler,
RNG and trainer state at the end of every epoch), the MLflow run id, the detector folder and
``result.json``. Restarting the same job (a preempted container, an Airflow retry) finds the folder,
resumes from the last checkpoint inside the same MLflow run, and a finished job only returns its result.
In containers the folder is a Docker volume (``settings.training.work_volume``) so it outlives them.

Data: the snapshot's labeled ``train`` split. When the job continues from the champion, the images of
the snapshot the champion was trained on are *already seen*: every new image is used, plus a replay
buffer of seen ones balanced over (generator, label) cells (``continual.replay_budget``), so old
generators are not forgotten; distillation from the champion and EWC are the family's part
(:mod:`tasks.train.probe`; the VLM trains with replay). From the base model every image is new. The
best epoch is chosen by validation ROC AUC on the whole ``val`` split; the threshold is set on it
for ``target_fpr``; the ``test`` split gets the full report.

Families: the probe (:mod:`tasks.train.probe`: features once, then a small head) and the VLM (the
Hugging Face Trainer, :mod:`tasks.train.trainer`). Each registers into its own registered model
(``settings.model_name_for(family)``), so each has its own champion.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tasks.data.frames import Frame, snapshot_frame
from tasks.data.snapshots import manifest_key, resolve_version
from tasks.evaluate import evaluate_detector, feature_folder
from tasks.evaluate.metrics import binary_metrics, threshold_at_fpr
from tasks.evaluate.report import log_report
from tasks.model.artifacts import resolve_model
from tasks.model.card import DetectorCard, card_for, detector_folder, now_iso, read_card
from tasks.model.config import ModelConfig
from tasks.registry import CHAMPION, Registry
from tasks.settings import Settings
from tasks.storage import ObjectStore
from tasks.train import tracking

log = logging.getLogger("vigil.train")
DEEPSPEED_CONFIG = "deepspeed_zero2.json"


@dataclass(frozen=True)
class StartingPoint:
    """The weights a job starts from: the base model, or the champion's (continual training)."""

    kind: str  # "base" | "champion"
    version: str | None = None
    folder: Path | None = None
    snapshot: str | None = None

    @property
    def ref(self) -> str:
        return "base" if self.kind == "base" else f"champion-v{self.version}"


def rank() -> int:
    return int(os.environ.get("RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


ARCHITECTURE_FIELDS = {
    "vlm": ("profile", "method", "base_model", "revision", "tiny", "images"),
    "probe": ("profile", "backbone", "forensics", "head", "embedding_dims"),
}


def starting_point(config: ModelConfig, settings: Settings) -> StartingPoint:
    """The champion when ``init_from: champion`` and it has the same family and architecture."""
    if config.init_from == "base":
        return StartingPoint("base")
    name = settings.model_name_for(config.family)
    champion = Registry(settings, name=name).version(CHAMPION)
    if champion is None:
        log.info("no champion of %s yet: starting from the base model", name)
        return StartingPoint("base")
    folder = detector_folder(resolve_model(f"models:/{name}/{champion.version}", settings).path)
    card = read_card(folder)
    if card.family != config.family:
        log.info("champion v%s is a %s detector: starting from the base model", champion.version, card.family)
        return StartingPoint("base")
    expected = card_for(config, **_placeholders(config))
    mismatch = [f for f in ARCHITECTURE_FIELDS[config.family] if getattr(card, f) != getattr(expected, f)]
    if mismatch:
        log.info(
            "champion v%s differs in %s: starting from the base model", champion.version, ", ".join(mismatch)
        )
        return StartingPoint("base")
    return StartingPoint("champion", str(champion.version), folder, card.snapshot)


def _placeholders(config: ModelConfig) -> dict[str, Any]:
    """Card fields training fills in later (a probe card needs them to be built for a comparison)."""
    if config.family != "probe":
        return {}
    from tasks.model import backbone

    return {"weights": backbone.identity(), "feature_names": []}


def job_id(config: ModelConfig, snapshot: str, start: StartingPoint) -> str:
    return hashlib.sha256(f"{config.digest()}|{snapshot}|{start.ref}".encode()).hexdigest()[:12]


@dataclass(frozen=True)
class TrainingData:
    train: Frame
    val: Frame
    test: Frame
    counts: dict[str, int]
    seen: set[str] = frozenset()  # image ids of the champion's training images (replayed rows are among them)


def select_training_rows(
    train: Frame, seen_ids: set[str], budget: int | str, seed: int
) -> tuple[Frame, dict[str, int]]:
    """All new rows plus a replay buffer of seen ones, deterministically.

    The buffer holds ``budget`` seen rows ('new': as many as there are new rows), spread evenly over
    the (generator, label) cells of the seen rows (reals form one cell per source), so a generator
    with few images is not crowded out by one with many.
    """
    table = train.table
    seen = table["image_id"].isin(seen_ids).to_numpy()
    new = int((~seen).sum())
    size = min(int(seen.sum()), new if budget == "new" else int(budget))
    cells = (table["label"] + "/" + table["generator"].fillna("").astype(str)).where(
        table["label"] == "fake", "real/" + table["source"].fillna("").astype(str)
    )
    rng = np.random.default_rng(seed)
    pools = {
        cell: rng.permutation(np.flatnonzero(seen & (cells == cell).to_numpy()))
        for cell in sorted(set(cells[seen]))
    }
    chosen: list[int] = []
    while len(chosen) < size and any(len(p) for p in pools.values()):  # round robin over the cells
        for cell in list(pools):
            if len(chosen) < size and len(pools[cell]):
                chosen.append(int(pools[cell][0]))
                pools[cell] = pools[cell][1:]
    keep = ~seen
    keep[chosen] = True
    counts = {
        "train_new": new,
        "train_seen": int(seen.sum()),
        "train_replayed": len(chosen),
        "train_total": int(keep.sum()),
    }
    return train.where(keep, f"{train.name} (new + {len(chosen)} replayed)"), counts


def training_data(
    store, version: str, start: StartingPoint, config: ModelConfig, cache: Path
) -> TrainingData:
    frame = snapshot_frame(store, version, None, cache)
    splits = {
        s: frame.where(frame.table["split"].to_numpy() == s, f"snapshot {version} {s}")
        for s in ("train", "val", "test")
    }
    seen: set[str] = set()
    if start.kind == "champion" and start.snapshot:
        seen = set(snapshot_frame(store, start.snapshot, ("train",), cache).table["image_id"])
    train, counts = select_training_rows(splits["train"], seen, config.continual.replay_budget, config.seed)
    for name in ("train", "val"):
        have = set((splits[name] if name == "val" else train).table["label"])
        if have != {"real", "fake"}:
            raise ValueError(
                f"snapshot {version}: the {name} split needs real and fake images, it has "
                f"{sorted(have) or 'none'}; validation AUC (which selects the best epoch) is undefined"
            )
    counts.update({"val": len(splits["val"]), "test": len(splits["test"])})
    return TrainingData(train, splits["val"], splits["test"], counts, seen)


def limit_cpu_threads(settings: Settings) -> None:
    import torch

    if settings.training.cpu_threads and not torch.cuda.is_available():
        torch.set_num_threads(settings.training.cpu_threads)


def use_bf16(config: ModelConfig) -> bool:
    import torch

    if config.train.precision == "bf16":
        return True
    return config.train.precision == "auto" and torch.cuda.is_available() and torch.cuda.is_bf16_supported()


def build_model(config: ModelConfig, start: StartingPoint, cache: Path, bf16: bool):
    """Trainable model + preprocessor: base (+ fresh LoRA) or the champion's weights/adapter."""
    import torch

    from tasks.model.card import read_card
    from tasks.model.processing import Preprocessor
    from tasks.model.vlm import apply_lora, load_base, load_weights

    # A frozen base can live in bf16; fully trained weights stay fp32 (autocast does the bf16 math).
    dtype = torch.bfloat16 if bf16 and config.method == "lora" else torch.float32
    if start.kind == "champion":
        model = load_weights(start.folder, read_card(start.folder), cache, trainable=True, dtype=dtype)
        return model, Preprocessor.load(start.folder)
    model, preprocessor = load_base(config, cache, dtype=dtype)
    if config.method == "lora":
        model = apply_lora(model, config.lora)
    return model, preprocessor


def training_arguments(config: ModelConfig, output_dir: Path, bf16: bool, settings: Settings):
    import torch
    from transformers import TrainingArguments

    deepspeed = None
    if config.train.distributed == "deepspeed-zero2" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        deepspeed = str(settings.include(DEEPSPEED_CONFIG))
    t = config.train
    return TrainingArguments(
        output_dir=str(output_dir),
        num_train_epochs=t.epochs,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size,
        gradient_accumulation_steps=t.grad_accumulation,
        learning_rate=t.learning_rate,
        lr_scheduler_type=t.lr_schedule,
        warmup_steps=t.warmup_ratio,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        bf16=bf16,
        activation_checkpointing=t.gradient_checkpointing,
        activation_checkpointing_kwargs={"use_reentrant": False} if t.gradient_checkpointing else None,
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=1,
        load_best_model_at_end=True,
        metric_for_best_model="roc_auc",
        greater_is_better=True,
        logging_strategy="steps",
        logging_steps=1,
        report_to="none",
        seed=config.seed,
        data_seed=config.seed,
        remove_unused_columns=False,
        dataloader_num_workers=t.dataloader_workers,
        deepspeed=deepspeed,
        ddp_find_unused_parameters=False,
        disable_tqdm=not is_main_process(),
        dataloader_pin_memory=torch.cuda.is_available(),
    )


def train(
    config: ModelConfig,
    *,
    settings: Settings | None = None,
    reason: str = "",
    config_source: str | None = None,
) -> dict[str, Any]:
    """Run (or resume, or return the result of) the training job for ``config``; returns the result dict."""

    settings = settings or Settings()
    store = ObjectStore.from_settings(settings)
    version = resolve_version(store, config.data.snapshot)
    start = starting_point(config, settings)
    jid = job_id(config, version, start)
    work = Path(settings.home) / "train" / jid
    result_file = work / "result.json"
    if result_file.exists():
        log.info("job %s already finished: %s", jid, result_file)
        return json.loads(result_file.read_text())
    work.mkdir(parents=True, exist_ok=True)
    cache = Path(settings.home) / "cache"
    log.info(
        "training job %s: profile %s (%s family), snapshot %s, starting from %s, continual %s, work folder %s",
        jid,
        config.profile,
        config.family,
        version,
        start.ref,
        config.continual.strategy if start.kind == "champion" else "none (from the base)",
        work,
    )
    data = training_data(store, version, start, config, cache / "images")
    log.info("data: %s", ", ".join(f"{k} {v}" for k, v in data.counts.items()))

    run = None
    if is_main_process():
        run = tracking.start_run(
            work,
            settings,
            f"train-{version}-{jid[:6]}",
            {
                "vigil.job_id": jid,
                "vigil.snapshot": version,
                "vigil.profile": config.profile,
                **({"mlflow.source.git.commit": c} if (c := tracking.git_commit(settings)) else {}),
            },
        )
        tracking.log_params(
            {
                **config.flat(),
                "snapshot": version,
                "job_id": jid,
                "reason": reason,
                "start": start.ref,
                "config_file": config_source,
                "family": config.family,
                "continual_strategy": config.continual.strategy if start.kind == "champion" else "none",
                **data.counts,
            }
        )
        tracking.log_snapshot_input(
            store, manifest_key(version), data.train.table.assign(split="train"), version
        )
    try:
        result = _fit_and_register(config, settings, start, data, work, version, jid, reason, cache, run)
    except BaseException:
        if run is not None:
            import mlflow

            mlflow.end_run(status="FAILED")
        raise
    if run is not None:
        import mlflow

        mlflow.end_run()
    return result


@dataclass
class Fitted:
    """A trained model before it is saved: its validation scores and how to write it as a detector folder."""

    val_scores: np.ndarray
    best_val_auc: float | None
    save: Callable[[Path, DetectorCard], Path]
    card_fields: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: list[tuple[Path, str]] = field(default_factory=list)  # (file, MLflow artifact folder)


def _fit_and_register(
    config: ModelConfig,
    settings: Settings,
    start: StartingPoint,
    data: TrainingData,
    work: Path,
    version: str,
    jid: str,
    reason: str,
    cache: Path,
    run,
) -> dict[str, Any]:
    started = time.monotonic()
    if config.family == "probe":
        fitted = fit_probe_job(config, settings, start, data, work, cache)
    else:
        fitted = fit_vlm_job(config, settings, start, data, work, cache, run)
    if not is_main_process():
        return {}
    return finalize(
        fitted, config, settings, data, work, version, jid, reason, start, time.monotonic() - started
    )


def fit_probe_job(
    config: ModelConfig, settings: Settings, start: StartingPoint, data: TrainingData, work: Path, cache: Path
) -> Fitted:
    """The probe: features (cached), the head with the continual terms, calibration, PCA."""
    import mlflow

    from tasks.model import backbone
    from tasks.model.detector import Detector
    from tasks.model.probe import save_probe
    from tasks.train.probe import describe_fit, fit_probe

    limit_cpu_threads(settings)
    champion = Detector.load(start.folder) if start.kind == "champion" else None
    seen = data.train.table["image_id"].isin(data.seen).to_numpy()
    fit = fit_probe(
        config, data.train, data.val, seen, cache, champion=champion, threads=settings.training.cpu_threads
    )
    for entry in fit.history:
        mlflow.log_metrics(
            {f"train_{k}": v for k, v in entry.items() if k not in ("epoch", "val_roc_auc")}
            | {"val_roc_auc": entry["val_roc_auc"]},
            step=int(entry["epoch"]),
        )
    history = work / "history.json"
    history.write_text(json.dumps(fit.history))
    config_yaml = _config_yaml(config)
    return Fitted(
        val_scores=fit.val_scores,
        best_val_auc=fit.best_val_auc,
        save=lambda dest, card: save_probe(dest, card, fit.head, config_yaml),
        card_fields={"weights": backbone.identity(), "feature_names": fit.feature_names},
        metrics={k: float(v) for k, v in describe_fit(fit).items()},
        artifacts=[(history, "training")],
    )


def fit_vlm_job(
    config: ModelConfig,
    settings: Settings,
    start: StartingPoint,
    data: TrainingData,
    work: Path,
    cache: Path,
    run,
) -> Fitted:
    """The VLM: the Hugging Face Trainer (resumable from its checkpoints), best epoch loaded."""
    from tasks.model.vlm import save_detector

    trainer = fit(
        config,
        settings,
        start,
        data,
        work / "checkpoints",
        cache,
        run_id=run.info.run_id if run is not None else None,
    )

    def save(dest: Path, card: DetectorCard) -> Path:
        folder = save_detector(dest, trainer.model, trainer.preprocessor, card, config)
        _release(trainer)
        return folder

    state_files = sorted((work / "checkpoints").glob("checkpoint-*/trainer_state.json"))
    return Fitted(
        val_scores=trainer.validation_scores(),
        best_val_auc=trainer.state.best_metric,
        save=save,
        artifacts=[(state_files[-1], "training")] if state_files else [],
    )


def _config_yaml(config: ModelConfig) -> str:
    import yaml

    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)


def fit(
    config: ModelConfig,
    settings: Settings,
    start: StartingPoint,
    data: TrainingData,
    checkpoints: Path,
    cache: Path,
    run_id: str | None = None,
):
    """Train (resuming from the last checkpoint in ``checkpoints`` if any); returns the trainer, best epoch loaded."""
    from transformers import EarlyStoppingCallback, set_seed
    from transformers.trainer_callback import ProgressCallback
    from transformers.trainer_utils import get_last_checkpoint

    from tasks.train.trainer import (
        AnswerDataset,
        DetectorTrainer,
        EpochSummary,
        MlflowMetrics,
        ProgressLines,
        collator,
    )

    limit_cpu_threads(settings)
    set_seed(config.seed)
    bf16 = use_bf16(config)
    model, preprocessor = build_model(config, start, cache, bf16)
    args = training_arguments(config, checkpoints, bf16, settings)
    teacher, terms = vlm_continual_terms(config, start, model, preprocessor, data)
    trainer = DetectorTrainer(
        model=model,
        args=args,
        train_dataset=AnswerDataset(data.train, config.augment, config.seed, teacher),
        eval_dataset=AnswerDataset(data.val),
        data_collator=collator(preprocessor),
        preprocessor=preprocessor,
        val_frame=data.val,
        target_fpr=config.target_fpr,
        continual=terms,
        callbacks=[
            EarlyStoppingCallback(early_stopping_patience=config.train.early_stopping_patience),
            EpochSummary(config.train.epochs),
        ],
    )
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(ProgressLines(config.train.epochs))
    if run_id is not None:
        trainer.add_callback(MlflowMetrics(run_id, settings.mlflow_tracking_uri))
    last = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    if last:
        state = json.loads((Path(last) / "trainer_state.json").read_text())
        log.info(
            "resuming from %s: %d of %d epochs done, best val AUC so far %s",
            Path(last).name,
            round(state.get("epoch", 0)),
            config.train.epochs,
            state.get("best_metric"),
        )
    trainer.train(resume_from_checkpoint=last)
    return trainer


def vlm_continual_terms(config: ModelConfig, start: StartingPoint, model, preprocessor, data: TrainingData):
    """For a job continuing from the champion (``model`` is the champion now, before any step): its
    binary logit on every training image (the distillation targets) and, for EWC, its trainable
    weights and their diagonal Fisher on up to ``fisher_samples`` seen images."""
    import torch
    from torch.nn import functional as F

    from tasks.images import load_image
    from tasks.model.processing import answer_for
    from tasks.model.vlm import model_device, score_images
    from tasks.train.continual import anchor_of, diagonal_fisher
    from tasks.train.trainer import ContinualTerms, answer_logits

    settings = config.continual
    if start.kind != "champion" or not (settings.distillation_weight or settings.ewc_lambda):
        return None, None
    if torch.cuda.is_available():
        model.to("cuda")
    teacher = None
    if settings.distillation_weight:
        files = data.train.table["file"].tolist()
        chunks = []
        for begin in range(0, len(files), 64):
            images = [load_image(Path(f).read_bytes()) for f in files[begin : begin + 64]]
            chunks.append(score_images(model, preprocessor, images, config.train.eval_batch_size))
        p = np.clip(np.concatenate(chunks), 1e-6, 1 - 1e-6)
        teacher = np.log(p) - np.log1p(-p)  # p = softmax(Yes, No)[Yes]: this is logit(Yes) - logit(No)
        log.info("distillation: the champion's logits on %d training images", len(teacher))
    terms = ContinualTerms(settings)
    seen = data.train.where(data.train.table["image_id"].isin(data.seen).to_numpy(), "seen")
    if settings.ewc_lambda and len(seen.table):
        files = seen.table["file"].tolist()[: settings.fisher_samples]
        labels, answers = seen.labels, seen.table["label"].tolist()
        device = model_device(model)

        def sample_loss(i: int) -> torch.Tensor:
            batch = preprocessor.encode([load_image(Path(files[i]).read_bytes())], [answer_for(answers[i])])
            batch = {k: v.to(device) for k, v in batch.items()}
            logits = model(**batch, use_cache=False).logits
            logit = answer_logits(logits, batch["labels"], preprocessor.yes_id, preprocessor.no_id)
            return F.binary_cross_entropy_with_logits(logit, torch.tensor([float(labels[i])], device=device))

        rows = files
        terms.anchor = anchor_of(model)
        terms.fisher = diagonal_fisher(model, sample_loss, len(rows))
        log.info(
            "EWC: diagonal Fisher of %d trainable tensors on %d seen images", len(terms.fisher), len(rows)
        )
    return teacher, terms


def finalize(
    fitted: Fitted,
    config: ModelConfig,
    settings: Settings,
    data: TrainingData,
    work: Path,
    version: str,
    jid: str,
    reason: str,
    start: StartingPoint,
    train_seconds: float,
) -> dict[str, Any]:
    """Threshold on val, save the detector, report on test, log and register the challenger."""
    import mlflow

    from tasks.model.detector import Detector, shared_features

    name = settings.model_name_for(config.family)
    threshold = threshold_at_fpr(data.val.labels, fitted.val_scores, config.target_fpr)
    val = binary_metrics(data.val.labels, fitted.val_scores, threshold)
    card = card_for(
        config,
        name=name,
        threshold=threshold,
        snapshot=version,
        trained_at=now_iso(),
        metrics={
            f"val_{k}": val[k] for k in ("roc_auc", "average_precision", "balanced_accuracy", "fpr", "ece")
        },
        **fitted.card_fields,
    )
    folder = fitted.save(work / "detector", card)
    # The test report is made by the saved artifact itself: what is registered is what was measured.
    detector = Detector.load(folder)
    with shared_features([detector], feature_folder(settings)):
        report = evaluate_detector(detector, data.test, train=data.train)
    log_report(report, work / "evaluation" / "test", "evaluation/test", "test")
    mlflow.log_metrics(
        {
            "best_val_roc_auc": float(fitted.best_val_auc or 0.0),
            "threshold": threshold,
            "train_seconds": round(train_seconds, 2),
            **fitted.metrics,
            **{f"final_val_{k}": float(v) for k, v in val.items() if isinstance(v, float)},
        }
    )
    mlflow.log_artifact(str(folder / "model_config.yaml"), artifact_path="config")
    for path, artifact_path in fitted.artifacts:
        mlflow.log_artifact(str(path), artifact_path=artifact_path)
    test = report["overall"]
    tags = {
        "snapshot": version,
        "family": config.family,
        "profile": config.profile,
        "threshold": f"{threshold:.6f}",
        "job_id": jid,
        "start": start.ref,
        "continual": config.continual.strategy if start.kind == "champion" else "none",
        "val_roc_auc": _tag(val["roc_auc"]),
        "test_roc_auc": _tag(test["roc_auc"]),
        "reason": reason[:500],
    }
    if config.family == "vlm":
        tags |= {
            "base_model": card.base_model or "tiny (built offline)",
            "revision": card.revision or "",
            "method": config.method,
        }
    else:
        tags |= {
            "backbone": f"{card.backbone.name} ({card.weights.package} {card.weights.version})",
            "method": f"probe-{card.head.kind}",
        }
    description = (
        f"Trained on snapshot {version} from {start.ref} ({config.profile}); "
        f"val AUC {_tag(val['roc_auc'])}, test AUC {_tag(test['roc_auc'])}. {reason}"
    ).strip()
    registered = tracking.log_and_register(folder, settings, tags, description, name=name)
    result = {
        "job_id": jid,
        "run_id": mlflow.active_run().info.run_id,
        "model_name": name,
        **registered,
        "snapshot": version,
        "profile": config.profile,
        "family": config.family,
        "threshold": threshold,
        "val_roc_auc": val["roc_auc"],
        "test_roc_auc": test["roc_auc"],
        "start": start.ref,
        "train_seconds": round(train_seconds, 2),
        "detector_dir": str(folder),
    }
    (work / "result.json").write_text(json.dumps(result, indent=2))
    _prune_checkpoints(work / "checkpoints")
    log.info(
        "challenger %s version %s: val AUC %s, test AUC %s, threshold %.4f",
        name,
        registered["version"],
        _tag(val["roc_auc"]),
        _tag(test["roc_auc"]),
        threshold,
    )
    return result


def _tag(value: float | None) -> str:
    return "n/a" if value is None or np.isnan(value) else f"{value:.4f}"


def _prune_checkpoints(folder: Path) -> None:
    """A finished job needs no optimizer states; the registered model and result.json remain."""
    shutil.rmtree(folder, ignore_errors=True)


def _release(trainer) -> None:
    """Free the training copy of the model before the saved one is loaded (one 3B model fits, two may not)."""
    import torch

    trainer.model.to("cpu")
    trainer.optimizer = None
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
