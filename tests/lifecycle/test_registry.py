"""One publish path: `model publish`, a retrain cycle and `model rollback` all go through the
registry, are recorded in the history, are checked against what the group serves, and cannot
overwrite each other (real Redis; the race with a cycle also runs a real worker and broker)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import redis
from retrain_support import Deployment
from typer.testing import CliRunner

from model.detector import AMADetector
from model.store import ModelStore
from model.testing import train_tiny_bundle
from streamer.cli import app
from streamer.lifecycle import registry, retrain
from streamer.state.client import connect

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def narrow_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A valid bundle for 20-dim records: not what a 38-dim group serves."""
    return train_tiny_bundle(tmp_path_factory.mktemp("narrow") / "narrow", dim=20, seed=2)


def _redis_args(redis_url: str, prefix: str) -> list[str]:
    return ["--redis-url", redis_url, "--redis-prefix", prefix]


def test_manual_publishes_are_listed_and_rolled_back(
    redis_url: str, redis_prefix: str, tiny_bundle: Path, other_bundle: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    args = _redis_args(redis_url, redis_prefix)
    first, second = (AMADetector.load(b).model_version for b in (tiny_bundle, other_bundle))
    for bundle in (tiny_bundle, other_bundle):
        done = runner.invoke(app, ["model", "publish", "--bundle", str(bundle), *args])
        assert done.exit_code == 0, done.output

    listing = runner.invoke(app, ["model", "list", "--json", *args])
    entries = [orjson.loads(line) for line in listing.output.splitlines()]
    assert [(e["decision"], e["version"], e["parent"], e["serving"]) for e in entries] == [
        ("published", first, None, False), ("published", second, first, True),
    ]  # fmt: skip
    assert all(e["trigger"] == {"reason": "manual"} for e in entries)

    store = ["--store", str(tmp_path / "store")]
    back = runner.invoke(app, ["model", "rollback", *store, *args])
    assert back.exit_code == 0, back.output
    assert f"rolled back from {second} to {first}" in back.output
    pointer = registry.current(connect(redis_url), redis_prefix)
    assert pointer is not None and pointer.version == first


def test_an_incompatible_bundle_is_refused_unless_forced(
    redis_url: str, redis_prefix: str, tiny_bundle: Path, narrow_bundle: Path
) -> None:
    client = connect(redis_url)
    registry.publish_manual(client, redis_prefix, tiny_bundle)
    before = registry.history(client, redis_prefix)

    refused = CliRunner().invoke(
        app,
        ["model", "publish", "--bundle", str(narrow_bundle), *_redis_args(redis_url, redis_prefix)],
    )
    assert isinstance(refused.exception, registry.Incompatible)
    assert "shape (20,)" in str(refused.exception) and "vector (38,)" in str(refused.exception)
    assert registry.history(client, redis_prefix) == before  # nothing recorded, nothing moved
    assert registry.current(client, redis_prefix).version == before[-1]["version"]  # type: ignore[union-attr]

    forced = registry.publish_manual(client, redis_prefix, narrow_bundle, force=True)
    pointer = registry.current(client, redis_prefix)
    assert pointer is not None and (pointer.version, pointer.input_shape) == (
        forced["version"],
        (20,),
    )
    # ...and rolling back is how an operator undoes it.
    back = registry.rollback(
        client, redis_prefix, ModelStore(Path("/nonexistent")), None, force=True
    )
    assert back["version"] == before[-1]["version"]


def test_a_publish_based_on_a_stale_pointer_changes_nothing(
    redis_url: str, redis_prefix: str, tiny_bundle: Path, other_bundle: Path
) -> None:
    client = connect(redis_url)
    registry.publish_manual(client, redis_prefix, tiny_bundle)
    stale = registry.current(client, redis_prefix)
    registry.publish_manual(client, redis_prefix, other_bundle)
    with pytest.raises(registry.Superseded):
        registry.publish(client, redis_prefix, tiny_bundle, {"decision": "x"}, based_on=stale)
    assert [e["decision"] for e in registry.history(client, redis_prefix)] == ["published"] * 2


def test_an_unreadable_pointer_is_a_clear_error(redis_url: str, redis_prefix: str) -> None:
    redis.Redis.from_url(redis_url).set(registry.pointer_key(redis_prefix), b'{"path": "/x"}')
    with pytest.raises(registry.RegistryError, match=r"not .*JSON"):
        registry.current(connect(redis_url), redis_prefix)


def test_a_manual_publish_during_a_retrain_cycle_wins_and_the_cycle_is_superseded(
    make_deployment: Callable[..., Deployment],
    tiny_bundle: Path,
    other_bundle: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dep = make_deployment()
    s = dep.settings
    client = connect(s.redis.url)
    manual = AMADetector.load(other_bundle).model_version
    train = retrain.train_challenger

    def operator_publishes_meanwhile(*args: object, **kwargs: object) -> AMADetector:
        registry.publish_manual(client, s.redis.key_prefix, other_bundle)
        return train(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(retrain, "train_challenger", operator_publishes_meanwhile)
    with dep.worker(tiny_bundle):
        dep.shift_window()
        result = retrain.run_cycle(s)

    assert result.decision == "superseded"
    history = dep.history()
    assert [(h["decision"], h["trigger"]["reason"]) for h in history] == [
        ("published", "manual"), ("superseded", "once"),
    ]  # fmt: skip
    assert history[0]["version"] == manual
    assert dep.serving() == manual


def test_the_model_store_restores_a_pointer_that_redis_lost(
    redis_url: str, redis_prefix: str, tiny_bundle: Path, tmp_path: Path
) -> None:
    client = connect(redis_url)
    store = ModelStore(tmp_path / "store")
    store.root.mkdir()
    published = registry.publish_manual(client, redis_prefix, tiny_bundle, store=store)
    client.delete(registry.pointer_key(redis_prefix), registry.history_key(redis_prefix))

    restored = registry.restore(client, redis_prefix, store)  # what a starting worker does

    assert restored is not None and restored.version == published["version"]
    assert registry.current(client, redis_prefix) == restored
    assert [e["decision"] for e in registry.history(client, redis_prefix)] == ["restored"]
    assert registry.restore(client, redis_prefix, store) == restored  # once only
    assert registry.restore(client, redis_prefix + "x", ModelStore(tmp_path / "none")) is None
