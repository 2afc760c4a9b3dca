"""The `retrain` settings section: environment variables like every other section, and the
lock that must outlive a cycle's training."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.errors import ConfigError
from schemas.settings import load_settings


def test_retrain_settings_come_from_the_environment_and_flags(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AMA_RETRAIN__WINDOW_S", "3600")
    monkeypatch.setenv("AMA_RETRAIN__CONFIG", '{"hidden": 32}')
    settings = load_settings(retrain={"store": Path("/models"), "window_s": None})
    assert settings.retrain.window_s == 3600
    assert settings.retrain.config == {"hidden": 32}
    assert settings.retrain.store == Path("/models")
    assert settings.redacted_dict()["retrain"]["labels_topic"] is None


def test_lock_must_outlive_the_training_budget() -> None:
    with pytest.raises(ConfigError, match="lock_ttl_s"):
        load_settings(retrain={"time_budget_s": 600, "lock_ttl_s": 600})
