"""Model supply chain: signed bundles, and pointers confined to the model store.

A worker (its ModelSlot, against real Redis) given a signing key refuses unsigned and wrongly
signed bundles and keeps serving; given a store it refuses pointers whose path leads out of it
(``..``, an absolute path elsewhere, a symbolic link), and so does the retrain job for the
champion it reads. `model publish` copies a bundle into the store, so what it publishes is what
confined workers load.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from model.bundle import BundleError, read_bundle, sign_bundle
from model.detector import AMADetector
from model.store import ModelStore
from schemas.settings import load_settings
from streamer.cli import app
from streamer.lifecycle import registry
from streamer.lifecycle.registry import Pointer, pointer_key
from streamer.lifecycle.reload import ModelSlot
from streamer.lifecycle.retrain import run_cycle
from streamer.state.client import connect

pytestmark = pytest.mark.integration

KEY = b"a-signing-key-of-32-bytes-------"


@pytest.fixture
def store(tmp_path: Path) -> ModelStore:
    root = tmp_path / "store"
    root.mkdir()
    return ModelStore(root)


def _copy(bundle: Path, to: Path, *, key: bytes | None = None) -> Path:
    shutil.copytree(bundle, to)
    if key is not None:
        sign_bundle(to, key)
    return to


def test_a_signature_covers_the_metadata_and_needs_the_key(
    tiny_bundle: Path, tmp_path: Path
) -> None:
    signed = _copy(tiny_bundle, tmp_path / "signed", key=KEY)
    assert read_bundle(signed, key=KEY).model_version == read_bundle(tiny_bundle).model_version
    read_bundle(signed)  # a reader without a key ignores the signature
    with pytest.raises(BundleError) as unsigned:
        read_bundle(tiny_bundle, key=KEY)
    assert unsigned.value.problem == "unsigned"
    with pytest.raises(BundleError) as wrong:
        read_bundle(signed, key=b"another-key-of-the-same-length--")
    assert wrong.value.problem == "bad_signature"
    meta = signed / "metadata.json"  # any change of the metadata (here: the metrics) breaks it
    meta.write_bytes(meta.read_bytes().replace(b'"metrics": {', b'"metrics": {"x": 1, ', 1))
    with pytest.raises(BundleError) as edited:
        read_bundle(signed, key=KEY)
    assert edited.value.problem == "bad_signature"


def _slot(detector: AMADetector, redis_url: str, prefix: str, **kw: object) -> ModelSlot:
    return ModelSlot(detector, client=connect(redis_url), prefix=prefix, device="cpu",
                     check_every_s=0.0, **kw)  # type: ignore[arg-type]  # fmt: skip


def _point(redis_url: str, prefix: str, path: Path, version: str) -> None:
    connect(redis_url).set(pointer_key(prefix), Pointer(path, version, "vector", (38,)).dumps())


def test_a_worker_with_a_key_refuses_unsigned_and_wrongly_signed_bundles(
    redis_url: str, redis_prefix: str, tiny_bundle: Path, other_bundle: Path, store: ModelStore
) -> None:
    serving = AMADetector.load(_copy(tiny_bundle, store.path("serving"), key=KEY))
    new = AMADetector.load(other_bundle).model_version
    cases = {
        "unsigned": (_copy(other_bundle, store.path("unsigned")), "refused"),
        "forged": (_copy(other_bundle, store.path("forged"), key=b"x" * 32), "refused"),
        "signed": (_copy(other_bundle, store.path("signed"), key=KEY), "swapped"),
    }
    for name, (path, outcome) in cases.items():
        # A fresh slot each time: a slot remembers a refused version and does not retry it.
        slot = _slot(serving, redis_url, redis_prefix, store=store, signing_key=KEY)
        _point(redis_url, redis_prefix, path, new)
        assert slot.maybe_reload() == outcome, name
        assert slot.detector.model_version == (
            new if outcome == "swapped" else serving.model_version
        )


@pytest.mark.parametrize("escape", ["dotdot", "absolute", "symlink"])
def test_a_pointer_that_leads_out_of_the_store_is_refused(
    escape: str,
    redis_url: str,
    redis_prefix: str,
    tiny_bundle: Path,
    other_bundle: Path,
    store: ModelStore,
    tmp_path: Path,
) -> None:
    outside = _copy(other_bundle, tmp_path / "outside")
    version = AMADetector.load(outside).model_version
    path = {
        "dotdot": store.root / ".." / "outside",
        "absolute": outside,
        "symlink": store.root / "link",
    }[escape]
    (store.root / "link").symlink_to(outside)
    slot = _slot(AMADetector.load(tiny_bundle), redis_url, redis_prefix, store=store)
    _point(redis_url, redis_prefix, path, version)
    assert slot.maybe_reload() == "refused"
    assert slot.detector.model_version != version


def test_the_retrain_job_refuses_a_champion_outside_the_store(
    redis_url: str, redis_prefix: str, other_bundle: Path, store: ModelStore, tmp_path: Path
) -> None:
    outside = _copy(other_bundle, tmp_path / "outside")
    _point(redis_url, redis_prefix, outside, AMADetector.load(outside).model_version)
    settings = load_settings(
        redis={"url": redis_url, "key_prefix": redis_prefix}, retrain={"store": store.root}
    )
    with pytest.raises(BundleError, match="not inside the model store"):
        run_cycle(settings)
    assert registry.history(connect(redis_url), redis_prefix) == []  # nothing was recorded


def test_a_model_larger_than_max_dims_is_refused(
    redis_url: str, redis_prefix: str, tiny_bundle: Path, other_bundle: Path
) -> None:
    slot = _slot(AMADetector.load(tiny_bundle), redis_url, redis_prefix, max_dims=37)
    _point(redis_url, redis_prefix, other_bundle, AMADetector.load(other_bundle).model_version)
    assert slot.maybe_reload() == "refused"


def test_publish_copies_the_bundle_into_the_store_and_checks_the_key(
    redis_url: str, redis_prefix: str, tiny_bundle: Path, store: ModelStore, tmp_path: Path
) -> None:
    args = ["--redis-url", redis_url, "--redis-prefix", redis_prefix, "--store", str(store.root)]
    runner = CliRunner()
    env = {"AMA_MODEL__SIGNING_KEY": KEY.decode()}
    refused = runner.invoke(app, ["model", "publish", "--bundle", str(tiny_bundle), *args], env=env)
    assert refused.exit_code != 0 and "unsigned" in str(refused.exception)

    bundle = _copy(tiny_bundle, tmp_path / "to-sign")
    signed = runner.invoke(app, ["model", "sign", "--bundle", str(bundle)], env=env)
    assert signed.exit_code == 0, signed.output
    done = runner.invoke(app, ["model", "publish", "--bundle", str(bundle), *args], env=env)
    assert done.exit_code == 0, done.output
    pointer = registry.current(connect(redis_url), redis_prefix)
    assert pointer is not None and pointer.path == store.path(pointer.version).resolve()
    read_bundle(pointer.path, key=KEY)  # the copy carries the signature


def test_the_worker_cli_with_a_key_refuses_an_unsigned_bundle_in_one_line(
    kafka_bootstrap: str, redis_url: str, tiny_bundle: Path, tmp_path: Path
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "streamer.cli", "worker", "--model", str(tiny_bundle),
         "--bootstrap", kafka_bootstrap, "--redis-url", redis_url, "--metrics-port", "0",
         "--input-topic", "__consumer_offsets", "--scores-topic", "__consumer_offsets",
         "--alerts-topic", "__consumer_offsets", "--dlq-topic", "__consumer_offsets"],
        env={"AMA_MODEL__SIGNING_KEY": KEY.decode(), "PATH": "/usr/bin:/bin",
             "PYTHONPATH": str(Path.cwd())},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    last = done.stderr.strip().splitlines()[-1]
    assert done.returncode != 0 and last.startswith("error: bundle ") and "unsigned" in last, last
    assert KEY.decode() not in done.stderr
