"""The service's one typed configuration object, read from `TRUSTDIFF_*` environment variables."""

from __future__ import annotations

import os
from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024

# Which folder an audit's dataset path is relative to (stored in `audits.dataset_root`).
DATA_ROOT = "data"
UPLOAD_ROOT = "uploads"


def default_home() -> Path:
    """Where the embedded default keeps its state: `$XDG_DATA_HOME/trustdiff` or ~/.local/share."""
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "trustdiff"


class Settings(BaseSettings):
    """Everything the gateway, the worker and the CLI read from the environment.

    Unset URLs fall back to the embedded single-machine default: SQLite for the database and
    kombu's SQLAlchemy transport on a second SQLite file for the broker, both under `home`.
    """

    model_config = SettingsConfigDict(env_prefix="TRUSTDIFF_", extra="ignore")

    home: Path = Field(default_factory=default_home, description="State folder (embedded default).")
    # The unprefixed names are what Heroku-style platforms and docker images already set.
    database_url: str = Field(
        default_factory=lambda data: f"sqlite:///{data['home'] / 'trustdiff.sqlite'}",
        validation_alias=AliasChoices("TRUSTDIFF_DATABASE_URL", "DATABASE_URL"),
    )
    broker_url: str = Field(
        default_factory=lambda data: f"sqla+sqlite:///{data['home'] / 'broker.sqlite'}",
        validation_alias=AliasChoices("TRUSTDIFF_BROKER_URL", "BROKER_URL"),
    )
    model_root: Path = Field(
        default_factory=lambda data: data["home"] / "models",
        description="Each tenant's checkpoint paths resolve under `<model root>/<tenant>/`.",
    )
    data_root: Path = Field(
        default_factory=lambda data: data["home"] / "data",
        description="Each tenant's dataset paths resolve under `<data root>/<tenant>/`.",
    )
    shared_model_root: Path | None = Field(
        default=None,
        description="Checkpoints every tenant may use, read-only, as `shared/<path>`.",
    )
    upload_dir: Path = Field(
        default_factory=lambda data: data["home"] / "uploads",
        description="Uploaded datasets are stored here.",
    )
    artifact_url: str | None = Field(
        default=None,
        description="Where audit artifacts (rows files) are stored: a folder or any fsspec "
        "URL (s3://bucket/prefix, gs://...). Default: `artifacts_dir`.",
    )
    artifact_storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec storage options for `artifact_url`, as JSON (e.g. "
        '{"client_kwargs": {"endpoint_url": "http://minio:9000"}}).',
    )
    cache_dir: Path = Field(
        default_factory=lambda data: data["home"] / "cache",
        description="Checkpoint digests (by file sizes and times) and the reference's "
        "predictions per dataset (trustdiff.cache), shared by the workers.",
    )
    queue: str = Field(default="trustdiff", min_length=1, description="Celery queue for audits.")

    max_request_bytes: int = Field(default=1 * MIB, ge=1024, description="JSON request bodies.")
    body_read_timeout_s: float = Field(
        default=30.0, gt=0, description="A request body that sends nothing this long is a 408."
    )
    max_upload_bytes: int = Field(
        default=64 * MIB, ge=1024, description="Dataset files: uploads and data-root files."
    )

    # Quotas, each applying to every tenant. The defaults keep the largest audit they admit
    # within the default task time limit (1 h) on a CPU worker with a MiniLM-sized model
    # (~110 sentences/s): 20,000 rows x 2 models ~ 6 min of prediction; 50 explained
    # instances x (1,000 LIME + 1,000 SHAP perturbations) x 2 models plus the reference's
    # floor, deduplicated, ~ 30 min. A GPU worker finishes the same audit in minutes.
    max_explain_instances: int = Field(default=50, ge=0)
    max_lime_samples: int = Field(default=1000, ge=10)
    max_shap_evals: int = Field(default=1000, ge=10)
    max_bootstrap_resamples: int = Field(default=2000, ge=0)
    max_dataset_rows: int = Field(default=20_000, ge=1, description="Rows an audit reads.")
    max_dataset_fields: int = Field(default=1000, ge=1, description="Columns of an upload.")
    max_concurrent_audits: int = Field(
        default=4, ge=1, description="Queued and running audits per tenant; more is a 429."
    )

    callback_secret: SecretStr | None = Field(
        default=None, description="HMAC-SHA256 key for `X-Trustdiff-Signature` on callbacks."
    )
    callback_allowed_hosts: list[str] = Field(
        default_factory=list,
        description='When set, callbacks go only to these hosts (exact, or "*.example.com").',
    )
    callback_allowed_networks: list[IPv4Network | IPv6Network] = Field(
        default_factory=list,
        description="Non-public networks callbacks may reach anyway (e.g. 10.1.0.0/16); by "
        "default loopback, private, link-local and metadata addresses are refused.",
    )
    callback_max_attempts: int = Field(default=6, ge=1)
    callback_backoff_s: float = Field(default=2.0, gt=0, description="First retry delay.")
    callback_timeout_s: float = Field(default=10.0, gt=0)

    heartbeat_interval_s: float = Field(default=5.0, gt=0)
    heartbeat_timeout_s: float = Field(
        default=120.0, gt=0, description="A running audit silent this long has lost its worker."
    )
    sweep_interval_s: float = Field(default=30.0, gt=0)
    # An audit runs as a plan, prediction shards, explanation blocks and a finaliser, spread
    # over the workers (`service.shards`); the engine's defaults (`trustdiff.plan`).
    shard_rows: int = Field(
        default=100_000, ge=1, description="Dataset rows per prediction shard (whole chunks)."
    )
    block_instances: int = Field(
        default=32, ge=1, description="Explained instances per explanation block (whole waves)."
    )
    max_attempts: int = Field(
        default=2,
        ge=1,
        description="Runs per audit (or per shard of one), counting re-runs after a lost worker.",
    )

    readiness_timeout_s: float = Field(default=2.0, gt=0)

    # Load shedding: past these, a request is answered 503 + Retry-After, never left to time
    # out into a 500. The database pool holds one connection per concurrent request.
    max_concurrent_requests: int = Field(
        default=32, ge=1, le=1000, description="Requests one gateway process handles at once."
    )
    request_queue_timeout_s: float = Field(
        default=10.0, ge=0, description="How long a request waits for a free slot before 503."
    )
    database_pool_timeout_s: float = Field(
        default=10.0, gt=0, description="How long a request waits for a database connection."
    )
    retry_after_s: int = Field(default=2, ge=1, description="`Retry-After` sent with a 503.")

    # Lost work: every queued audit eventually runs, and no run goes on for ever.
    requeue_queued_after_s: float = Field(
        default=300.0,
        gt=0,
        description="A queued audit no worker claimed for this long is sent to the broker again.",
    )
    task_soft_time_limit_s: float = Field(
        default=3600.0, gt=0, description="An audit running longer fails `time_limit_exceeded`."
    )
    task_time_limit_s: float = Field(
        default=3900.0, gt=0, description="A worker process still running it then is killed."
    )
    broker_visibility_timeout_s: float = Field(
        default=4200.0,
        gt=0,
        description="Redis redelivers a message its worker did not acknowledge after this long.",
    )
    result_store_attempts: int = Field(default=4, ge=1)
    result_store_backoff_s: float = Field(
        default=1.0, ge=0, description="First wait between attempts to store a result."
    )
    twin_cache_dir: Path = Field(
        default_factory=lambda data: data["cache_dir"],
        description="The twin's figures, one JSON file per reference, twin, dataset and "
        "settings (trustdiff.twin_cache), so auditing several candidates pays for it once; "
        "by default in `cache_dir` (its `twin/` folder), beside the reference predictions.",
    )
    artifacts_dir: Path = Field(
        default_factory=lambda data: data["home"] / "artifacts",
        description="Result documents the database refused are kept here, one file per audit.",
    )

    log_format: Literal["text", "json"] = Field(
        default="text", description="json: one object per line, with the audit id on each."
    )
    metrics_token: SecretStr | None = Field(
        default=None,
        description="When set, GET /metrics requires `Authorization: Bearer <token>`.",
    )
    mlflow_tracking_uri: str | None = Field(
        default=None,
        description="When set, workers log every succeeded audit to this MLflow tracking server.",
    )
    mlflow_experiment: str = Field(default="trustdiff", min_length=1)

    @model_validator(mode="after")
    def _limits_nest(self) -> Settings:
        # A redelivery before the hard limit would start a second run of a live audit.
        if not (
            self.task_soft_time_limit_s < self.task_time_limit_s < self.broker_visibility_timeout_s
        ):
            raise ValueError(
                "need task_soft_time_limit_s < task_time_limit_s < broker_visibility_timeout_s, "
                f"got {self.task_soft_time_limit_s}, {self.task_time_limit_s}, "
                f"{self.broker_visibility_timeout_s}"
            )
        return self

    @field_validator("database_url")
    @classmethod
    def _use_psycopg3(cls, url: str) -> str:
        # Platforms hand out `postgres://` URLs; SQLAlchemy would pick psycopg2 (not installed).
        for prefix in ("postgres://", "postgresql://"):
            if url.startswith(prefix):
                return "postgresql+psycopg://" + url.removeprefix(prefix)
        return url

    @field_validator("callback_secret", "metrics_token", "mlflow_tracking_uri", mode="before")
    @classmethod
    def _empty_secret_is_unset(cls, value: object) -> object:
        # Compose passes `${TRUSTDIFF_CALLBACK_SECRET:-}` through as "": that is unset.
        return None if value == "" else value

    @property
    def is_embedded_database(self) -> bool:
        return self.database_url.startswith("sqlite")

    def tenant_model_root(self, tenant_name: str) -> Path:
        """The only part of the model root a tenant's checkpoint paths may name."""
        return self.model_root / tenant_name

    @property
    def artifact_root(self) -> str:
        """`artifact_url`, or the local `artifacts_dir`."""
        return self.artifact_url or str(self.artifacts_dir)

    def dataset_folder(self, dataset_root: str, tenant_name: str) -> Path:
        """The folder a stored `dataset_root` (`DATA_ROOT` or `UPLOAD_ROOT`) stands for.

        Uploads are stored under the upload folder by tenant id and looked up by tenant; data
        root paths are the tenant's own folder of the data root.
        """
        return self.upload_dir if dataset_root == UPLOAD_ROOT else self.data_root / tenant_name

    def redact_paths(self, text: str, *, tenant_name: str | None = None) -> str:
        """`text` with this machine's state and root folders named, not spelled out.

        Engine errors name the files they refuse by their resolved path; responses and stored
        error messages show `<model root>/...` instead, so no caller learns the layout. With
        `tenant_name`, the tenant's own folders (possibly links elsewhere) are the roots.
        """
        names: dict[Path, str] = {}
        if tenant_name is not None:
            names[self.tenant_model_root(tenant_name)] = "<model root>"
            names[self.dataset_folder(DATA_ROOT, tenant_name)] = "<data root>"
        if self.shared_model_root is not None:
            names[self.shared_model_root] = "<shared models>"
        names.update(
            {
                self.model_root: "<model root>",
                self.data_root: "<data root>",
                self.upload_dir: "<uploads>",
                self.home: "<state folder>",
            }
        )
        spellings: dict[str, str] = {}
        for folder, name in names.items():
            for spelling in (str(folder), str(folder.resolve())):
                spellings.setdefault(spelling.rstrip("/") or "/", name)
        # Longest first: a root nested in another (uploads in the state folder) keeps its name.
        for spelling in sorted(spellings, key=len, reverse=True):
            if spelling != "/":
                text = text.replace(spelling, spellings[spelling])
        return text

    def ensure_state_folders(self) -> None:
        """Create the folders the embedded default writes to (no-op for existing ones)."""
        self.home.mkdir(parents=True, exist_ok=True)
        self.upload_dir.mkdir(parents=True, exist_ok=True)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read from the environment once."""
    return Settings()
