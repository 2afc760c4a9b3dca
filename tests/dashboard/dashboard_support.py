"""Helpers for the dashboard tests: a dashboard served in this process, waiting on the page,
and the incident the scenarios inject."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from selenium import webdriver
from selenium.webdriver.support.ui import WebDriverWait

from schemas.settings import Settings
from streamer.dashboard.runtime import Dashboard
from streamer.dashboard.server import DashboardServer

DRIVERS = (4, 11, 27)  # the features an incident pushes up: its alert's top features


@contextmanager
def serving(settings: Settings) -> Iterator[str]:
    """A dashboard for ``settings`` on a free port; yields its base URL."""
    dashboard = Dashboard(settings)
    server = DashboardServer(dashboard, host="127.0.0.1", port=0).start()
    try:
        dashboard.start()
        yield f"http://127.0.0.1:{server.port}"
    finally:
        server.stop()
        dashboard.stop()


def incident(row: np.ndarray) -> np.ndarray:
    out = row.copy()
    out[list(DRIVERS)] += 9.0
    return out


def wait(driver: webdriver.Chrome, what: str, timeout: float = 30.0) -> None:
    """Wait until the JavaScript expression ``what`` is truthy."""
    WebDriverWait(driver, timeout, poll_frequency=0.05).until(
        lambda d: d.execute_script(f"return !!({what})"), message=what
    )
