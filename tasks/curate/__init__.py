"""Curation: validate raw batches, quarantine bad images, dedupe, split and publish dataset snapshots.

``curate()`` is what the ``curate`` DAG task and ``vigil curate`` both run; see docs/curation.md.
"""

from tasks.curate.pipeline import CurationBusy, CurationError, asset_extra, curate, failed_batches_message

__all__ = ["CurationBusy", "CurationError", "asset_extra", "curate", "failed_batches_message"]
