"""The MLflow model registry: the only code in Vigil that reads or writes registered versions.

Vigil uses registry aliases, never stages (deprecated):

* ``challenger`` — the newest trained candidate, set by training (:meth:`Registry.register`);
* ``champion`` — the model that serves; moved only by the promotion gate (or a rollback);
* ``previous`` — the champion before the current one, so a failed deployment can roll back.

A rejected candidate keeps its version but gets the tag ``rejected=true`` with the reasons. Every
move is also written as tags on the versions involved, so the registry tells its own history. Alias
and tag names are defined here, once (:data:`CHAMPION`, :class:`Tags`).

Resolving a version to a local folder (download and cache) is another concern:
:mod:`tasks.model.artifacts`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from tasks.errors import PermanentError
from tasks.settings import Settings

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"
ALIASES = (CHAMPION, CHALLENGER, PREVIOUS)


class UnknownVersionError(PermanentError, LookupError):
    """A version (or alias) asked for by a person or a config does not exist: retrying cannot help."""


class Tags:
    """Model-version tag names (what training, the gate, tuning and deployment write on a version)."""

    SNAPSHOT = "snapshot"  # the dataset snapshot the version was trained on
    PROFILE = "profile"
    METHOD = "method"
    THRESHOLD = "threshold"
    INFERENCE = "inference"  # tuned InferenceSettings as JSON: what Detector.load applies
    INFERENCE_RUN = "inference_run_id"
    INFERENCE_CANDIDATE = "inference_candidate"
    CASCADE_BAND = "cascade_band"  # on a VLM version: the tuned band [low, high) as JSON (null: none)
    GATE_DECISION = "gate_decision"
    GATE_REPORT = "gate_report"
    GATE_OVERRIDE_REASON = "gate_override_reason"  # promoted although the gate rejected it: why
    GATE_OVERRIDE_BY = "gate_override_by"  # ... and who (the Airflow user who triggered the override)
    REJECTED = "rejected"
    REJECTION_REASONS = "rejection_reasons"
    ROLLED_BACK = "rolled_back"
    REPLACED_BY = "replaced_by"


def use_mlflow(settings: Settings) -> None:
    """Point MLflow's process-wide fluent API at Vigil's server, for tracking and the registry alike.

    Both, always: ``mlflow.set_registry_uri`` also exports ``MLFLOW_REGISTRY_URI``, so a registry URI
    set earlier in this process or inherited from a parent would otherwise win over the tracking URI.
    """
    import mlflow

    mlflow.set_tracking_uri(settings.mlflow_tracking_uri)
    mlflow.set_registry_uri(settings.mlflow_tracking_uri)


def mlflow_client(settings: Settings) -> MlflowClient:
    """A client of Vigil's MLflow server (tracking and registry on the same server)."""
    from mlflow.tracking import MlflowClient

    uri = settings.mlflow_tracking_uri
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


@dataclass(frozen=True)
class AliasMove:
    """What a promotion or rollback changed, for logs and reports."""

    champion: str | None
    previous: str | None


class Registry:
    """Versions, aliases and tags of one registered model (``settings.model_name``)."""

    def __init__(
        self, settings: Settings | None = None, client: MlflowClient | None = None, name: str | None = None
    ) -> None:
        settings = settings or Settings()
        self.settings = settings
        self.name = name or settings.model_name
        self.client = client or mlflow_client(settings)

    # -- reading ----------------------------------------------------------------------------------
    def version(self, alias: str) -> ModelVersion | None:
        """The version an alias points to, or None when the alias (or the model) does not exist."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version_by_alias(self.name, alias)
        except MlflowException:
            return None

    def require(self, alias: str) -> ModelVersion:
        """The version an alias points to; LookupError naming the server when there is none."""
        found = self.version(alias)
        if found is None:
            raise UnknownVersionError(
                f"no version of registered model {self.name!r} has the alias {alias!r} "
                f"at {self.settings.mlflow_tracking_uri}"
            )
        return found

    def get(self, version: str | int) -> ModelVersion:
        return self.client.get_model_version(self.name, str(version))

    def latest(self) -> ModelVersion | None:
        """The newest registered version (the last training), or None."""
        versions = self.versions(max_results=1)
        return versions[0] if versions else None

    def versions(self, max_results: int = 50) -> list[ModelVersion]:
        """The newest registered versions, newest first ([] when the model is not registered yet)."""
        return self.client.search_model_versions(
            f"name = '{self.name}'", order_by=["version_number DESC"], max_results=max_results
        )

    def aliases(self) -> dict[str, str]:
        """alias -> version for every alias of the model ({} when the model is not registered yet)."""
        from mlflow.exceptions import MlflowException

        try:
            return {alias: str(v) for alias, v in self.client.get_registered_model(self.name).aliases.items()}
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return {}
            raise

    def pick(self, requested: str | None, event_extras: list[dict] | None, alias: str) -> str:
        """The version a run works on: the form's, else the newest triggering event's, else ``alias``'s."""
        if requested:
            from mlflow.exceptions import MlflowException

            try:
                return str(self.get(requested).version)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                raise UnknownVersionError(
                    f"{self.name} has no version {requested!r}: pick a registered one"
                ) from None
        versions = [extra.get("version") for extra in event_extras or [] if extra and extra.get("version")]
        if versions:
            return str(versions[-1])
        return str(self.require(alias).version)

    # -- writing ----------------------------------------------------------------------------------
    def register(self, model_uri: str, tags: dict[str, str], description: str) -> str:
        """A new version from a logged model, described, tagged and aliased ``challenger``; its number."""
        import mlflow

        use_mlflow(self.settings)
        registered = mlflow.register_model(model_uri, self.name, tags=tags)
        version = str(registered.version)
        self.client.update_model_version(self.name, version, description=description)
        self.client.set_registered_model_alias(self.name, CHALLENGER, version)
        return version

    def tag(self, version: str | int, tags: dict[str, Any]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(self.name, str(version), key, str(value))

    def promote(self, version: str | int, reason: str) -> AliasMove:
        """Make ``version`` the champion; the old champion becomes ``previous``."""
        version = str(version)
        old = self.version(CHAMPION)
        if old is not None and old.version == version:
            return AliasMove(champion=version, previous=(self.version(PREVIOUS) or old).version)
        if old is not None:
            self.client.set_registered_model_alias(self.name, PREVIOUS, old.version)
            self.tag(old.version, {Tags.REPLACED_BY: version})
        self.client.set_registered_model_alias(self.name, CHAMPION, version)
        self.tag(version, {"promoted_at": _now(), "promotion_reason": reason[:5000], Tags.REJECTED: "false"})
        return AliasMove(champion=version, previous=old.version if old else None)

    def reject(self, version: str | int, reasons: list[str]) -> None:
        """Tag a candidate as rejected, with the reasons (the gate report has the details)."""
        self.tag(
            version,
            {Tags.REJECTED: "true", "rejected_at": _now(), Tags.REJECTION_REASONS: "; ".join(reasons)[:5000]},
        )

    def rollback(self, reason: str) -> AliasMove:
        """Move ``champion`` back to ``previous`` (and drop ``previous``: there is no older fallback)."""
        current, previous = self.version(CHAMPION), self.version(PREVIOUS)
        if previous is None:
            raise LookupError(f"cannot roll back {self.name}: no version has the alias {PREVIOUS!r}")
        self.client.set_registered_model_alias(self.name, CHAMPION, previous.version)
        self.client.delete_registered_model_alias(self.name, PREVIOUS)
        if current is not None:
            self._rolled_back(current.version, reason)
        return AliasMove(champion=previous.version, previous=None)

    def withdraw_champion(self, version: str | int, reason: str) -> None:
        """Remove the ``champion`` alias from a failed first deployment (there is no previous version):
        serving keeps what it has, and nothing claims the failed version is the champion."""
        self.client.delete_registered_model_alias(self.name, CHAMPION)
        self._rolled_back(str(version), reason)

    def _rolled_back(self, version: str, reason: str) -> None:
        self.tag(
            version, {Tags.ROLLED_BACK: "true", "rolled_back_at": _now(), "rollback_reason": reason[:5000]}
        )

    def run_experiment(self, run_id: str) -> str | None:
        """The experiment id of a version's run (for links into the MLflow UI), or None."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_run(run_id).info.experiment_id
        except MlflowException:
            return None


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
