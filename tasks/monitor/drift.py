"""Drift of one window of predictions against the model version's reference, with Evidently.

Three tests, each decided by the thresholds of ``include/monitor.yaml`` (``drift``):

* **score**: the P(fake) distribution; drifting when the Kolmogorov-Smirnov p-value is at most
  ``ks_p_value`` *and* the normed Wasserstein distance is at least ``wasserstein`` (significant and
  material: on windows of thousands of rows a K-S test alone flags shifts nobody would act on, and
  Wasserstein alone is noisy on small ones);
* **verdict**: the share of ``fake`` verdicts; a two-proportion z-test p-value at most ``p_value``
  *and* a change of at least ``min_delta``;
* **embedding**: the detector's image embeddings; Evidently's domain classifier (a logistic model
  told to separate reference rows from window rows, trained on half, scored on the other half) on at
  most ``sample_rows`` window rows; drifting when its ROC AUC exceeds ``roc_auc`` (with a reference
  of fewer than 1,000 rows: the 95th percentile of 100 random classifiers' AUC, Evidently's bootstrap).

Evidently computes every statistic (:mod:`tasks.monitor.evidently_api`): its stat tests (the functions
its ``ValueDrift`` metric calls) and its embeddings drift method; this module chooses the tests,
samples, and reads the numbers back. :func:`compare` can also build the window's Evidently report
(self-contained HTML and its JSON snapshot): the same tests again, with Evidently's plots, which cost
far more than the tests (so groups of a window get numbers, the window gets the report).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

    from tasks.monitor.config import DriftPolicy

BOOTSTRAP_BELOW = 1000  # reference rows under which the embedding test uses Evidently's bootstrap
HISTOGRAM_BINS = 20
PLOT_ROWS = 1000  # rows per side in the report's embeddings picture


@dataclass(frozen=True)
class Sample:
    """What the tests need of a set of predictions (a window, a group of it, or a reference)."""

    p_fake: np.ndarray  # float [n]
    fake: np.ndarray  # bool [n]: the verdict, p_fake >= threshold
    embeddings: np.ndarray | None  # float32 [m, d] of the rows that have one (m <= n), or None

    def __len__(self) -> int:
        return len(self.p_fake)


@dataclass(frozen=True)
class Report:
    """The Evidently snapshot's two files: ``html`` (self-contained) and ``json``."""

    html: bytes
    json: bytes


def histogram(p_fake: np.ndarray) -> list[float]:
    """Share of rows per P(fake) bin of width 0.05 (what the Monitoring page draws)."""
    counts, _ = np.histogram(np.clip(p_fake, 0, 1), bins=HISTOGRAM_BINS, range=(0, 1))
    return [round(float(c) / max(len(p_fake), 1), 5) for c in counts]


def compare(
    reference: Sample,
    current: Sample,
    policy: DriftPolicy,
    *,
    seed: int = 0,
    report: bool = False,
) -> tuple[dict[str, Any], Report | None]:
    """The three tests of ``current`` against ``reference``: (results, Evidently report if asked)."""
    from tasks.monitor import evidently_api as ev

    rng = np.random.default_rng(seed)
    scores, reference_scores = _score_frame(current), _score_frame(reference)
    numeric, categorical = ev.ColumnType.Numerical, ev.ColumnType.Categorical
    ks = ev.ks_stat_test(reference_scores["p_fake"], scores["p_fake"], numeric, policy.score.ks_p_value)
    distance = ev.wasserstein_stat_test(
        reference_scores["p_fake"], scores["p_fake"], numeric, policy.score.wasserstein
    )
    z = ev.z_stat_test(reference_scores["verdict"], scores["verdict"], categorical, policy.verdict.p_value)
    ks, wasserstein, z = float(ks.drift_score), float(distance.drift_score), float(z.drift_score)

    embedding_test = _embedding_inputs(reference, current, policy, rng)
    method = None
    if isinstance(embedding_test, str):
        embedding = {"drifted": False, "skipped": embedding_test}
    else:
        current_emb, reference_emb, columns = embedding_test
        method = ev.ModelDriftMethod(
            bootstrap=len(reference_emb) < BOOTSTRAP_BELOW, threshold=policy.embedding.roc_auc
        )
        auc, drifted, _ = method(current_emb.copy(), reference_emb.copy())
        embedding = {
            "roc_auc": round(float(auc), 5),
            "threshold": policy.embedding.roc_auc if not method.bootstrap else "bootstrap",
            "rows": len(current_emb),
            "reference_rows": len(reference_emb),
            "drifted": bool(drifted),
        }
    stored = None
    if report:
        definition = ev.DataDefinition(numerical_columns=["p_fake"], categorical_columns=["verdict"])
        metrics = [
            ev.ValueDrift(column="p_fake", method="ks", threshold=policy.score.ks_p_value),
            ev.ValueDrift(column="p_fake", method="wasserstein", threshold=policy.score.wasserstein),
            ev.ValueDrift(column="verdict", method="z", threshold=policy.verdict.p_value),
        ]
        with ev.cheap_embedding_plot(PLOT_ROWS):
            snapshot = ev.Report(metrics, include_tests=True).run(
                ev.Dataset.from_pandas(scores, data_definition=definition),
                ev.Dataset.from_pandas(reference_scores, data_definition=definition),
            )
            if method is not None:  # the embeddings widget (a PCA picture) on the same sample
                emb_definition = ev.DataDefinition(embeddings={"image": columns})
                widget = ev.Report([ev.EmbeddingsDrift(embeddings_name="image", drift_method=method)]).run(
                    ev.Dataset.from_pandas(current_emb, data_definition=emb_definition),
                    ev.Dataset.from_pandas(reference_emb, data_definition=emb_definition),
                )
                _append(snapshot, widget)
        stored = Report(snapshot.get_html_str(as_iframe=False).encode(), snapshot.json().encode())
    share, reference_share = float(current.fake.mean()), float(reference.fake.mean())
    results = {
        "rows": len(current),
        "reference_rows": len(reference),
        "score": {
            "ks_p_value": round(ks, 6),
            "wasserstein": round(wasserstein, 5),
            "mean": round(float(current.p_fake.mean()), 5),
            "reference_mean": round(float(reference.p_fake.mean()), 5),
            "quantiles": [round(float(q), 4) for q in np.quantile(current.p_fake, [0.1, 0.5, 0.9])],
            "histogram": histogram(current.p_fake),
            "drifted": ks <= policy.score.ks_p_value and wasserstein >= policy.score.wasserstein,
        },
        "verdict": {
            "share": round(share, 5),
            "reference_share": round(reference_share, 5),
            "p_value": round(z, 6),
            "drifted": z <= policy.verdict.p_value
            and abs(share - reference_share) >= policy.verdict.min_delta,
        },
        "embedding": embedding,
    }
    return results, stored


def _score_frame(sample: Sample) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(
        {"p_fake": sample.p_fake.astype(float), "verdict": np.where(sample.fake, "fake", "real")}
    )


def _embedding_inputs(reference: Sample, current: Sample, policy: DriftPolicy, rng: np.random.Generator):
    """(window rows, reference rows, column names) for the embedding test, or why it cannot run."""
    import pandas as pd

    if reference.embeddings is None or not len(reference.embeddings):
        return "the reference has no embeddings"
    if current.embeddings is None or len(current.embeddings) < 50:
        have = 0 if current.embeddings is None else len(current.embeddings)
        return f"{have} rows of the window have an embedding (at least 50 needed)"
    if current.embeddings.shape[1] != reference.embeddings.shape[1]:
        return (
            f"embeddings of {current.embeddings.shape[1]} dimensions, the reference's have "
            f"{reference.embeddings.shape[1]}"
        )
    rows = current.embeddings
    if len(rows) > policy.embedding.sample_rows:
        rows = rows[np.sort(rng.choice(len(rows), policy.embedding.sample_rows, replace=False))]
    columns = [f"emb_{i}" for i in range(rows.shape[1])]
    return (
        pd.DataFrame(rows.astype(float), columns=columns),
        pd.DataFrame(reference.embeddings.astype(float), columns=columns),
        columns,
    )


def _append(snapshot, other) -> None:
    """Put ``other``'s metrics and widgets into ``snapshot``, so one report holds the window's tests.

    Evidently 0.7 has no public way to combine snapshots run on different rows (the embedding test runs on
    a sample of the window); these are the attributes ``Snapshot`` renders from, in 0.7.23 (pinned).
    """
    snapshot._metrics.update(other._metrics)
    snapshot._top_level_metrics = [*snapshot._top_level_metrics, *other._top_level_metrics]
    snapshot._widgets = [*snapshot._widgets, *other._widgets]
