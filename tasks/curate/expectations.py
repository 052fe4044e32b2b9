"""Batch-level data quality with Great Expectations (GX Core 1.x), run inside the curation task.

The suite lives in ``include/expectations/raw_batch.yaml`` (reviewed like code) and is loaded at
run time. It runs over the batch's whole table, quarantined images included (``rejection_code``), so
its Data Docs show the rejected share and the reasons. Each batch gets its own ephemeral GX context
(nothing is persisted by GX itself), a pandas data source with a whole-dataframe batch, a checkpoint
whose action builds a Data Docs site into a temporary folder, and the site is then uploaded to
``reports/<batch_id>/data_docs/``, rewritten to work offline (:mod:`tasks.curate.data_docs`).
``great_expectations`` is imported only here, inside functions: it takes seconds to import.
"""

from __future__ import annotations

import logging
import math
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field

from tasks.curate.data_docs import upload_site
from tasks.data.batches import LABELS
from tasks.data.snapshots import SPLITS
from tasks.settings import ConfigError, load_yaml

if TYPE_CHECKING:
    import pandas as pd

    from tasks.settings import Settings
    from tasks.storage import ObjectStore

log = logging.getLogger(__name__)

SUITE_FILE = "expectations/raw_batch.yaml"
# Values of the validation table's ``status`` column (tasks/curate/pipeline.py validation_table).
STATUSES = ("accepted", "rejected", "already_curated")


class ExpectationSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    type: str = Field(description="GX expectation name, e.g. expect_column_values_to_be_unique")
    kwargs: dict[str, Any] = {}
    meta: dict[str, Any] = {}


class SuiteSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    expectations: list[ExpectationSpec]


def suite_parameters(settings: Settings) -> dict[str, Any]:
    """Values for the suite's ``$PARAMETER`` placeholders, from the settings."""

    from tasks.curate.process import CURATION_CODES
    from tasks.images import REJECTION_CODES

    images = settings.images
    return {
        "min_side": images.min_side,
        "max_side": images.max_side,
        "max_file_bytes": images.max_file_bytes,
        "allowed_formats": list(images.allowed_formats),
        "labels": list(LABELS),
        "splits": list(SPLITS),
        "statuses": list(STATUSES),
        "rejection_codes": sorted({*REJECTION_CODES, *CURATION_CODES}),
        # GX's `mostly` for the not-rejected share; rounded down so that a ratio equal to the limit
        # passes, as it does in curation.
        "min_accepted_share": math.floor((1.0 - settings.curation.max_failure_ratio) * 1e9) / 1e9,
    }


def load_suite(settings: Settings) -> SuiteSpec:
    """The suite file, with every expectation checked by GX (a typo fails here, naming the file)."""
    path = settings.include(SUITE_FILE)
    spec = load_yaml(path, SuiteSpec)
    _gx_expectations(spec, path)
    return spec


def _import_gx():
    """great_expectations, imported quietly and without analytics."""
    os.environ["GX_ANALYTICS_ENABLED"] = "false"  # no usage statistics leave the machine
    # GX logs hundreds of INFO lines (some of its loggers are set to INFO explicitly): keep warnings.
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations

    for name in [n for n in logging.root.manager.loggerDict if n.startswith("great_expectations")]:
        logging.getLogger(name).setLevel(logging.WARNING)
    return great_expectations


def _gx_expectations(spec: SuiteSpec, path: Path) -> list:
    _import_gx()
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    expectations = []
    for i, item in enumerate(spec.expectations):
        try:
            expectations.append(
                ExpectationConfiguration(type=item.type, kwargs=item.kwargs, meta=item.meta).to_domain_obj()
            )
        except Exception as exc:  # noqa: BLE001 - GX raises several unrelated types here
            detail = " ".join(str(exc).split())
            raise ConfigError(f"{path}: expectations[{i}] ({item.type}): {detail}") from None
    return expectations


def validate_batch(
    spec: SuiteSpec,
    parameters: dict[str, Any],
    table: pd.DataFrame,
    batch_id: str,
    store: ObjectStore,
    prefix: str,
) -> dict[str, Any]:
    """Run the suite over ``table``, upload the Data Docs site under ``prefix``; JSON-able results."""
    gx = _import_gx()
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.base import ProgressBarsConfig

    with tempfile.TemporaryDirectory(prefix="vigil-datadocs-") as site_dir:
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        context.add_data_docs_site(
            site_name="batch",
            site_config={
                "class_name": "SiteBuilder",
                "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": site_dir},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            },
        )
        asset = context.data_sources.add_pandas("vigil").add_dataframe_asset("raw_batch")
        suite = context.suites.add(
            gx.ExpectationSuite(name=spec.name, expectations=_gx_expectations(spec, Path(SUITE_FILE)))
        )
        definition = context.validation_definitions.add(
            gx.ValidationDefinition(
                name=spec.name, data=asset.add_batch_definition_whole_dataframe("whole batch"), suite=suite
            )
        )
        checkpoint = context.checkpoints.add(
            gx.Checkpoint(
                name=spec.name,
                validation_definitions=[definition],
                result_format="SUMMARY",
                actions=[gx.checkpoint.UpdateDataDocsAction(name="data_docs", site_names=["batch"])],
            )
        )
        result = checkpoint.run(
            batch_parameters={"dataframe": table},
            expectation_parameters=parameters,
            run_id=RunIdentifier(run_name=batch_id),
        )
        docs_index, pages = upload_site(Path(site_dir), store, prefix)

    validation = next(iter(result.run_results.values()))
    results = [_describe(r) for r in validation.results]
    return {
        "suite": spec.name,
        "success": bool(result.success),
        "evaluated": len(results),
        "unsuccessful": sum(not r["success"] for r in results),
        "results": results,
        "data_docs": store.uri(docs_index),
        "validation_page": next((p for p in pages if p.startswith("validations/")), None),
    }


def _describe(result: Any) -> dict[str, Any]:
    config = result.expectation_config
    kwargs = {k: v for k, v in config.kwargs.items() if k != "batch_id"}
    details = result.result or {}
    described = {
        "expectation": config.type,
        "column": kwargs.pop("column", None),
        "kwargs": kwargs,
        "success": bool(result.success),
        "why": (config.meta or {}).get("why"),
    }
    for key in (
        "observed_value",
        "element_count",
        "unexpected_count",
        "unexpected_percent",
        "partial_unexpected_list",
        "partial_unexpected_counts",
    ):
        if details.get(key) is not None:
            described[key] = details[key]
    if result.exception_info and result.exception_info.get("raised_exception"):
        described["error"] = result.exception_info.get("exception_message")
    return described
