"""Evidently 0.7, imported the one way Vigil imports it (only ever from inside a monitoring function).

Importing Evidently costs about 5 s (it loads plotly, nltk and litestar eagerly), so no module that a
DAG file or ``vigil --help`` imports may import this one at module level; ``pyproject.toml`` exempts
this module alone from the lint rule that bans ``evidently`` (and ``pandas``) at module level.

Three things happen here, before and around the import:

* ``DO_NOT_TRACK=1``: Evidently's report code never sends telemetry (only ``evidently ui`` and its
  legacy collector do), but nothing in this process should ever be able to turn it on.
* pandas 3.1 removed ``pandas.core.dtypes.common.infer_dtype_from_object``, which Evidently 0.7.23
  imports at import time (``evidently/legacy/tests/data_integrity_tests.py``) and only calls from
  its legacy ``TestColumnsType``, which Vigil does not use. The shim below puts back a minimal
  equivalent so ``import evidently`` works with the pandas Vigil pins. Delete it once Evidently
  stops importing the name.
* :func:`cheap_embedding_plot`: the embeddings-drift widget always runs scikit-learn's t-SNE (1,000
  iterations on up to 2,500 rows per side, 35-50 CPU s) only to draw a 2-D picture; inside the
  context it draws a PCA projection of at most ``rows`` per side instead (well under a second). The
  drift test itself is untouched.
"""

from __future__ import annotations

import contextlib
import os

import numpy as np
import pandas.core.dtypes.common as _pandas_common

os.environ.setdefault("DO_NOT_TRACK", "1")

if not hasattr(_pandas_common, "infer_dtype_from_object"):  # pandas >= 3.1

    def _infer_dtype_from_object(dtype):
        """The numpy scalar type of ``dtype`` (what pandas < 3.1 returned for the legacy test)."""
        if isinstance(dtype, type) and issubclass(dtype, np.generic):
            return dtype
        if isinstance(dtype, str) and hasattr(np, dtype):
            return getattr(np, dtype)
        try:
            return np.dtype(dtype).type
        except TypeError:
            return getattr(dtype, "type", np.object_)

    _pandas_common.infer_dtype_from_object = _infer_dtype_from_object

import evidently  # after the shim
import evidently.legacy.metrics.data_drift.embeddings_drift as _embeddings_widget
from evidently import DataDefinition, Dataset, Report
from evidently.legacy.calculations.stattests import ks_stat_test, wasserstein_stat_test, z_stat_test
from evidently.legacy.core import ColumnType
from evidently.metrics import EmbeddingsDrift, ValueDrift
from evidently.metrics.embeddings import ModelDriftMethod

VERSION = evidently.__version__
__all__ = [
    "VERSION",
    "ColumnType",
    "DataDefinition",
    "Dataset",
    "EmbeddingsDrift",
    "ModelDriftMethod",
    "Report",
    "ValueDrift",
    "cheap_embedding_plot",
    "ks_stat_test",
    "wasserstein_stat_test",
    "z_stat_test",
]


class _PCA2:
    """Stands in for ``sklearn.manifold.TSNE(n_components=2)`` in Evidently's embeddings widget."""

    def __init__(self, n_components: int = 2, **_ignored) -> None:
        from sklearn.decomposition import PCA

        self._pca = PCA(n_components=n_components, random_state=0)

    def fit_transform(self, x):
        return self._pca.fit_transform(np.asarray(x, dtype=float))


@contextlib.contextmanager
def cheap_embedding_plot(rows: int = 1000):
    """Within the block, the embeddings widget projects with PCA on at most ``rows`` rows per side.

    A process-wide patch of two module attributes (restored on exit); Airflow runs one task per process.
    """
    saved = (_embeddings_widget.TSNE, _embeddings_widget.SAMPLE_CONSTANT)
    _embeddings_widget.TSNE, _embeddings_widget.SAMPLE_CONSTANT = _PCA2, rows
    try:
        yield
    finally:
        _embeddings_widget.TSNE, _embeddings_widget.SAMPLE_CONSTANT = saved
