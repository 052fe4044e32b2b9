"""``include/sources.yaml``: the reviewed list of sources, validated before any work.

Each entry becomes one DAG (``collect_<name>``) when enabled. A malformed file fails with a
message naming the source and the field, e.g.
``sources.yaml: sources[1] (name='mastodon_art').schedule: '61 * * * *' is not ...``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import PydanticCustomError

from tasks.collect.kinds import KINDS
from tasks.settings import Section, Settings, describe_validation_error, load_yaml

SOURCES_FILE = "sources.yaml"
PRESETS = ("@hourly", "@daily", "@weekly", "@monthly", "@quarterly", "@yearly")


class Query(Section):
    """What to look for. Each kind uses the fields it understands (see the kind's docs)."""

    terms: list[str] = Field(default_factory=list, description="Search words or phrases (X).")
    hashtags: list[str] = Field(default_factory=list, description="Hashtags, with or without '#'.")
    accounts: list[str] = Field(default_factory=list, description="Account handles, with or without '@' (X).")

    @field_validator("terms", "hashtags", "accounts")
    @classmethod
    def _clean(cls, values: list[str], info: ValidationInfo) -> list[str]:
        cleaned = [
            v.strip().lstrip({"hashtags": "#", "accounts": "@"}.get(info.field_name, "")) for v in values
        ]
        if any(not v for v in cleaned):
            raise ValueError("entries must not be empty")
        return cleaned


class Source(Section):
    """One source of images."""

    name: str = Field(
        pattern=r"^[a-z][a-z0-9_]{0,49}$",
        description="Slug (lower case, digits, '_'); the DAG is collect_<name>.",
    )
    kind: str = Field(description="One of the registered kinds: x, mastodon, folder.")
    enabled: bool = Field(True, description="Only enabled sources get a DAG.")
    schedule: str | None = Field(
        description="Cron expression or preset (@hourly, @daily, ...); null = manual only."
    )
    description: str = Field("", description="Shown in the DAG's documentation.")
    query: Query = Field(default_factory=Query)
    max_images: int = Field(100, gt=0, le=10_000, description="Most new images stored per run.")
    label_prior: Literal["fake", "real", "unknown"] = Field(
        "unknown", description="Label of images that carry no stronger evidence (folder label, provenance)."
    )
    options: Any = Field(default_factory=dict, description="Kind-specific options, validated by the kind.")

    @field_validator("kind")
    @classmethod
    def _known_kind(cls, kind: str) -> str:
        if kind not in KINDS:
            raise PydanticCustomError(
                "unknown_kind",
                "unknown source kind '{kind}'; accepted: {accepted}",
                {"kind": kind, "accepted": ", ".join(sorted(KINDS))},
            )
        return kind

    @field_validator("schedule")
    @classmethod
    def _valid_schedule(cls, schedule: str | None) -> str | None:
        if schedule is None or schedule in PRESETS:
            return schedule
        from croniter import croniter

        if len(schedule.split()) == 5 and croniter.is_valid(schedule):
            return schedule
        raise PydanticCustomError(
            "invalid_schedule",
            "'{value}' is not a cron expression (5 fields: minute hour day-of-month month day-of-week) "
            "nor a preset ({presets}); use null for manual runs only",
            {"value": schedule, "presets": ", ".join(PRESETS)},
        )

    @field_validator("options", mode="before")
    @classmethod
    def _kind_options(cls, options: Any, info: ValidationInfo) -> Any:
        kind = info.data.get("kind")
        if kind is None:  # the kind itself is invalid and already reported
            return options
        try:
            return KINDS[kind].options_model.model_validate(options or {})
        except ValidationError as exc:
            raise PydanticCustomError(
                "invalid_options", "{detail}", {"detail": describe_validation_error(exc, options)}
            ) from None

    @model_validator(mode="after")
    def _query_fits_kind(self) -> Source:
        supported = KINDS[self.kind].query_fields
        for field_name in ("terms", "hashtags", "accounts"):
            if getattr(self.query, field_name) and field_name not in supported:
                accepted = ", ".join(sorted(supported)) or "none"
                raise ValueError(
                    f"query.{field_name} is not supported by kind {self.kind!r} "
                    f"(supported query fields: {accepted})"
                )
        return self


class SourcesFile(Section):
    sources: list[Source] = Field(default_factory=list)

    @field_validator("sources")
    @classmethod
    def _unique_names(cls, sources: list[Source]) -> list[Source]:
        seen: dict[str, int] = {}
        for i, source in enumerate(sources):
            if source.name in seen:
                raise ValueError(
                    f"duplicate source name {source.name!r} (sources[{seen[source.name]}] and "
                    f"sources[{i}]); names must be unique"
                )
            seen[source.name] = i
        return sources

    def get(self, name: str) -> Source:
        for source in self.sources:
            if source.name == name:
                return source
        known = ", ".join(s.name for s in self.sources) or "none"
        raise LookupError(f"no source named {name!r} in {SOURCES_FILE}; defined sources: {known}")

    @property
    def enabled(self) -> list[Source]:
        return [s for s in self.sources if s.enabled]


def load_sources(settings: Settings | None = None) -> SourcesFile:
    """Read and validate ``<include_dir>/sources.yaml``; raises ConfigError naming source and field."""
    settings = settings or Settings()
    return load_yaml(settings.include(SOURCES_FILE), SourcesFile)
