"""Settings: defaults, precedence (override > env > YAML > default), validation, masking."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from schemas.errors import ConfigError
from schemas.settings import Settings, load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see only the AMA_* variables they set themselves."""
    for name in list(os.environ):
        if name.upper().startswith("AMA_"):
            monkeypatch.delenv(name)


@pytest.fixture
def yaml_file(tmp_path: Path) -> Path:
    path = tmp_path / "ama.yaml"
    path.write_text(
        "kafka:\n"
        "  bootstrap: yaml:9092\n"
        "  group_id: yaml-group\n"
        "  input_topic: yaml.in\n"
        "batch:\n"
        "  max_records: 64\n"
    )
    return path


def test_defaults() -> None:
    settings = load_settings()
    assert settings.kafka.bootstrap == "127.0.0.1:9092"
    assert (settings.kafka.input_topic, settings.kafka.scores_topic) == ("ama.input", "ama.scores")
    assert (settings.kafka.alerts_topic, settings.kafka.dlq_topic) == ("ama.alerts", "ama.dlq")
    assert settings.redis.url == "redis://127.0.0.1:6379/0"
    assert settings.batch.max_records == 1024 and settings.batch.max_wait_ms == 10
    assert settings.model.precision == "auto"
    assert settings.thresholds.policy == "quantile" and settings.thresholds.ttl_s == 7 * 86400
    assert settings.limits.max_message_bytes == 1_000_000
    assert settings.metrics.port is None  # 9400, or a free port if taken (streamer/probes.py)


def test_precedence(yaml_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMA_KAFKA__GROUP_ID", "env-group")
    monkeypatch.setenv("AMA_KAFKA__INPUT_TOPIC", "env.in")
    settings = load_settings(yaml_file, kafka={"input_topic": "cli.in", "bootstrap": None})
    assert settings.kafka.input_topic == "cli.in"  # override beats env and YAML
    assert settings.kafka.group_id == "env-group"  # env beats YAML
    assert settings.kafka.bootstrap == "yaml:9092"  # YAML beats default; None overrides nothing
    assert settings.batch.max_records == 64
    assert settings.kafka.scores_topic == "ama.scores"  # default where nobody says otherwise


def test_env_types_and_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMA_BATCH__MAX_WAIT_MS", "5")
    monkeypatch.setenv("AMA_REDIS__TLS", "true")
    monkeypatch.setenv("AMA_KAFKA__EXTRA", json.dumps({"linger.ms": "2"}))
    settings = load_settings()
    assert settings.batch.max_wait_ms == 5 and settings.redis.tls is True
    assert settings.kafka.client_config()["linger.ms"] == "2"


def test_settings_are_frozen() -> None:
    settings = load_settings()
    with pytest.raises(Exception, match="frozen"):
        settings.kafka.bootstrap = "elsewhere"


@pytest.mark.parametrize(
    "overrides",
    [
        {"kafka": {"bootstrapp": "typo"}},
        {"kafka": {"security_protocol": "SASL_SSL"}},
        {"kafka": {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN"}},
        {"thresholds": {"policy": "fixed"}},
        {"thresholds": {"quantile": 1.5}},
        {"alerts": {"n_anomalous": 11, "window_m": 10}},
        {"batch": {"max_records": 0}},
    ],
)
def test_invalid_settings_raise_config_error(overrides: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        load_settings(**overrides)


def test_config_errors_never_echo_secrets() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(
            kafka={
                "security_protocol": "SASL_SSL",
                "sasl_mechanism": "PLAIN",
                "sasl_password": "hunter2",
            },
            redis={"password": "hunter3", "tls": "not-a-bool"},
        )
    assert "hunter" not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_yaml_problems_raise_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("kafka: [\n")
    with pytest.raises(ConfigError):
        load_settings(broken)


def test_client_config_for_sasl_ssl() -> None:
    settings = load_settings(
        kafka={
            "bootstrap": "b:9093",
            "security_protocol": "SASL_SSL",
            "sasl_mechanism": "SCRAM-SHA-512",
            "sasl_username": "svc",
            "sasl_password": "s3cret",
            "ssl_cafile": "/etc/ca.pem",
            "extra": {"client.id": "w1"},
        }
    )
    assert settings.kafka.client_config() == {
        "bootstrap.servers": "b:9093",
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "svc",
        "sasl.password": "s3cret",
        "ssl.ca.location": "/etc/ca.pem",
        "client.id": "w1",
    }


def test_redacted_dict_masks_every_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMA_REDIS__PASSWORD", "redis-pw")
    settings = load_settings(
        kafka={
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "PLAIN",
            "sasl_username": "svc",
            "sasl_password": "kafka-pw",
            "extra": {"ssl.key.password": "key-pw", "linger.ms": "5"},
        },
        redis={"url": "redis://user:url-pw@host:6379/0"},
    )
    shown = settings.redacted_dict()
    text = json.dumps(shown) + repr(settings) + str(settings)
    for secret in ("redis-pw", "kafka-pw", "key-pw", "url-pw"):
        assert secret not in text
    assert shown["kafka"]["sasl_username"] == "svc"
    assert shown["kafka"]["extra"]["linger.ms"] == "5"
    assert shown["redis"]["url"] == "redis://user:**********@host:6379/0"
    assert settings.redis.password is not None
    assert settings.redis.password.get_secret_value() == "redis-pw"


def test_direct_construction_reads_env_but_no_yaml(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AMA_METRICS__PORT", "9500")
    assert Settings().metrics.port == 9500
