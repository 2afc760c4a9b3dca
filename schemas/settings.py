"""One frozen configuration model for every job (worker, retrain, dashboard).

Sources, highest precedence first: explicit overrides (CLI flags), environment variables
(``AMA_`` prefix, ``__`` between nesting levels: ``AMA_KAFKA__BOOTSTRAP``), an optional YAML
file with the same nesting, then the defaults below. :func:`load_settings` is the one way jobs
build it; :meth:`Settings.redacted_dict` is what they log at start-up, with secrets masked.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import urlsplit, urlunsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from schemas.errors import ConfigError

ReprArgs = Iterator[tuple[str | None, Any]]  # what pydantic's __repr_args__ yields

__all__ = [
    "AlertSettings",
    "BatchSettings",
    "DashboardSettings",
    "KafkaSettings",
    "LimitSettings",
    "MetricsSettings",
    "ModelSettings",
    "RedisSettings",
    "RetrainSettings",
    "Settings",
    "ThresholdSettings",
    "WorkerSettings",
    "load_settings",
]

MASK = "**********"
# Raw librdkafka options whose names contain these are secrets too (e.g. ssl.key.password,
# sasl.oauthbearer.client.secret), so `extra` is masked by name when logged.
_SECRET_WORDS = ("password", "secret", "token")


class _Section(BaseModel):
    # Unknown keys are errors: a typo in YAML or AMA_KAFKA__BOOTSTRAPP must not silently fall
    # back to a default.
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Section):
    """Broker connection, security and topic names. Its repr masks secret raw options."""

    bootstrap: str = Field(default="127.0.0.1:9092", min_length=1, description="bootstrap.servers")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    group_id: str = Field(default="ama-stream", min_length=1)
    input_topic: str = Field(default="ama.input", min_length=1)
    scores_topic: str = Field(default="ama.scores", min_length=1)
    alerts_topic: str = Field(default="ama.alerts", min_length=1)
    dlq_topic: str = Field(default="ama.dlq", min_length=1)
    extra: dict[str, str] = Field(
        default_factory=dict,
        description="Raw librdkafka options, applied last (AMA_KAFKA__EXTRA takes JSON).",
    )

    @model_validator(mode="after")
    def _check_sasl(self) -> Self:
        """SASL needs a mechanism, and PLAIN/SCRAM need credentials; fail at start, not at
        the first poll."""
        if not self.security_protocol.startswith("SASL_"):
            return self
        if self.sasl_mechanism is None:
            raise ValueError(f"security_protocol {self.security_protocol} needs sasl_mechanism")
        if self.sasl_mechanism != "OAUTHBEARER" and (
            self.sasl_username is None or self.sasl_password is None
        ):
            raise ValueError(f"sasl_mechanism {self.sasl_mechanism} needs username and password")
        return self

    def client_config(self) -> dict[str, str]:
        """The librdkafka options every client shares (producer, consumer, admin).

        Contains the SASL password in clear, as librdkafka needs it: never log this dict (log
        :meth:`Settings.redacted_dict` instead). ``extra`` is applied last so that any option
        can be overridden.
        """
        config = {
            "bootstrap.servers": self.bootstrap,
            "security.protocol": self.security_protocol,
        }
        optional = {
            "sasl.mechanism": self.sasl_mechanism,
            "sasl.username": self.sasl_username,
            "sasl.password": self.sasl_password.get_secret_value() if self.sasl_password else None,
            "ssl.ca.location": self.ssl_cafile,
            "ssl.certificate.location": self.ssl_certfile,
            "ssl.key.location": self.ssl_keyfile,
        }
        config.update({name: str(value) for name, value in optional.items() if value is not None})
        config.update(self.extra)
        return config

    def __repr_args__(self) -> ReprArgs:
        for name, value in super().__repr_args__():
            yield name, _mask_options(value) if name == "extra" else value


class RedisSettings(_Section):
    """The Redis server that holds per-key threshold statistics and alert state.

    Its repr masks a password in the URL.
    """

    url: str = Field(default="redis://127.0.0.1:6379/0", description="redis:// or rediss:// URL.")
    password: SecretStr | None = None
    tls: bool = False
    ssl_cafile: Path | None = Field(
        default=None, description="CA bundle that signs the Redis server's TLS certificate."
    )
    key_prefix: str = Field(default="ama", min_length=1, description="Prefix of every key written.")
    # Redis Cluster (docs/thresholds.md, "Redis Cluster"): the key layout and the calls per batch.
    cluster: bool = Field(
        default=False,
        description="url names one node of a Redis Cluster: keys carry hash tags, one script "
        "call per slot group per batch.",
    )
    slot_groups: int = Field(
        default=64,
        ge=1,
        le=16384,
        description="Cluster only: hash tags the per-key state is spread over; fixed for the "
        "life of the key prefix (another value starts every key afresh).",
    )
    wait_replicas: int = Field(
        default=0,
        ge=0,
        description="Replicas that must acknowledge a batch's state (WAIT) before its outputs "
        "are produced; set it where a master can fail over.",
    )

    @model_validator(mode="after")
    def _check_cluster(self) -> Self:
        """A brace in the prefix would become the hash tag and put every key in one slot."""
        if self.cluster and ("{" in self.key_prefix or "}" in self.key_prefix):
            raise ValueError("redis.key_prefix must not contain { or } with redis.cluster")
        return self

    def __repr_args__(self) -> ReprArgs:
        for name, value in super().__repr_args__():
            yield name, _mask_url(value) if name == "url" else value


class ModelSettings(_Section):
    """Which model bundle to serve, and where."""

    bundle: Path | None = Field(default=None, description="Model bundle directory.")
    device: str | None = Field(default=None, description="torch device; None = cuda if available.")
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto",
        description="What scoring computes in: auto = bfloat16 where the device has it natively "
        "(a CUDA GPU, a CPU with AVX512-BF16/AMX), else float32. Training is always float32.",
    )
    signing_key: SecretStr | None = Field(
        default=None,
        min_length=16,
        description="HMAC-SHA256 key of model bundles: set, workers and the retrain job load "
        "only bundles signed with it, and the retrain job signs what it writes.",
    )

    def signing_key_bytes(self) -> bytes | None:
        """The key as the HMAC takes it (UTF-8 of the secret), or None when unset."""
        return self.signing_key.get_secret_value().encode() if self.signing_key else None


class BatchSettings(_Section):
    """Micro-batching: a batch closes at whichever bound is reached first."""

    max_records: int = Field(default=1024, ge=1)
    max_wait_ms: int = Field(default=10, ge=0)
    max_bytes: int = Field(
        default=32 * 1024 * 1024,
        ge=1,
        description="Message bytes a batch gathers at most (at least one message).",
    )


class ThresholdSettings(_Section):
    """Per-key adaptive thresholds (statistics in Redis)."""

    policy: Literal["quantile", "sigma", "fixed"] = "quantile"
    quantile: float = Field(default=0.99, gt=0.0, lt=1.0)
    k_sigma: float = Field(default=4.0, gt=0.0)
    fixed: float | None = Field(default=None, description="The threshold when policy = fixed.")
    warmup: int = Field(
        default=200, ge=0, description="Observations before a key's own stats are used."
    )
    ewm_alpha: float = Field(default=0.01, gt=0.0, le=1.0, description="Weight of each new score.")
    ttl_s: int = Field(
        default=7 * 24 * 3600, ge=1, description="Idle keys' statistics expire after."
    )

    @model_validator(mode="after")
    def _check_fixed(self) -> Self:
        """The fixed policy has nothing to fall back on, so its value is required."""
        if self.policy == "fixed" and self.fixed is None:
            raise ValueError("policy fixed needs thresholds.fixed")
        return self


class AlertSettings(_Section):
    """Alert episodes: fire on n anomalous among the last m records, resolve after a quiet run."""

    n_anomalous: int = Field(default=5, ge=1)
    window_m: int = Field(default=10, ge=1)
    quiet_records: int = Field(
        default=20, ge=1, description="Normal records in a row that resolve."
    )
    fire_ratio: float = Field(
        default=3.0,
        ge=0.0,
        description="One record at least this many times its threshold fires at once (0 = off).",
    )

    @model_validator(mode="after")
    def _check_window(self) -> Self:
        """n anomalous out of m is impossible when n > m; a ratio below 1 would fire on every
        anomalous record, which n_anomalous = window_m = 1 already says."""
        if self.n_anomalous > self.window_m:
            raise ValueError("alerts.n_anomalous must be <= alerts.window_m")
        if 0.0 < self.fire_ratio < 1.0:
            raise ValueError("alerts.fire_ratio must be 0 (off) or >= 1")
        return self


class LimitSettings(_Section):
    """Input limits: bound the work one hostile or broken message can cause."""

    max_message_bytes: int = Field(
        default=1_000_000, ge=1, description="Larger message values are rejected unparsed."
    )
    max_dims: int = Field(
        default=65_536,
        ge=1,
        description="Largest model input (vector length, or C*H*W of an image) a worker loads: "
        "it sizes every batch array.",
    )
    max_keys: int = Field(
        default=100_000,
        ge=1,
        description="Distinct record keys one worker keeps state for within thresholds.ttl_s; "
        "records of further keys are dead-lettered (key_limit).",
    )


class WorkerSettings(_Section):
    """How a worker meets faults (docs/worker.md, "Failure semantics")."""

    on_error: Literal["dead-letter", "stop"] = Field(
        default="dead-letter",
        description="When processing raises: dead-letter the records that cause it (found by "
        "splitting the batch) and go on, or stop the worker uncommitted.",
    )
    max_held_records: int = Field(
        default=200_000,
        ge=1,
        description="Records judged without Redis that a worker holds before it pauses "
        "consumption until Redis is back (about 100 bytes each).",
    )
    startup_timeout_s: float = Field(
        default=30.0,
        gt=0,
        description="How long start-up waits for Kafka and Redis to answer before exiting.",
    )
    guarantee: Literal["at-least-once", "exactly-once"] = Field(
        default="at-least-once",
        description="at-least-once: outputs acknowledged, then offsets committed (a crash can "
        "repeat outputs). exactly-once: a batch's outputs and its input offsets are committed "
        "in one Kafka transaction; read_committed consumers see each output once.",
    )


class MetricsSettings(_Section):
    """Prometheus exposition."""

    port: int | None = Field(
        default=None,
        ge=0,
        le=65535,
        description="Port of /metrics, /healthz, /readyz. Unset: 9400, or a free port if 9400 "
        "is taken; set: must be free (0 = pick a free port).",
    )


class RetrainSettings(_Section):
    """The retrain job (docs/retrain.md): training window, challenger training, gate, store."""

    store: Path = Field(
        default=Path("models"), description="Model store: a directory every worker can read."
    )
    group_id: str = Field(
        default="ama-stream-retrain",
        min_length=1,
        description="The job's own consumer group; it never commits offsets.",
    )
    labels_topic: str | None = Field(
        default=None, description="Optional labelled feedback, {key, ts, is_anomaly} JSON."
    )
    window_s: float = Field(default=24 * 3600, gt=0, description="Training window length.")
    max_records: int = Field(default=50_000, ge=10, description="Records kept from the window.")
    max_window_mb: float = Field(
        default=256.0,
        gt=0,
        description="Input bytes (message values) a cycle reads from its window at most, "
        "spread over the window; the window then takes about 3x this in memory (messages, "
        "decoded rows, training arrays). The scores and labels joins are streamed.",
    )
    min_records: int = Field(
        default=500, ge=10, description="Fewer usable records than this: the cycle is skipped."
    )
    holdout_fraction: float = Field(default=0.2, gt=0.0, lt=1.0)
    regime_share: float = Field(
        default=0.5,
        gt=0.0,
        le=1.0,
        description="A key whose window the serving model flagged above this share is a new "
        "operating point: its flagged records are trained on (1.0 = always exclude).",
    )
    config: dict[str, Any] = Field(
        default_factory=dict,
        description="AMAConfig fields that override the champion's for the challenger.",
    )
    epochs: int | None = Field(
        default=None,
        ge=1,
        description="Full passes over the window; null = the default training budget "
        "(at most 800 iterations per member, early stopping; docs/model.md).",
    )
    batch_size: int | None = Field(
        default=None, ge=2, description="Rows per batch; null = 128 (fewer for small windows)."
    )
    time_budget_s: float = Field(default=1800, gt=0, description="Training stops past this.")
    seed: int = 0
    device: str | None = Field(default=None, description="torch device; None = cuda if any.")
    margin_false_alarm: float = Field(
        default=0.01, ge=0.0, le=1.0, description="Allowed rise of the false-alarm rate."
    )
    margin_key_false_alarm: float = Field(
        default=0.03, ge=0.0, le=1.0, description="Allowed rise of the worst key's rate."
    )
    margin_auroc: float = Field(default=0.02, ge=0.0, le=1.0, description="Allowed AUROC drop.")
    min_labels: int = Field(
        default=10, ge=1, description="Labelled records per class needed to compare AUROC."
    )
    lock_ttl_s: int = Field(
        default=2 * 3600, ge=1, description="The retrain lock expires after (a dead job's)."
    )
    drift_window_s: float = Field(
        default=900, gt=0, description="Recent scores compared with the calibration."
    )
    drift_psi: float = Field(default=0.25, gt=0.0, description="PSI that counts as drift.")
    drift_check_s: float = Field(default=60, gt=0, description="How often drift is checked.")
    drift_cooldown_s: float = Field(
        default=3600, ge=0, description="Least time from one cycle to a drift-started one."
    )

    @model_validator(mode="after")
    def _check_lock(self) -> Self:
        """The lock must outlive a cycle's training, or a second job could start meanwhile
        (its publish would still be fenced, but it would waste a training run)."""
        if self.lock_ttl_s <= self.time_budget_s:
            raise ValueError("retrain.lock_ttl_s must exceed retrain.time_budget_s")
        return self


class DashboardSettings(_Section):
    """The read-only web dashboard (docs/dashboard.md): what it keeps in memory, and where."""

    port: int = Field(
        default=8400, ge=0, le=65535, description="HTTP port of the page (0 = any free port)."
    )
    host: str = Field(default="0.0.0.0", min_length=1, description="Address to listen on.")
    group_id: str = Field(
        default="ama-stream-dashboard",
        min_length=1,
        description="The dashboard's own consumer group; it reads by assignment, never commits.",
    )
    history_s: float = Field(
        default=3600, ge=60, description="How far back each key's chart and the heat map reach."
    )
    bucket_s: float = Field(
        default=10, gt=0, description="One chart point per key per bucket (the largest score)."
    )
    max_keys: int = Field(
        default=20_000,
        ge=1,
        description="Keys kept in memory; beyond it the least recently seen key is dropped.",
    )
    backfill_s: float = Field(
        default=300, ge=0, description="Score events read back at start-up (seconds)."
    )
    alerts_backfill_s: float = Field(
        default=86_400, ge=0, description="Alert events read back at start-up (seconds)."
    )
    resolved_kept: int = Field(default=500, ge=1, description="Resolved episodes kept.")
    poll_s: float = Field(
        default=2.0, gt=0, description="How often group, lag and model state are refreshed."
    )

    @model_validator(mode="after")
    def _check_buckets(self) -> Self:
        """The per-key ring buffers hold history_s / bucket_s slots each; bound them."""
        if self.history_s / self.bucket_s > 10_000:
            raise ValueError("dashboard.history_s / dashboard.bucket_s must be <= 10000")
        return self


_yaml_path: ContextVar[Path | None] = ContextVar("ama_settings_yaml", default=None)


class Settings(BaseSettings):
    """The effective configuration of one ama-stream process."""

    model_config = SettingsConfigDict(
        env_prefix="AMA_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
    )

    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    model: ModelSettings = ModelSettings()
    batch: BatchSettings = BatchSettings()
    thresholds: ThresholdSettings = ThresholdSettings()
    alerts: AlertSettings = AlertSettings()
    limits: LimitSettings = LimitSettings()
    worker: WorkerSettings = WorkerSettings()
    metrics: MetricsSettings = MetricsSettings()
    retrain: RetrainSettings = RetrainSettings()
    dashboard: DashboardSettings = DashboardSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """overrides > environment > YAML (only inside :func:`load_settings`) > defaults."""
        sources = [init_settings, env_settings]
        yaml_path = _yaml_path.get()
        if yaml_path is not None:
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_path))
        return tuple(sources)

    def redacted_dict(self) -> dict[str, Any]:
        """The configuration as plain JSON-able data with every secret masked, for logging.

        Masks ``SecretStr`` fields, the password in a Redis URL, and raw Kafka options whose
        names mention a password, secret or token.
        """
        data = self.model_dump(mode="json")  # SecretStr dumps as "**********" in JSON mode
        data["redis"]["url"] = _mask_url(self.redis.url)
        data["kafka"]["extra"] = _mask_options(self.kafka.extra)
        return data


def _mask_options(options: dict[str, str]) -> dict[str, str]:
    """Mask raw librdkafka options whose names say they are secret."""
    return {
        name: MASK if any(word in name.lower() for word in _SECRET_WORDS) else value
        for name, value in options.items()
    }


def _mask_url(url: str) -> str:
    """Replace the password in ``scheme://user:password@host`` with the mask."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{user}:{MASK}@{host}"))


def _drop_none(overrides: dict[str, Any]) -> dict[str, Any]:
    """Leave out overrides that are None (at any depth): a CLI flag not given overrides nothing."""
    return {
        name: _drop_none(value) if isinstance(value, dict) else value
        for name, value in overrides.items()
        if value is not None
    }


@contextmanager
def _reading_yaml(path: Path | None) -> Iterator[None]:
    token = _yaml_path.set(path)
    try:
        yield
    finally:
        _yaml_path.reset(token)


def load_settings(yaml_path: Path | None = None, **overrides: Any) -> Settings:
    """Build the effective settings: ``overrides`` > ``AMA_*`` environment > YAML > defaults.

    ``overrides`` are nested by section, e.g. ``kafka={"bootstrap": "host:9092"}``; they merge
    with the other sources key by key, and None values are ignored. Raises
    :class:`~schemas.errors.ConfigError` listing every problem; the message never echoes input
    values, so a mistyped secret cannot reach a log.
    """
    if yaml_path is not None and not yaml_path.is_file():
        raise ConfigError(f"settings file {yaml_path} does not exist")
    try:
        with _reading_yaml(yaml_path):
            return Settings(**_drop_none(overrides))
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in error['loc']) or 'settings'}: {error['msg']}"
            for error in exc.errors(include_input=False, include_url=False)
        )
        raise ConfigError(f"invalid settings: {problems}") from None
    except (OSError, ValueError, yaml.YAMLError) as exc:  # unreadable or malformed YAML
        raise ConfigError(f"cannot read settings file {yaml_path}: {exc}") from None
