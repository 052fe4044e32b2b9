"""The model registry's aliases: the only state that says which model serves.

Vigil uses MLflow registry aliases, never stages (deprecated):

* ``challenger`` — the newest trained candidate, set by training;
* ``champion`` — the model that serves; moved only by the promotion gate (or a rollback);
* ``previous`` — the champion before the current one, so a failed deployment can roll back.

A rejected candidate keeps its version but gets the tag ``rejected=true`` with the reasons. Every
move is also written as tags on the versions involved, so the registry tells its own history.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient

    from tasks.settings import Settings

CHAMPION, CHALLENGER, PREVIOUS = "champion", "challenger", "previous"


@dataclass(frozen=True)
class AliasMove:
    """What a promotion or rollback changed, for logs and reports."""

    champion: str | None
    previous: str | None


class Registry:
    """Alias operations on one registered model."""

    def __init__(self, settings: Settings | None = None, client: MlflowClient | None = None) -> None:
        from mlflow.tracking import MlflowClient

        from tasks.settings import Settings

        settings = settings or Settings()
        self.name = settings.model_name
        self.client = client or MlflowClient(
            tracking_uri=settings.mlflow_tracking_uri, registry_uri=settings.mlflow_tracking_uri
        )

    def version(self, alias: str) -> ModelVersion | None:
        """The version an alias points to, or None when the alias (or the model) does not exist."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client.get_model_version_by_alias(self.name, alias)
        except MlflowException:
            return None

    def get(self, version: str | int) -> ModelVersion:
        return self.client.get_model_version(self.name, str(version))

    def pick(self, requested: str | None, event_extras: list[dict] | None, alias: str) -> str:
        """The version a run works on: the form's, else the newest triggering event's, else ``alias``'s."""
        if requested:
            from mlflow.exceptions import MlflowException

            try:
                return str(self.get(requested).version)
            except MlflowException as exc:
                if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
                    raise
                raise LookupError(
                    f"{self.name} has no version {requested!r}: pick a registered one"
                ) from None
        versions = [extra.get("version") for extra in event_extras or [] if extra and extra.get("version")]
        if versions:
            return str(versions[-1])
        current = self.version(alias)
        if current is None:
            raise LookupError(f"no version of {self.name} has the alias {alias!r}")
        return str(current.version)

    def aliases(self) -> dict[str, str]:
        """alias -> version for every alias of the model."""
        from mlflow.exceptions import MlflowException

        try:
            return dict(self.client.get_registered_model(self.name).aliases)
        except MlflowException:
            return {}

    def promote(self, version: str | int, reason: str) -> AliasMove:
        """Make ``version`` the champion; the old champion becomes ``previous``."""
        version = str(version)
        old = self.version(CHAMPION)
        if old is not None and old.version == version:
            return AliasMove(champion=version, previous=(self.version(PREVIOUS) or old).version)
        if old is not None:
            self.client.set_registered_model_alias(self.name, PREVIOUS, old.version)
            self.client.set_model_version_tag(self.name, old.version, "replaced_by", version)
        self.client.set_registered_model_alias(self.name, CHAMPION, version)
        self._tag(version, {"promoted_at": _now(), "promotion_reason": reason, "rejected": "false"})
        return AliasMove(champion=version, previous=old.version if old else None)

    def reject(self, version: str | int, reasons: list[str]) -> None:
        """Tag a candidate as rejected, with the reasons (the gate report has the details)."""
        self._tag(
            str(version),
            {"rejected": "true", "rejected_at": _now(), "rejection_reasons": "; ".join(reasons)[:5000]},
        )

    def rollback(self, reason: str) -> AliasMove:
        """Move ``champion`` back to ``previous`` (and drop ``previous``: there is no older fallback)."""
        current, previous = self.version(CHAMPION), self.version(PREVIOUS)
        if previous is None:
            raise LookupError(f"cannot roll back {self.name}: no version has the alias {PREVIOUS!r}")
        self.client.set_registered_model_alias(self.name, CHAMPION, previous.version)
        self.client.delete_registered_model_alias(self.name, PREVIOUS)
        if current is not None:
            self._tag(
                current.version,
                {"rolled_back": "true", "rolled_back_at": _now(), "rollback_reason": reason[:5000]},
            )
        return AliasMove(champion=previous.version, previous=None)

    def _tag(self, version: str, tags: dict[str, str]) -> None:
        for key, value in tags.items():
            self.client.set_model_version_tag(self.name, version, key, value)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
