"""Inference tuning of a registered detector version: measure candidates, pick one, record it in MLflow.

**Objective**: the highest batched throughput (validation images per second) among the *eligible*
candidates, where eligible means

* validation ROC AUC >= the baseline's AUC - ``auc_margin`` (the baseline is the safe defaults,
  :class:`InferenceSettings()`, measured first on the same images),
* p95 single-image latency <= ``max_p95_latency_ms`` (one request alone must stay interactive),
* peak added memory <= ``max_memory_mb`` when that is set;

and a candidate replaces the baseline only when its throughput is at least ``1 + min_gain`` times the
baseline's (measurement noise must not flip settings). Otherwise the safe defaults are kept.

**Where results go**: a tuning run ``tune-v<N>``, a child of the version's training run (same
experiment, tag ``mlflow.parentRunId``) or, for a version without a run, in experiment
``vigil-tuning``, holds ``inference/inference.json`` (the chosen :class:`InferenceSettings`),
``inference/tuning.json`` + ``.md`` (the comparison table with the reason each candidate lost),
the table as an MLflow table (``inference/tuning_table.json``) and metrics per candidate. The model
version gets the tags ``inference`` (the chosen settings as compact JSON: what
:meth:`Detector.load` applies), ``inference_run_id`` and ``inference_candidate``.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tasks.data.frames import snapshot_frame
from tasks.data.snapshots import VERSION_RE, list_versions
from tasks.model.artifacts import resolve_model
from tasks.registry import Registry, Tags, mlflow_client
from tasks.settings import Settings
from tasks.storage import ObjectStore
from tasks.tune.config import BASELINE, TuningConfig, load_tuning_config

if TYPE_CHECKING:
    from tasks.data.frames import Frame
    from tasks.model.card import DetectorCard, InferenceSettings
    from tasks.settings import Settings

log = logging.getLogger("vigil.tune")
STANDALONE_EXPERIMENT = "vigil-tuning"
ARTIFACT_DIR = "inference"
# Tags on the model version; INFERENCE_TAG is what loading applies (see tasks.model.artifacts).
RUN_TAG, CANDIDATE_TAG = "inference_run_id", "inference_candidate"


@dataclass
class CandidateResult:
    """One row of the comparison table."""

    name: str
    settings: dict[str, Any]
    status: str = "measured"  # chosen | lost | rejected | skipped | failed
    reason: str = ""
    load_s: float | None = None
    first_call_s: float | None = None
    throughput_ips: float | None = None
    p50_ms: float | None = None
    p95_ms: float | None = None
    peak_memory_mb: float | None = None
    val_roc_auc: float | None = None
    max_score_change: float | None = None  # largest |P(fake) - baseline's P(fake)| on the validation images
    verdict_changes: int | None = (
        None  # val images whose verdict at the model's threshold differs from the baseline's
    )

    @property
    def measured(self) -> bool:
        return self.throughput_ips is not None


@dataclass
class TuningResult:
    """What tuning measured and chose; :meth:`summary` is the JSON-serialisable form (Airflow XCom, CLI)."""

    model_name: str
    version: str
    snapshot: str
    data_note: str
    images: int
    config: TuningConfig
    rows: list[CandidateResult]
    chosen: InferenceSettings
    chosen_name: str
    run_id: str | None = None
    hardware: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def baseline(self) -> CandidateResult:
        return self.rows[0]

    @property
    def chosen_row(self) -> CandidateResult:
        return next(r for r in self.rows if r.name == self.chosen_name)

    @property
    def speedup(self) -> float | None:
        """Chosen throughput / baseline throughput (both measured in this run)."""
        base, chosen = self.baseline.throughput_ips, self.chosen_row.throughput_ips
        return chosen / base if base and chosen else None

    def summary(self) -> dict[str, Any]:
        return {
            "model": self.model_name,
            "version": self.version,
            "snapshot": self.snapshot,
            "data": self.data_note,
            "images": self.images,
            "chosen_candidate": self.chosen_name,
            "chosen": self.chosen.model_dump(),
            "throughput_ratio_vs_baseline": self.speedup,
            "objective": objective_text(self.config),
            "run_id": self.run_id,
            "hardware": self.hardware,
            "seconds": round(self.seconds, 1),
            "table": [asdict(r) for r in self.rows],
        }

    def markdown(self) -> str:
        return markdown_table(self)


def objective_text(config: TuningConfig) -> str:
    memory = f", peak added memory <= {config.max_memory_mb:g} MB" if config.max_memory_mb else ""
    return (
        f"highest throughput among candidates with val ROC AUC >= baseline - {config.auc_margin:g}, "
        f"p95 single-image latency <= {config.max_p95_latency_ms:g} ms{memory}; it must beat the baseline's "
        f"throughput by at least {config.min_gain:.0%}, else the safe defaults are kept"
    )


# -- the task ---------------------------------------------------------------------------------------


def tune_inference(
    model_uri: str,
    settings: Settings | None = None,
    *,
    snapshot: str | None = None,
    config: TuningConfig | str | Path | None = None,
) -> TuningResult:
    """Benchmark the configured inference settings of a registry version, choose one, record it in MLflow.

    ``model_uri``: ``models:/name/N`` or ``models:/name@alias``. ``snapshot``: whose val split to measure
    on; default: the snapshot the model was trained on (its card), else the latest one.
    """
    import torch

    from tasks.model.card import detector_folder, read_card

    settings = settings or Settings()
    if not isinstance(config, TuningConfig):
        config = load_tuning_config(config, settings)
    resolved = resolve_model(model_uri, settings)
    if resolved.version is None:
        raise ValueError(
            f"inference tuning needs a registered model version (models:/<name>/<version> or "
            f"models:/<name>@<alias>), got {model_uri!r}"
        )
    folder = detector_folder(resolved.path)
    card = read_card(folder)
    frame, snapshot_version, data_note = validation_frame(card, settings, snapshot)
    images, labels = sample(frame, config.max_images)
    log.info(
        "tuning %s version %s on %d validation images of snapshot %s (%s)",
        resolved.name,
        resolved.version,
        len(images),
        snapshot_version,
        data_note,
    )

    started = time.perf_counter()
    threads = torch.get_num_threads()
    try:
        rows = measure_candidates(folder, card, config, images, labels, started)
    finally:
        torch.set_num_threads(threads)  # candidates change the process-wide thread count
    chosen_name = choose(rows, config)
    chosen_row = next(r for r in rows if r.name == chosen_name)
    from tasks.model.card import InferenceSettings

    result = TuningResult(
        model_name=resolved.name,
        version=resolved.version,
        snapshot=snapshot_version,
        data_note=data_note,
        images=len(images),
        config=config,
        rows=rows,
        chosen=InferenceSettings.model_validate(chosen_row.settings),
        chosen_name=chosen_name,
        hardware=hardware(threads),
        seconds=time.perf_counter() - started,
    )
    result.run_id = record(result, settings)
    log.info(
        "chose %r for %s version %s: %s", chosen_name, resolved.name, resolved.version, chosen_row.reason
    )
    return result


def tune_cascade(
    settings: Settings | None = None,
    *,
    snapshot: str | None = None,
    config: TuningConfig | str | Path | None = None,
) -> dict[str, Any]:
    """Choose the cascade's band on validation data and record it on the VLM version.

    Both serving champions (``settings.model_name`` and ``settings.vlm_model_name`` at the serving alias)
    score the same validation images (the probe's training snapshot, or ``snapshot``);
    :func:`tasks.model.cascade.choose_band` picks the band for ``config.cascade`` (least VLM share
    within ``max_auc_loss`` of the better model alone, at most ``max_vlm_share``). The band goes to the
    VLM version's ``cascade_band`` tag (JSON; ``null`` = send nothing), which serving applies over
    ``serving.cascade_band``. Returns the choice with both models' AUC and the share sent.
    """
    from tasks.model.cascade import choose_band
    from tasks.model.detector import Detector

    settings = settings or Settings()
    if not isinstance(config, TuningConfig):
        config = load_tuning_config(config, settings)
    alias = settings.serving.model_alias
    first = Detector.load(f"models:/{settings.model_name}@{alias}", settings=settings)
    second = Detector.load(f"models:/{settings.vlm_model_name}@{alias}", settings=settings)
    frame, snapshot_version, data_note = validation_frame(first.card, settings, snapshot)
    images, labels = sample(frame, config.max_images)
    objective = config.cascade
    choice = choose_band(
        labels,
        first.score(images),
        second.score(images),
        max_share=objective.max_vlm_share,
        max_auc_loss=objective.max_auc_loss,
    )
    band = [round(v, 6) for v in choice["band"]] if choice["band"] else None
    Registry(settings, name=second.name).tag(second.version, {Tags.CASCADE_BAND: json.dumps(band)})
    result = {
        **choice,
        "band": band,
        "first": {"name": first.name, "version": first.version},
        "second": {"name": second.name, "version": second.version},
        "snapshot": snapshot_version,
        "data_note": data_note,
        "images": len(images),
        "objective": objective.model_dump(),
    }
    log.info(
        "cascade band for %s v%s -> %s v%s: %s (sends %.0f%% of %d validation images to the VLM; AUC %.3f, "
        "probe alone %.3f, VLM alone %.3f)",
        first.name,
        first.version,
        second.name,
        second.version,
        band,
        100 * choice["share"],
        len(images),
        choice["auc"],
        choice["first_auc"],
        choice["second_auc"],
    )
    return result


def validation_frame(card: DetectorCard, settings: Settings, snapshot: str | None) -> tuple[Frame, str, str]:
    """The val split of ``snapshot``, else of the model's training snapshot, else of the latest snapshot."""

    store = ObjectStore.from_settings(settings)
    known = list_versions(store)
    if snapshot:
        version, note = snapshot, "snapshot asked for"
    elif card.snapshot and VERSION_RE.match(card.snapshot) and card.snapshot in known:
        version, note = card.snapshot, "the snapshot the model was trained on"
    else:
        if not known:
            raise LookupError(
                f"no dataset snapshot in {store.url} to measure AUC on; tuning needs a val split"
            )
        version = known[-1]
        note = f"latest snapshot (the model's training snapshot {card.snapshot!r} is not in {store.url})"
    frame = snapshot_frame(store, version, ("val",), Path(settings.home) / "cache" / "images")
    labels = set(frame.labels.tolist())
    if labels != {0, 1}:
        raise ValueError(
            f"the val split of snapshot {version} has {len(frame)} labeled images "
            f"({frame.counts() or 'none'}); tuning needs real and fake ones to measure ROC AUC"
        )
    return frame, version, note


def sample(frame: Frame, max_images: int) -> tuple[list, np.ndarray]:
    """At most ``max_images`` images, a fixed random sample (same images for every candidate and every run)."""
    if len(frame) > max_images:
        picked = np.sort(np.random.default_rng(0).choice(len(frame), size=max_images, replace=False))
        frame = frame.where(np.isin(np.arange(len(frame)), picked))
    return frame.images(), frame.labels


# The inference settings each family applies (the others would change nothing: they are skipped, with why).
FAMILY_FIELDS = {
    "vlm": {"device", "dtype", "threads", "batch_size", "max_pixels", "quantization", "compile"},
    "probe": {"threads", "batch_size"},
}


def candidate_settings(
    card: DetectorCard, config: TuningConfig
) -> list[tuple[str, InferenceSettings | None, str]]:
    """(name, settings, skip reason) for the baseline and each configured candidate."""
    from tasks.model.card import InferenceSettings

    out: list[tuple[str, InferenceSettings | None, str]] = [(BASELINE, InferenceSettings(), "")]
    defaults = InferenceSettings().model_dump()
    for candidate in config.candidates:
        trained_pixels = card.images.max_pixels if card.family == "vlm" else None
        inference = candidate.settings(trained_pixels)
        changed = {k for k, v in inference.model_dump().items() if v != defaults[k]}
        foreign = sorted(changed - FAMILY_FIELDS[card.family])
        if foreign:
            skip = f"{', '.join(foreign)}: not applicable to the {card.family} family"
        elif card.family == "vlm":
            from tasks.model.vlm import _resolve_device
            from tasks.tune.measure import dtype_support

            skip = dtype_support(inference.dtype, _resolve_device(inference).type) or ""
            if inference.max_pixels is not None and inference.max_pixels >= trained_pixels:
                skip = (
                    f"max_pixels {inference.max_pixels} is not below the trained {trained_pixels}: no change"
                )
        else:
            skip = ""
        out.append((candidate.name, inference, skip))
    return out


def measure_candidates(
    folder: Path, card: DetectorCard, config: TuningConfig, images: list, labels: np.ndarray, started: float
) -> list[CandidateResult]:
    import torch

    from tasks.tune.measure import measure

    threads = torch.get_num_threads()
    rows: list[CandidateResult] = []
    baseline_scores = None
    for name, inference, skip in candidate_settings(card, config):
        row = CandidateResult(name, inference.model_dump())
        rows.append(row)
        spent = time.perf_counter() - started
        if skip:
            row.status, row.reason = "skipped", skip
            continue
        if name != BASELINE and spent > config.time_budget_s:
            row.status, row.reason = (
                "skipped",
                f"time budget of {config.time_budget_s:g} s spent ({spent:.0f} s)",
            )
            continue
        torch.set_num_threads(threads)  # each candidate starts from the process's own thread count
        try:
            m = measure(
                folder,
                inference,
                images,
                labels,
                latency_requests=config.latency_requests,
                throughput_rounds=config.throughput_rounds,
            )
        except Exception as exc:
            if name == BASELINE:
                raise
            row.status, row.reason = "failed", f"{type(exc).__name__}: {exc}"[:300]
            log.warning("candidate %s failed: %s", name, row.reason)
            continue
        baseline_scores = m.scores if baseline_scores is None else baseline_scores
        row.load_s, row.first_call_s, row.throughput_ips = m.load_s, m.first_call_s, m.throughput_ips
        row.p50_ms, row.p95_ms = m.p50_ms, m.p95_ms
        row.peak_memory_mb, row.val_roc_auc = m.peak_memory_mb, m.val_roc_auc
        row.max_score_change = float(np.abs(m.scores - baseline_scores).max())
        row.verdict_changes = int(((m.scores >= card.threshold) != (baseline_scores >= card.threshold)).sum())
        log.info(
            "%-16s %8.1f img/s  p50 %7.1f ms  p95 %7.1f ms  +%6.1f MB  AUC %s",
            name,
            m.throughput_ips,
            m.p50_ms,
            m.p95_ms,
            m.peak_memory_mb,
            "n/a" if m.val_roc_auc is None else f"{m.val_roc_auc:.4f}",
        )
    return rows


def choose(rows: list[CandidateResult], config: TuningConfig) -> str:
    """Apply the objective (module docstring); fills status and reason of every measured row."""
    baseline = rows[0]
    floor = (baseline.val_roc_auc or 0.0) - config.auc_margin
    eligible = []
    for row in rows:
        if not row.measured:
            continue
        problems = []
        if row.val_roc_auc is None or row.val_roc_auc < floor:
            problems.append(
                f"val ROC AUC {row.val_roc_auc:.4f} < baseline {baseline.val_roc_auc:.4f} - margin "
                f"{config.auc_margin:g}"
                if row.val_roc_auc is not None
                else "val ROC AUC undefined"
            )
        if row.p95_ms > config.max_p95_latency_ms:
            problems.append(f"p95 latency {row.p95_ms:.1f} ms > bound {config.max_p95_latency_ms:g} ms")
        if config.max_memory_mb and (row.peak_memory_mb or float("inf")) > config.max_memory_mb:
            problems.append(
                f"peak added memory {_fmt(row.peak_memory_mb, '.0f')} MB > bound {config.max_memory_mb:g} MB"
            )
        if problems and row is not baseline:
            row.status, row.reason = "rejected", "; ".join(problems)
        else:
            row.reason = "; ".join(problems)
            eligible.append(row)
    needed = baseline.throughput_ips * (1 + config.min_gain)
    contenders = [r for r in eligible if r is not baseline and r.throughput_ips >= needed]
    winner = max(contenders, key=lambda r: (r.throughput_ips, -r.p95_ms)) if contenders else baseline
    for row in eligible:
        if row is winner:
            continue
        row.status = "lost"
        if row is baseline:
            row.reason = f"{winner.name} is {winner.throughput_ips / baseline.throughput_ips:.2f}x faster"
        elif row.throughput_ips < needed:
            row.reason = (
                f"throughput {row.throughput_ips:.1f} img/s is not {config.min_gain:.0%} above "
                f"the baseline's {baseline.throughput_ips:.1f}"
            )
        else:
            row.reason = (
                f"throughput {row.throughput_ips:.1f} img/s < {winner.name}'s {winner.throughput_ips:.1f}"
            )
    winner.status = "chosen"
    if winner is baseline:
        note = f" (the baseline itself misses: {baseline.reason})" if baseline.reason else ""
        winner.reason = f"no candidate is eligible and {config.min_gain:.0%} faster: safe defaults kept{note}"
    else:
        winner.reason = (
            f"highest eligible throughput: {winner.throughput_ips:.1f} img/s, "
            f"{winner.throughput_ips / baseline.throughput_ips:.2f}x the baseline"
        )
    return winner.name


def hardware(threads: int) -> dict[str, Any]:
    import torch

    return {
        "cpu_count": os.cpu_count(),
        "torch_threads": threads,
        "cuda": torch.cuda.is_available(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "machine": platform.machine(),
        "torch": torch.__version__,
    }


# -- reporting ---------------------------------------------------------------------------------------


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def markdown_table(result: TuningResult) -> str:
    lines = [
        f"Inference tuning of {result.model_name} version {result.version} on {result.images} val images of "
        f"snapshot {result.snapshot} ({result.hardware.get('cpu_count')} CPUs, "
        f"{'CUDA' if result.hardware.get('cuda') else 'no GPU'}), {result.seconds:.0f} s.",
        f"Objective: {objective_text(result.config)}.",
        "",
        "| candidate | status | throughput img/s | p50 ms | p95 ms | peak +MB | load s | first call s "
        "| val AUC | max Δp | verdicts changed | reason |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in result.rows:
        lines.append(
            f"| {r.name} | {r.status} | {_fmt(r.throughput_ips, '.1f')} | {_fmt(r.p50_ms, '.1f')} | "
            f"{_fmt(r.p95_ms, '.1f')} | {_fmt(r.peak_memory_mb, '.0f')} | {_fmt(r.load_s, '.2f')} | "
            f"{_fmt(r.first_call_s, '.2f')} | {_fmt(r.val_roc_auc, '.4f')} | "
            f"{_fmt(r.max_score_change, '.4f')} | {_fmt(r.verdict_changes, 'd')} | {r.reason} |"
        )
    ratio = result.speedup
    lines += [
        "",
        f"Chosen: **{result.chosen_name}** {result.chosen.model_dump_json()}"
        + (f"; throughput {ratio:.2f}x the baseline's." if ratio else "."),
    ]
    return "\n".join(lines)


def record(result: TuningResult, settings: Settings) -> str:
    """Log the tuning run (artifacts, table, metrics) and tag the model version; returns the run id."""
    import pandas as pd

    registry = mlflow_client(settings)  # the tuning run (tracking); the version's tags go through Registry
    version = Registry(settings, name=result.model_name).get(result.version)
    tags = {
        "vigil.stage": "tuning",
        "vigil.model_name": result.model_name,
        "vigil.model_version": result.version,
        "vigil.snapshot": result.snapshot,
    }
    if version.run_id:
        tags["mlflow.parentRunId"] = version.run_id
        experiment_id = registry.get_run(version.run_id).info.experiment_id
    else:
        experiment = registry.get_experiment_by_name(STANDALONE_EXPERIMENT)
        experiment_id = (
            experiment.experiment_id if experiment else registry.create_experiment(STANDALONE_EXPERIMENT)
        )
    run = registry.create_run(experiment_id, run_name=f"tune-v{result.version}", tags=tags)
    run_id = run.info.run_id
    try:
        from mlflow.entities import Metric, Param

        now = int(time.time() * 1000)
        params = {
            "model_version": result.version,
            "snapshot": result.snapshot,
            "images": result.images,
            "chosen_candidate": result.chosen_name,
            "objective": objective_text(result.config),
            **{f"config.{k}": v for k, v in result.config.model_dump(exclude={"candidates"}).items()},
        }
        metrics = {"throughput_ratio_vs_baseline": result.speedup or 0.0, "tuning_seconds": result.seconds}
        for row in result.rows:
            for key in ("throughput_ips", "p50_ms", "p95_ms", "peak_memory_mb", "val_roc_auc"):
                value = getattr(row, key)
                if value is not None:
                    metrics[f"{row.name}.{key}"] = float(value)
        registry.log_batch(
            run_id,
            metrics=[Metric(k, v, now, 0) for k, v in metrics.items()],
            params=[Param(k, str(v)[:6000]) for k, v in params.items()],
        )
        summary = result.summary() | {"run_id": run_id}
        registry.log_text(run_id, result.chosen.model_dump_json(indent=2), f"{ARTIFACT_DIR}/inference.json")
        registry.log_text(run_id, json.dumps(summary, indent=2), f"{ARTIFACT_DIR}/tuning.json")
        registry.log_text(run_id, result.markdown(), f"{ARTIFACT_DIR}/tuning.md")
        table = pd.DataFrame([{**asdict(r), "settings": json.dumps(r.settings)} for r in result.rows])
        registry.log_table(run_id, table, f"{ARTIFACT_DIR}/tuning_table.json")
    except Exception:
        registry.set_terminated(run_id, "FAILED")
        raise
    registry.set_terminated(run_id, "FINISHED")
    Registry(settings, name=result.model_name).tag(
        result.version,
        {
            Tags.INFERENCE: result.chosen.model_dump_json(),
            Tags.INFERENCE_RUN: run_id,
            Tags.INFERENCE_CANDIDATE: result.chosen_name,
        },
    )
    return run_id
