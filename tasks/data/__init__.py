"""Data contracts between the stages: raw batches (collection -> curation), dataset snapshots
(curation -> training, evaluation, the gate) and labeled frames (a snapshot or a folder, with local
files, as training and evaluation read them).

* :mod:`tasks.data.batches` — ``raw/`` objects and ``batches/`` manifests;
* :mod:`tasks.data.snapshots` — immutable, versioned ``snapshots/vNNNN/manifest.parquet``;
* :mod:`tasks.data.frames` — :class:`~tasks.data.frames.Frame`, the rows a model trains and is evaluated on.
"""
