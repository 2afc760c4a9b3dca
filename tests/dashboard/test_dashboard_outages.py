"""The page survives Redis and the broker restarting: it says it is reconnecting, then recovers.

A private broker + Redis (`LocalStack` on free ports, in a temporary folder), so stopping them
cannot disturb anyone else; a real worker and the dashboard run against it, and the page is
open in headless Chromium throughout.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
import redis
from confluent_kafka.admin import AdminClient, NewTopic
from dashboard_support import incident, serving, wait
from helpers import DIM, Topics, free_ports, make_settings, make_worker, produce, running
from selenium import webdriver
from selenium.webdriver.common.by import By

from model.detector import AMADetector
from model.testing import synthetic_normal
from streamer.devtools.local_stack import LocalStack
from streamer.lifecycle import registry

pytestmark = pytest.mark.integration

BANNER_SHOWN = "!document.querySelector('#conn-banner').hidden && " \
               "document.querySelector('#conn-banner').textContent.includes('{}')"  # fmt: skip
BANNER_GONE = "document.querySelector('#conn-banner').hidden"


@pytest.fixture
def private_stack(tmp_path: Path) -> Iterator[LocalStack]:
    kafka, controller, redis_port = free_ports(3)
    stack = LocalStack(tmp_path / "stack", kafka_port=kafka, controller_port=controller,
                       redis_port=redis_port)  # fmt: skip
    try:
        stack.up()
        yield stack
    finally:
        stack.down()


def records(key: str, start: float, n: int, *, seed: int, incident_at: int | None = None) -> list:
    rows = synthetic_normal(n, DIM, seed=seed)
    if incident_at is not None:
        rows[incident_at : incident_at + 5] = [
            incident(r) for r in rows[incident_at : incident_at + 5]
        ]
    return [(key.encode(), orjson.dumps({"key": key, "ts": start + i, "values": r.tolist()}))
            for i, r in enumerate(rows)]  # fmt: skip


def test_the_page_says_it_is_reconnecting_and_recovers(
    private_stack: LocalStack,
    tiny_bundle: Path,
    browser: webdriver.Chrome,
    screenshot: Callable[..., Path],
) -> None:
    bootstrap = private_stack.bootstrap
    topics = Topics("in", "scores", "alerts", "dlq")
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(t, 1, 1) for t in vars(topics).values()]).values():
        future.result(30)
    registry.publish_manual(redis.Redis.from_url(private_stack.redis_url), "ama", tiny_bundle)
    settings = make_settings(bootstrap, "workers", topics, redis_url=private_stack.redis_url,
                             sections={"dashboard": {"poll_s": 0.5}})  # fmt: skip
    worker = make_worker(settings, AMADetector.load(tiny_bundle, device="cpu"))
    now = time.time()
    with serving(settings) as base, running(worker):
        produce(bootstrap, topics.input, records("pump-1", now - 60, 60, seed=1))
        browser.get(base + "/#/fleet")
        wait(browser, "document.querySelector('#fleet-model-version').textContent"
                      ".startsWith('ama-')")  # fmt: skip
        wait(browser, BANNER_GONE)
        version = browser.find_element(By.ID, "fleet-model-version").text

        private_stack.down(["redis"])
        wait(browser, BANNER_SHOWN.format("Redis unreachable"), timeout=20)
        assert "reconnecting" in browser.find_element(By.ID, "conn-banner").text
        screenshot(browser, "reconnecting")
        assert browser.find_element(By.ID, "fleet-model-version").text == version  # last known
        private_stack.up()
        wait(browser, BANNER_GONE, timeout=30)

        private_stack.down(["kafka"])
        wait(browser, BANNER_SHOWN.format("Kafka unreachable"), timeout=30)
        private_stack.up()
        wait(browser, BANNER_GONE, timeout=60)

        # Reading resumed: an incident after the restart reaches the alerts view.
        produce(bootstrap, topics.input,
                records("pump-2", time.time(), 40, seed=2, incident_at=20))  # fmt: skip
        browser.get(base + "/#/alerts")
        wait(browser, "document.querySelector('tr[data-key=\"pump-2\"]')", timeout=60)
        assert browser.find_element(By.ID, "conn-banner").get_attribute("hidden") is not None
