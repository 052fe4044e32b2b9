"""Model URIs to local folders: a path, ``file://``, ``models:/name@alias``, ``models:/name/N`` or any
artifact URI MLflow downloads (``runs:/...``, ``mlflow-artifacts:/...``).

A registered version is downloaded once into ``<settings.home>/cache/models/<name>/<version>``
(versions are immutable) and renamed into place when complete, so a partial download is never used.
The version's ``inference`` tag (its tuned settings) is read at every resolve, so a version tuned
after it was cached still gets its settings. Which version an alias names is the registry's answer
(:mod:`tasks.registry`).
"""

from __future__ import annotations

import hashlib
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from tasks.registry import Registry, Tags, use_mlflow
from tasks.settings import Settings

MODELS_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))/?$")


@dataclass(frozen=True)
class ResolvedModel:
    path: Path
    name: str | None
    version: str | None
    cache_dir: Path
    inference: str | None = None  # the version's tuned InferenceSettings (JSON), if it was tuned


def resolve_model(source: str, settings: Settings | None = None) -> ResolvedModel:
    """A local folder for ``source``: a path, ``file://``, ``models:/name@alias``, ``models:/name/N`` or any
    artifact URI MLflow can download (``runs:/...``, ``mlflow-artifacts:/...``, ``s3://...``)."""
    settings = settings or Settings()
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
        registry = Registry(settings, name=name)
        found = registry.require(match["alias"]) if match["alias"] else registry.get(match["version"])
        version = str(found.version)
        dest = cache / "models" / name / version
        return ResolvedModel(
            _download(f"models:/{name}/{version}", dest, settings),
            name,
            version,
            cache,
            found.tags.get(Tags.INFERENCE),
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
