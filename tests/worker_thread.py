"""Run a worker in a thread for a test, shared by the streamer and retrain suites."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from streamer.worker import Worker


@contextmanager
def running(worker: Worker) -> Iterator[Worker]:
    """Run ``worker`` in a thread; stop and join it on exit (re-raising its exception), so a
    worker that crashed fails the test that started it."""
    errors: list[BaseException] = []

    def target() -> None:
        try:
            worker.run()
        except BaseException as exc:  # surfaced in the test thread below
            errors.append(exc)

    thread = threading.Thread(target=target, name="worker", daemon=True)
    thread.start()
    try:
        yield worker
    finally:
        worker.stop()
        thread.join(60)
        assert not thread.is_alive(), "worker did not stop within 60 s"
    if errors:
        raise errors[0]
