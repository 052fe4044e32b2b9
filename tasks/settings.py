"""One typed settings model for every stage, container and mode.

Values come from (highest first) keyword arguments, environment variables (``VIGIL_*``, nested
sections with ``__``, e.g. ``VIGIL_CURATION__MAX_FAILURE_RATIO=0.2``), ``include/vigil.yaml``, and the
defaults below. Secrets are only ever read from the environment (or passed in from an Airflow
connection by the DAG): they have no YAML or default value.

Reviewed, versioned configuration files (``include/sources.yaml``, ``include/model_config.yaml``,
``include/gate.yaml``) are pydantic models too and are loaded with :func:`load_yaml`, whose error
names the file and the offending field.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from tasks.errors import PermanentError

PACKAGE_ROOT = Path(__file__).resolve().parent
# In a checkout `include/` sits next to `tasks/`; images copy it and set VIGIL_INCLUDE_DIR.
DEFAULT_INCLUDE_DIR = PACKAGE_ROOT.parent / "include"


class ConfigError(PermanentError, ValueError):
    """A configuration file or value is invalid; the message names the file and the field."""


class Section(BaseModel):
    """Base of every configuration model (settings sections, model config, sources, gate policy, tuning):
    unknown keys are errors, so a typo cannot be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class DownloadSettings(Section):
    """Limits for every URL fetched by Vigil (collectors and the serving URL input)."""

    max_bytes: int = Field(20_000_000, gt=0, description="Largest body accepted, in bytes.")
    timeout_s: float = Field(20.0, gt=0, description="Connect and read timeout per request.")
    retries: int = Field(3, ge=0, description="Retries on timeouts, 429 and 5xx, with exponential backoff.")
    backoff_s: float = Field(1.0, ge=0, description="First backoff delay; doubles at each retry.")
    politeness_delay_s: float = Field(
        1.0, ge=0, description="Minimum delay between two requests to one host."
    )
    max_wait_s: float = Field(
        300.0,
        ge=0,
        description="Longest wait a server may ask for (Retry-After, rate-limit reset); longer fails.",
    )
    allow_private_networks: bool = Field(
        False,
        description="Allow private, loopback and link-local addresses (tests and closed networks only).",
    )
    user_agent: str = "VigilBot/0.1 (+https://github.com/vigil-detector/vigil)"


class ImageSettings(Section):
    """What an acceptable image is, for curation and for serving alike."""

    allowed_formats: tuple[str, ...] = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")
    max_file_bytes: int = Field(20_000_000, gt=0)
    min_side: int = Field(32, gt=0, description="Smallest accepted width or height, in pixels.")
    max_side: int = Field(12_000, gt=0, description="Largest accepted width or height, in pixels.")
    max_pixels: int = Field(50_000_000, gt=0, description="Decompression-bomb guard: width x height.")
    min_pixel_std: float = Field(
        2.0, ge=0, description="Images whose pixel standard deviation is lower are near-constant."
    )
    animated: Literal["first_frame", "reject"] = Field(
        "first_frame", description="Animated GIF/WebP/PNG: keep the first frame, or reject the file."
    )


class CurationSettings(Section):
    """Validation thresholds and dataset splitting."""

    max_failure_ratio: float = Field(
        0.5,
        ge=0,
        le=1,
        description="A batch with a larger share of rejected images fails and publishes nothing.",
    )
    split_ratios: dict[Literal["train", "val", "test"], float] = {"train": 0.8, "val": 0.1, "test": 0.1}
    near_duplicate_distance: int = Field(
        4, ge=0, le=32, description="Max Hamming distance of 64-bit pHashes."
    )
    workers: int = Field(
        0, ge=0, description="Processes decoding images in parallel; 0 means one per CPU core."
    )
    lock_wait_s: float = Field(
        600.0,
        ge=0,
        description="How long a curation waits for another one on the same store to finish before "
        "giving up with a message (0: give up at once).",
    )
    lock_ttl_s: float = Field(
        120.0,
        ge=5,
        description="Lease of the store's curation lock; the holder renews it every third of this, so a "
        "killed holder blocks others at most this long (at once on the same host: its pid is dead).",
    )
    temp_grace_s: float = Field(
        3600.0,
        ge=0,
        description="Hidden temporary files (.tmp-*) of a local store older than this are leftovers of a "
        "killed writer; curation removes them under the prefixes it writes.",
    )

    @model_validator(mode="after")
    def _ratios_sum_to_one(self) -> CurationSettings:
        if abs(sum(self.split_ratios.values()) - 1.0) > 1e-6:
            raise ValueError(f"split_ratios must sum to 1, got {self.split_ratios}")
        return self


class TrainingSettings(Section):
    """How and when the training entry point is launched."""

    launcher: Literal["local", "docker"] = Field(
        "local",
        description="local: a subprocess in this venv; docker: DockerOperator with the trainer image.",
    )
    trainer_image: str = "vigil-trainer:latest"
    docker_network: str = "vigil"
    docker_url: str = "unix://var/run/docker.sock"
    gpus: int = Field(-1, description="GPUs requested by the docker launcher; -1 means all.")
    shm_size: str = "8g"
    min_new_images: int = Field(
        50, ge=0, description="Train on a new snapshot only when it adds this many images."
    )
    model_config_file: str = Field(
        "model_config.yaml", description="File under include/ with the training setup."
    )
    experiment: str = Field("vigil-training", description="MLflow experiment of the training runs.")
    git_commit: str | None = Field(
        None,
        description="Code version recorded on training runs "
        "(mlflow.source.git.commit). The trainer image sets it from its build argument "
        "VIGIL_GIT_COMMIT (images hold no .git); unset or empty: the checkout's git HEAD.",
    )
    cpu_threads: int | None = Field(
        1,
        ge=1,
        description="torch threads when training on CPU; 1 avoids the heavy "
        "slow-down of oversubscribed cores on a shared machine; None = torch's default.",
    )
    gpu_pool: str = Field(
        "gpu", description="Airflow pool of the docker launcher (create it with one slot per GPU host)."
    )
    work_volume: str = Field(
        "vigil-trainer-work",
        description="Docker volume mounted at /vigil in the trainer "
        "container: job folders with checkpoints, so a restarted job resumes.",
    )
    hf_cache_volume: str = Field(
        "vigil-hf-cache",
        description="Docker volume with the Hugging Face cache "
        "(base model weights), mounted at /vigil/hf-cache in the trainer container.",
    )
    deadline_minutes: float = Field(
        480.0,
        gt=0,
        description="Deadline alert: a train_detector run still unfinished this many minutes after it "
        "was queued is marked 'Deadline missed' in the Airflow UI and logged by the triggerer.",
    )


SCOPES = ("detect", "feedback", "relabel", "reload", "review")
Scope = Literal["detect", "feedback", "relabel", "reload", "review"]


class ApiToken(Section):
    """One credential of the detection API. Only the SHA-256 of the token is configured (never the token);
    ``vigil serve-token NAME --scopes ...`` mints one and prints its entry."""

    name: str = Field(
        pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="Who holds it (logs, rate limits, claims)."
    )
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Hex SHA-256 of the token.")
    scopes: frozenset[Scope] = Field(
        description="detect, feedback: use the API (needed only where anonymous_scopes lacks them); "
        "relabel: feedback becomes a trusted label; reload: POST /admin/reload; review: decide claims."
    )


class RateLimit(Section):
    """A token bucket per client: ``burst`` requests at once, refilled at ``per_s`` per second."""

    per_s: float = Field(gt=0, description="Sustained requests per second per client.")
    burst: int = Field(gt=0, description="Requests a client may send at once before it is slowed down.")


class RateLimits(Section):
    """Rate limits per client (token name, else client address); null turns one off."""

    detect: RateLimit | None = RateLimit(per_s=20, burst=40)
    feedback: RateLimit | None = RateLimit(per_s=0.5, burst=10)


class ServingSettings(Section):
    """The detection API."""

    host: str = "127.0.0.1"
    port: int = 8000
    model_alias: str = "champion"
    cascade: bool = Field(
        False,
        description="Also load the VLM champion (vlm_model_name) as the cascade's second stage: images whose "
        "fast P(fake) is in cascade_band go to it; without a VLM deployed the probe decides everything.",
    )
    cascade_band: tuple[float, float] = Field(
        (0.2, 0.8),
        description="[low, high) of the first stage's P(fake) sent to the second stage "
        "when the VLM version has no tuned band (`vigil tune --cascade` records one on it, which wins).",
    )
    abstain_margin: float = Field(
        0.05,
        ge=0,
        lt=0.5,
        description="Answer 'uncertain' when P(fake) is within this distance of the deciding stage's threshold.",
    )
    review_margin: float = Field(
        0.15,
        ge=0,
        lt=0.5,
        description="Keep the bytes of predictions this close to the threshold for the review queue.",
    )
    audit_rate: float = Field(
        0.02,
        ge=0,
        le=1,
        description="Share of all predictions kept (bytes too) as a random audit sample for review.",
    )
    max_upload_bytes: int = Field(10_000_000, gt=0)
    max_batch_images: int = Field(16, gt=0, description="Most images in one /v1/detect/batch call.")
    micro_batch_size: int = Field(
        16, gt=0, description="Most concurrent requests scored in one forward pass."
    )
    micro_batch_wait_ms: float = Field(
        5.0, ge=0, description="How long a request waits for others to join its batch."
    )
    log_image_bytes: bool = Field(False, description="Also store uploaded images with the prediction log.")
    micro_batching: bool = Field(
        True, description="Score concurrent requests together; off: one forward pass each."
    )
    allow_private_urls: bool = Field(
        False,
        description="Let URL input reach private and loopback addresses (tests, closed networks); "
        "link-local (cloud metadata) stays refused.",
    )
    url_timeout_s: float = Field(
        10.0,
        gt=0,
        description="Total deadline of one URL fetch: connect, headers, every read and every redirect.",
    )
    url_fetch_concurrency: int = Field(
        4,
        gt=0,
        description="URL fetches running at once, in their own threads (uploads never wait for them).",
    )
    max_concurrent_batches: int = Field(
        2, gt=0, description="/v1/detect/batch calls in progress at once; more answer 503 busy."
    )
    max_bytes_in_flight: int = Field(
        400_000_000,
        gt=0,
        description="Request body bytes being received or processed at once, all requests together; "
        "a request that would pass it answers 503 busy (Retry-After).",
    )
    body_timeout_s: float = Field(
        60.0, gt=0, description="Time a client has to send its whole request body; slower ones get 408."
    )
    upload_cache_items: int = Field(
        1000, ge=0, description="Recent images kept under <home>/serving/uploads so feedback can label them."
    )
    upload_cache_bytes: int = Field(
        500_000_000, ge=0, description="Size cap of that cache; oldest images go first."
    )
    log_flush_rows: int = Field(
        1000, gt=0, description="Write the buffered prediction log once it has this many rows."
    )
    log_flush_s: float = Field(60.0, gt=0, description="... or once its oldest row is this many seconds old.")
    tokens: tuple[ApiToken, ...] = Field(
        (),
        description="API credentials (JSON list in VIGIL_SERVING__TOKENS); VIGIL_ADMIN_TOKEN adds 'admin'.",
    )
    tokens_file: Path | None = Field(
        None,
        description="YAML or JSON list of tokens, re-read when it changes (rotation without a restart).",
    )
    anonymous_scopes: frozenset[Literal["detect", "feedback"]] = Field(
        frozenset({"detect", "feedback"}),
        description="What a client without a token may do; anonymous feedback is a claim, never a label.",
    )
    rate_limits: RateLimits = Field(
        RateLimits(), description="/v1/detect and /v1/detect/batch (per image), /v1/feedback."
    )


class PromotionSettings(Section):
    """The promotion gate (tasks/promote/gate.py)."""

    policy_file: str = Field("gate.yaml", description="Gate policy file under the include folder.")
    override_users: tuple[str, ...] = Field(
        (),
        description="Airflow users who may promote a version the gate rejected (the promote form's "
        "override); empty: every user allowed to trigger the promote DAG.",
    )


class MonitoringSettings(Section):
    """The monitor and the review queue (tasks/monitor, tasks/review)."""

    config_file: str = Field(
        "monitor.yaml", description="Monitoring and review policy file under the include folder."
    )


class DeploySettings(Section):
    """Redeploying serving after a promotion: sandbox smoke test, roll-out, post-check, rollback."""

    rollout: Literal["reload", "docker"] = Field(
        "reload",
        description="reload: POST /admin/reload to the running server (embedded); "
        "docker: recreate the serving container through the Docker API (compose).",
    )
    smoke_images_per_class: int = Field(
        8, ge=1, description="Known real and fake test images sent to the sandbox."
    )
    smoke_min_accuracy: float = Field(0.6, ge=0, le=1, description="Least accuracy on the known images.")
    smoke_max_p95_ms: float = Field(5000.0, gt=0, description="Largest p95 latency of one detection (ms).")
    startup_timeout_s: float = Field(
        300.0, gt=0, description="How long a sandbox or reload may take to load a model."
    )
    serving_container: str = Field(
        "vigil-serving", description="Container name of the serving service (docker)."
    )
    serving_image: str = Field(
        "vigil-serving:latest",
        description="Image inference tuning runs in (docker), so it measures the serving hardware and stack.",
    )
    docker_url: str = Field("unix://var/run/docker.sock", description="Docker API (docker roll-out).")
    deadline_minutes: float = Field(
        90.0,
        gt=0,
        description="Deadline alert: a deploy run still unfinished this many minutes after it was queued "
        "is marked 'Deadline missed' in the Airflow UI and logged by the triggerer.",
    )


class Settings(BaseSettings):
    """Everything a Vigil process needs to know about its environment."""

    model_config = SettingsConfigDict(
        env_prefix="VIGIL_", env_nested_delimiter="__", extra="forbid", frozen=True, populate_by_name=True
    )

    include_dir: Path = Field(
        DEFAULT_INCLUDE_DIR, description="Folder with vigil.yaml, sources.yaml, suites."
    )
    home: Path | None = Field(
        None, description="Embedded-mode state folder; default: .vigil next to include/."
    )
    store_url: str | None = Field(
        None, description="Object store root: file:///abs/path or s3://bucket/prefix."
    )
    s3_endpoint_url: str | None = Field(None, description="S3 endpoint for MinIO or moto; None means AWS.")
    inbox: str | None = Field(None, description="Base folder/URL for folder sources with relative paths.")
    mlflow_tracking_uri: str = Field(
        "http://127.0.0.1:5000",
        validation_alias=AliasChoices("VIGIL_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"),
    )
    model_name: str = Field(
        "vigil-detector",
        description="Registered model of the probe family: the fast detector serving answers with.",
    )
    vlm_model_name: str = Field(
        "vigil-detector-vlm",
        description="Registered model of the VLM family (Qwen2.5-VL): the second stage of the serving cascade.",
    )
    serving_url: str = Field("http://127.0.0.1:8000", description="Where the running detection API answers.")
    airflow_url: str = Field("http://127.0.0.1:8080", description="The Airflow API server (UI and REST API).")
    admin_token: SecretStr | None = Field(
        None,
        description="Bearer token of the serving token 'admin' (scope reload): the deploy step's reload.",
    )

    download: DownloadSettings = DownloadSettings()
    images: ImageSettings = ImageSettings()
    curation: CurationSettings = CurationSettings()
    training: TrainingSettings = TrainingSettings()
    serving: ServingSettings = ServingSettings()
    promotion: PromotionSettings = PromotionSettings()
    monitoring: MonitoringSettings = MonitoringSettings()
    deploy: DeploySettings = DeploySettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        include_dir = Path(os.environ.get("VIGIL_INCLUDE_DIR", DEFAULT_INCLUDE_DIR))
        yaml_source = YamlConfigSettingsSource(settings_cls, yaml_file=include_dir / "vigil.yaml")
        return init_settings, env_settings, yaml_source

    @model_validator(mode="after")
    def _derive_paths(self) -> Settings:
        # Frozen model: fill the derived defaults once, at construction.
        home = (self.home or self.include_dir.parent / ".vigil").resolve()
        object.__setattr__(self, "home", home)
        if self.store_url is None:
            object.__setattr__(self, "store_url", (home / "store").as_uri())
        if self.inbox is None:
            object.__setattr__(self, "inbox", str(home / "inbox"))
        return self

    def model_name_for(self, family: str) -> str:
        """The registered model a detector family trains into (each family has its own champion)."""
        return self.vlm_model_name if family == "vlm" else self.model_name

    def include(self, name: str) -> Path:
        """Path of a file under the include folder."""
        return self.include_dir / name


Model = TypeVar("Model", bound=BaseModel)


def load_yaml(path: str | Path, model: type[Model] | Callable[[Any], Model]) -> Model:
    """Load a reviewed YAML config into ``model`` (a pydantic model, or a function validating plain data,
    e.g. one choosing the model by a field); errors name the file, the field and the bad value."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: file not found") from exc
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    validate = model.model_validate if isinstance(model, type) and issubclass(model, BaseModel) else model
    try:
        return validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{path}: {describe_validation_error(exc, data)}") from exc


def describe_validation_error(exc: ValidationError, data: Any = None) -> str:
    """One line per problem: ``field.path (name='x'): message (got: value)``."""
    lines = []
    for err in exc.errors():
        loc = err["loc"]
        where = _format_location(loc, data)
        got = f" (got: {err['input']!r})" if "input" in err and not isinstance(err["input"], dict) else ""
        lines.append(f"{where}: {err['msg']}{got}")
    return "; ".join(lines)


def _format_location(loc: tuple[Any, ...], data: Any) -> str:
    """Render a pydantic location, naming list items by their ``name`` key when they have one."""
    parts: list[str] = []
    node = data
    for key in loc:
        if isinstance(key, int):
            name = (
                node[key].get("name")
                if isinstance(node, list) and key < len(node) and isinstance(node[key], dict)
                else None
            )
            parts.append(f"[{key}]" + (f" (name={name!r})" if name else ""))
        else:
            parts.append(("." if parts else "") + str(key))
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            node = None
    return "".join(parts) or "(top level)"
