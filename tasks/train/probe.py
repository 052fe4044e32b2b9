"""Training the probe family: features once per image, then a small head with continual-learning terms.

The backbone is frozen, so each image's features are computed once and cached by image id (curated
image ids are content hashes) under ``<home>/cache/features/<digest of the feature setup>/``; a
retraining on a cumulative snapshot only computes the new images. Augmented views (``augment:``) are
cached the same way (their seed derives from the image id).

The head (logistic regression or a one-hidden-layer MLP, torch, CPU) is trained with AdamW on the
class-balanced binary cross-entropy, early-stopped on validation ROC AUC, plus, when the job continues
from the champion (``continual:``):

* **replay** — the seen images in the training rows (chosen upstream, :func:`tasks.train.job.select_training_rows`);
* **distillation** from the champion's logits on every training row, and **EWC** around the
  champion's head weights (:mod:`tasks.train.continual`).

Warm start (``continual.warm_start``): the head starts as the champion, re-expressed exactly in the
standardisation of the new training rows (:func:`restandardised`); off, a fresh head learns and
distillation alone carries the champion's knowledge. Then Platt scaling on the validation logits
calibrates P(fake), and a PCA of the training features gives the monitoring embedding.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tasks.data.frames import Frame
from tasks.images import load_image
from tasks.model import augment
from tasks.model.config import ProbeConfig
from tasks.model.detector import FEATURE_CACHE, FeatureMemo
from tasks.model.probe import FeatureExtractor, Head, ProbeDetector
from tasks.train.continual import anchor_of, diagonal_fisher, distillation_loss, ewc_penalty

if TYPE_CHECKING:
    import torch

log = logging.getLogger("vigil.train")
CONTENT_ID = 64  # curated image ids are sha256 hex digests of the pixels: safe cache keys


@dataclass
class ProbeFit:
    """What training produced, before it is saved."""

    head: Head
    feature_names: list[str]
    val_scores: np.ndarray  # calibrated P(fake) on the validation split
    best_val_auc: float
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


def features_of(
    frame: Frame, extractor: FeatureExtractor, cache: FeatureMemo, config: ProbeConfig, *, views: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Raw features of every image of ``frame`` and, with ``views``, of its augmented copies.

    Returns ``(features [M, D], rows [M], clean [M])``: the frame row of each vector and whether it is
    the clean image (``M = N * (1 + views)``).
    """
    ids = [
        _content_key(image_id, file)
        for image_id, file in zip(frame.table["image_id"], frame.table["file"], strict=True)
    ]
    files = frame.table["file"].tolist()
    keys: list[tuple[int, str, int]] = []  # (row, cache key, view; -1 = clean)
    for row, key in enumerate(ids):
        keys.append((row, key, -1))
        keys += [(row, f"{key}.aug{config.seed}-{view}", view) for view in range(views)]
    vectors: list[np.ndarray | None] = [cache.get(key) for _, key, _ in keys]
    missing = [i for i, v in enumerate(vectors) if v is None]
    if missing:
        log.info("computing features of %d images (%d cached)", len(missing), len(keys) - len(missing))
    started = time.monotonic()
    for chunk_start in range(0, len(missing), 64):
        chunk = missing[chunk_start : chunk_start + 64]
        images = []
        for i in chunk:
            row, _, view = keys[i]
            image = load_image(Path(files[row]).read_bytes())
            if view >= 0:
                seed = augment.view_seed(ids[row], view, config.seed)
                image = augment.reencode(image, config.augment, np.random.default_rng(seed))
            images.append(image)
        for i, vector in zip(chunk, extractor(images), strict=True):
            vectors[i] = vector
            cache.put(keys[i][1], vector)
        done = chunk_start + len(chunk)
        if done % 512 < 64 or done == len(missing):
            rate = done / max(time.monotonic() - started, 1e-6)
            log.info("features: %d/%d images, %.0f images/s", done, len(missing), rate)
    rows = np.array([row for row, _, _ in keys], dtype=np.int64)
    clean = np.array([view < 0 for _, _, view in keys], dtype=bool)
    return np.stack(vectors).astype(np.float32), rows, clean


def _content_key(image_id: str, file: str) -> str:
    """A cache key that names the pixels: the curated image id (a sha256 of them), else the file's sha256."""
    image_id = str(image_id)
    if len(image_id) == CONTENT_ID and all(c in "0123456789abcdef" for c in image_id):
        return image_id
    return hashlib.sha256(Path(file).read_bytes()).hexdigest()


def _head_module(dim: int, config: ProbeConfig) -> torch.nn.Module:
    from torch import nn

    if config.head.kind == "linear":
        return nn.Sequential(nn.Dropout(config.head.dropout), nn.Linear(dim, 1))
    return nn.Sequential(
        nn.Dropout(config.head.dropout),
        nn.Linear(dim, config.head.hidden),
        nn.ReLU(),
        nn.Dropout(config.head.dropout),
        nn.Linear(config.head.hidden, 1),
    )


def _to_arrays(module: torch.nn.Module) -> tuple[np.ndarray, ...]:
    layers = [m for m in module if hasattr(m, "weight")]
    if len(layers) == 1:
        return layers[0].weight.detach().numpy()[0].copy(), layers[0].bias.detach().numpy().copy()
    first, last = layers
    return (
        first.weight.detach().numpy().T.copy(),
        first.bias.detach().numpy().copy(),
        last.weight.detach().numpy()[0].copy(),
        last.bias.detach().numpy().copy(),
    )


def _load_arrays(module: torch.nn.Module, weights: tuple[np.ndarray, ...]) -> None:
    import torch

    layers = [m for m in module if hasattr(m, "weight")]
    with torch.no_grad():
        if len(layers) == 1:
            layers[0].weight.copy_(torch.from_numpy(weights[0][None, :]))
            layers[0].bias.copy_(torch.from_numpy(weights[1]))
        else:
            layers[0].weight.copy_(torch.from_numpy(weights[0].T))
            layers[0].bias.copy_(torch.from_numpy(weights[1]))
            layers[1].weight.copy_(torch.from_numpy(weights[2][None, :]))
            layers[1].bias.copy_(torch.from_numpy(weights[3]))


def fit_probe(
    config: ProbeConfig,
    train: Frame,
    val: Frame,
    seen: np.ndarray,
    cache_dir: Path,
    champion: ProbeDetector | None = None,
    threads: int | None = None,
) -> ProbeFit:
    """Train the head on ``train`` (``seen`` marks the replayed rows), early-stopped on ``val``."""
    extractor = (
        champion.extractor
        if champion is not None
        else FeatureExtractor(config.backbone, config.forensics, cache_dir, threads)
    )
    cache = FeatureMemo.for_setup(Path(cache_dir) / FEATURE_CACHE, extractor.setup)
    raw, rows, clean = features_of(train, extractor, cache, config, views=config.augment.views)
    val_raw, _, _ = features_of(val, extractor, cache, config)
    mean, scale = raw[clean].mean(axis=0), raw[clean].std(axis=0) + 1e-6
    init = teacher = None
    if champion is not None:
        teacher = champion.head.logits(champion.head.standardise(raw)).astype(np.float32)
        if config.continual.warm_start:
            init = restandardised(champion.head.weights, champion.head.mean, champion.head.scale, mean, scale)
    z, z_val = (raw - mean) / scale, (val_raw - mean) / scale
    trained = train_head(
        config, z, train.labels[rows], z_val, val.labels, init=init, teacher_logits=teacher, seen=seen[rows]
    )
    head = Head(mean, scale, trained.weights, (1.0, 0.0), mean, np.zeros((len(mean), 1)))
    val_logits = head.logits(z_val)
    basis, centre = pca(z[clean], config.embedding_dims)
    head = Head(mean, scale, trained.weights, platt(val_logits, val.labels), centre, basis)
    counts = {"train_features": len(z), "augmented_views": int((~clean).sum())}
    return ProbeFit(
        head,
        extractor.names,
        head.probability(val_logits),
        trained.best_auc,
        trained.best_epoch,
        trained.history,
        counts,
    )


@dataclass
class TrainedHead:
    weights: tuple[np.ndarray, ...]
    best_auc: float
    best_epoch: int
    history: list[dict[str, float]]


def train_head(
    config: ProbeConfig,
    z: np.ndarray,
    labels: np.ndarray,
    z_val: np.ndarray,
    val_labels: np.ndarray,
    *,
    init: tuple[np.ndarray, ...] | None = None,
    teacher_logits: np.ndarray | None = None,
    seen: np.ndarray | None = None,
) -> TrainedHead:
    """The head on standardised features: class-balanced BCE (+ distillation toward ``teacher_logits``,
    + EWC around ``init`` with a Fisher from the ``seen`` rows), early-stopped on validation ROC AUC."""
    import torch
    from sklearn.metrics import roc_auc_score
    from torch.nn import functional as F

    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    x = torch.from_numpy(np.ascontiguousarray(z, dtype=np.float32))
    y = torch.tensor(labels, dtype=torch.float32)
    module = _head_module(x.shape[1], config)
    continual = config.continual
    teacher = anchor = fisher = None
    if teacher_logits is not None and continual.distillation_weight:
        teacher = torch.from_numpy(np.asarray(teacher_logits, dtype=np.float32))
    if init is not None:
        _load_arrays(module, init)
        if continual.ewc_lambda and seen is not None and seen.any():
            anchor = anchor_of(module)
            rows = torch.from_numpy(np.flatnonzero(seen)[: continual.fisher_samples])
            fisher = diagonal_fisher(
                module,
                lambda i: F.binary_cross_entropy_with_logits(
                    module(x[rows[i : i + 1]])[:, 0], y[rows[i : i + 1]]
                ),
                len(rows),
            )
    n_fake = float(y.sum())
    pos_weight = torch.tensor((len(y) - n_fake) / max(n_fake, 1.0))
    # Label smoothing bounds the logits (|logit| ~ log((1 - e/2) / (e/2))): an over-confident head saturates
    # P(fake) at exactly 1.0 in float64, and tied scores lose the ranking the AUC measures.
    smoothing = config.train.label_smoothing
    targets = y * (1 - smoothing) + smoothing / 2
    optimizer = torch.optim.AdamW(
        module.parameters(), lr=config.train.learning_rate, weight_decay=config.train.weight_decay
    )
    best, best_loss = (-1.0, 0, _to_arrays(module)), float("inf")
    val_y = torch.tensor(val_labels, dtype=torch.float64)
    history: list[dict[str, float]] = []
    started, patience = time.monotonic(), config.train.early_stopping_patience
    for epoch in range(1, config.train.epochs + 1):
        module.train()
        totals = {"loss": 0.0, "bce": 0.0, "kd": 0.0, "ewc": 0.0}
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), config.train.batch_size):
            batch = order[start : start + config.train.batch_size]
            logits = module(x[batch])[:, 0]
            bce = F.binary_cross_entropy_with_logits(logits, targets[batch], pos_weight=pos_weight)
            loss, kd, ewc = bce, torch.zeros(()), torch.zeros(())
            if teacher is not None:
                kd = distillation_loss(logits, teacher[batch], continual.distillation_temperature)
                loss = loss + continual.distillation_weight * kd
            if fisher is not None:
                ewc = ewc_penalty(module, anchor, fisher)
                loss = loss + continual.ewc_lambda / 2 * ewc
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            for key, value in (("loss", loss), ("bce", bce), ("kd", kd), ("ewc", ewc)):
                totals[key] += value.item() * len(batch)
        weights = _to_arrays(module)
        val_logits = _logits(weights, z_val)
        val_auc = float(roc_auc_score(val_labels, val_logits))
        val_loss = float(F.binary_cross_entropy_with_logits(torch.from_numpy(val_logits), val_y))
        metrics = {k: v / len(x) for k, v in totals.items()} | {
            "val_roc_auc": val_auc,
            "val_loss": val_loss,
            "epoch": epoch,
        }
        history.append(metrics)
        # Best: the highest val AUC; among equal AUCs (a saturated AUC), the lowest val loss.
        if val_auc > best[0] + 1e-6 or (abs(val_auc - best[0]) <= 1e-6 and val_loss < best_loss - 1e-6):
            best, best_loss = (val_auc, epoch, weights), val_loss
        stop = epoch - best[1] >= patience
        if epoch == 1 or epoch % 10 == 0 or stop or epoch == config.train.epochs:
            rate = epoch * len(x) / max(time.monotonic() - started, 1e-6)
            log.info(
                "epoch %d/%d: loss %.4f (bce %.4f, kd %.4f, ewc %.4f) | val AUC %.4f loss %.4f | best AUC %.4f "
                "(epoch %d) | %.0f samples/s",
                epoch,
                config.train.epochs,
                metrics["loss"],
                metrics["bce"],
                metrics["kd"],
                metrics["ewc"],
                val_auc,
                val_loss,
                best[0],
                best[1],
                rate,
            )
        if stop:
            log.info("early stopping: no better validation AUC or loss for %d epochs", patience)
            break
    return TrainedHead(best[2], best[0], best[1], history)


def restandardised(
    weights: tuple[np.ndarray, ...],
    mean: np.ndarray,
    scale: np.ndarray,
    new_mean: np.ndarray,
    new_scale: np.ndarray,
) -> tuple[np.ndarray, ...]:
    """The same head expressed on features standardised with ``new_mean``/``new_scale``.

    ``(x - m)/s = (z' * s' + m' - m)/s`` for ``z' = (x - m')/s'``, so the first layer becomes
    ``W' = W * s'/s`` (per input row) and ``b' = b + ((m' - m)/s) @ W``: identical outputs on every image.
    A continued head can then use statistics of the data it now learns from (the old ones would
    mis-scale features that the new generator moves), while starting from exactly the champion.
    """
    first, bias, *rest = weights
    ratio, shift = new_scale / scale, (new_mean - mean) / scale
    if first.ndim == 1:  # linear head: w [D], b [1]
        return (first * ratio).astype(np.float32), (bias + shift @ first).astype(np.float32), *rest
    return (first * ratio[:, None]).astype(np.float32), (bias + shift @ first).astype(np.float32), *rest


def _logits(weights: tuple[np.ndarray, ...], z: np.ndarray) -> np.ndarray:
    return Head(np.zeros(1), np.ones(1), weights, (1.0, 0.0), np.zeros(1), np.zeros((1, 1))).logits(z)


def platt(logits: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """Platt scaling with Platt's own regularised targets, ``(N+ + 1) / (N+ + 2)`` and ``1 / (N- + 2)``:
    on a small validation split that the head separates perfectly, plain logistic regression would
    fit an unbounded slope, and every P(fake) would saturate at 0 or 1."""
    from scipy.optimize import minimize

    labels = np.asarray(labels)
    positives, negatives = int(labels.sum()), int((1 - labels).sum())
    if not positives or not negatives:
        return 1.0, 0.0
    targets = np.where(labels == 1, (positives + 1) / (positives + 2), 1 / (negatives + 2))
    x = np.asarray(logits, dtype=np.float64)

    def loss(params: np.ndarray) -> tuple[float, np.ndarray]:
        a, b = params
        f = a * x + b
        p = 1 / (1 + np.exp(-np.clip(f, -50, 50)))
        value = np.sum(np.logaddexp(0, f) - targets * f)
        gradient = p - targets
        return float(value), np.array([np.sum(gradient * x), np.sum(gradient)])

    result = minimize(loss, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B")
    a, b = result.x
    return float(a), float(b)


def pca(z: np.ndarray, dims: int) -> tuple[np.ndarray, np.ndarray]:
    """The first ``dims`` principal directions ``[D, dims]`` of ``z`` and its mean."""
    centre = z.mean(axis=0)
    _, _, vt = np.linalg.svd(z - centre, full_matrices=False)
    basis = vt[:dims].T
    if basis.shape[1] < dims:  # fewer images than dimensions: pad with zeros
        basis = np.pad(basis, ((0, 0), (0, dims - basis.shape[1])))
    return basis.astype(np.float32), centre.astype(np.float32)


def describe_fit(fit: ProbeFit) -> dict[str, Any]:
    return {"best_val_roc_auc": fit.best_val_auc, "best_epoch": fit.best_epoch, **fit.counts}
