"""Where detectors live: the MLflow model registry (aliases only, no stages) and local folders.

A registered version of ``settings.model_name`` is an MLflow pyfunc model whose ``artifacts/detector``
folder is the detector (see :mod:`tasks.model.detector`). Training registers each new version with the
alias ``challenger`` and tags (``snapshot``, ``base_model``, ``profile``, ``method``, ``threshold``...);
the promotion gate moves ``champion``/``previous``. Downloads are cached per immutable version under
``<settings.home>/cache/models``. Inference tuning tags a version with ``inference`` (its chosen
InferenceSettings as JSON); the tag is read at every resolve, so a version tuned after it was cached
still gets its settings.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion

    from tasks.settings import Settings

CHALLENGER, CHAMPION = "challenger", "champion"
INFERENCE_TAG = "inference"
MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))/?$")


@dataclass(frozen=True)
class ResolvedModel:
    path: Path
    name: str | None
    version: str | None
    cache_dir: Path
    inference: str | None = None  # the version's tuned InferenceSettings (JSON), if it was tuned


def _settings(settings: Settings | None) -> Settings:
    from tasks.settings import Settings

    return settings or Settings()


def client(settings: Settings | None = None):
    from mlflow import MlflowClient

    uri = _settings(settings).mlflow_tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def use_mlflow(settings: Settings) -> None:
    """Point MLflow's process-wide fluent API at Vigil's server, for tracking and the registry alike.

    Both, always: ``mlflow.set_registry_uri`` also exports ``MLFLOW_REGISTRY_URI``, so a registry URI
    set earlier in this process or inherited from a parent would otherwise win over the tracking URI.
    """
    import mlflow

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)


def resolve_model(source: str, settings: Settings | None = None) -> ResolvedModel:
    """A local folder for ``source``: a path, ``file://``, ``models:/name@alias``, ``models:/name/N`` or any
    artifact URI MLflow can download (``runs:/...``, ``mlflow-artifacts:/...``, ``s3://...``)."""
    settings = _settings(settings)
    cache = Path(settings.home) / "cache"
    if source.startswith("file://"):
        source = source.removeprefix("file://")
    if "://" not in source and not source.startswith(("models:/", "runs:/")):
        path = Path(source).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"model folder {path} does not exist")
        return ResolvedModel(path.resolve(), None, None, cache)
    match = MODELS_URI.match(source)
    if match:
        name = match["name"]
        if match["alias"]:
            found = model_version_by_alias(name, match["alias"], settings)
        else:
            found = client(settings).get_model_version(name, match["version"])
        version = str(found.version)
        dest = cache / "models" / name / version
        return ResolvedModel(
            _download(f"models:/{name}/{version}", dest, settings),
            name,
            version,
            cache,
            found.tags.get(INFERENCE_TAG),
        )
    dest = cache / "downloads" / hashlib.sha256(source.encode()).hexdigest()[:16]
    return ResolvedModel(_download(source, dest, settings), None, None, cache)


def _download(uri: str, dest: Path, settings: Settings) -> Path:
    """Download once: a finished download is renamed into place, so a partial one is never reused."""
    import mlflow

    if dest.exists():
        return dest
    use_mlflow(settings)  # models:/ URIs are resolved through the process-wide registry URI
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".download-", dir=dest.parent))
    try:
        mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(tmp))
        try:
            tmp.rename(dest)
        except OSError:  # a concurrent download won
            pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def model_version_by_alias(name: str, alias: str, settings: Settings | None = None) -> ModelVersion:
    from mlflow.exceptions import MlflowException

    try:
        return client(settings).get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        raise LookupError(
            f"no version of registered model {name!r} has the alias {alias!r} "
            f"at {_settings(settings).mlflow_tracking_uri}"
        ) from exc


def find_alias(name: str, alias: str, settings: Settings | None = None) -> ModelVersion | None:
    """The version holding ``alias``, or None (also when the model is not registered yet)."""
    try:
        return model_version_by_alias(name, alias, settings)
    except LookupError:
        return None


def latest_version(name: str, settings: Settings | None = None) -> ModelVersion | None:
    """The newest registered version of ``name`` (the last training), or None."""
    versions = client(settings).search_model_versions(
        f"name = '{name}'", order_by=["version_number DESC"], max_results=1
    )
    return versions[0] if versions else None
