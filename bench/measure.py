"""How every row is measured, from outside the measured processes.

Progress is the sum of the group's committed offsets: every loop commits only after its outputs
are acknowledged, so a committed record is a finished record. The window opens at the first
commit seen once the group is stable with all its members (so start-up and the first rebalance
are not counted) and closes when every record is committed or after ``cap_s``. CPU time is read
from /proc for the window only; peak RSS is the kernel's high-water mark (VmHWM).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from confluent_kafka import (
    Consumer,
    ConsumerGroupState,
    KafkaError,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from bench.data import BenchError

__all__ = ["Sample", "observe", "peak_rss_mb", "wait_stable"]

POLL_S = 0.02  # progress sampling period: 1% of a one-second window
BURST_S = 10.0  # how long past its cap a window waits for a bursty loop's next commit


@dataclass(frozen=True, slots=True)
class Sample:
    """One measured run."""

    records: int  # committed inside the window
    seconds: float
    cpu_s: float  # user + system CPU of the measured processes inside the window
    peak_rss_mb: float  # the largest process's peak RSS

    @property
    def rate(self) -> float:
        return self.records / self.seconds


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads) so far."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    """Peak resident set size of a live process, MiB."""
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


# Answers while a group's coordinator is being elected or moved; the next poll asks again.
_COORDINATOR_MOVING = (
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
)


class _Progress:
    """Committed offsets and membership of one consumer group."""

    def __init__(self, bootstrap: str, group: str, topic: str, partitions: int) -> None:
        self._admin = AdminClient({"bootstrap.servers": bootstrap})
        # Not subscribed: this consumer never joins the group, it only reads its commits.
        self._consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
        self._group = group
        self._tps = [TopicPartition(topic, p) for p in range(partitions)]

    def committed(self) -> int:
        got = self._consumer.committed(self._tps, timeout=10)
        return sum(max(tp.offset, 0) for tp in got)

    def stable_members(self) -> int:
        """Members holding partitions once the group is stable; 0 before, also while the
        group coordinator is still being found or moving (a retriable answer)."""
        try:
            desc = self._admin.describe_consumer_groups([self._group])[self._group].result(10)
        except KafkaException as exc:
            if exc.args[0].retriable() or exc.args[0].code() in _COORDINATOR_MOVING:
                return 0
            raise
        if desc.state != ConsumerGroupState.STABLE:
            return 0
        return sum(1 for m in desc.members if m.assignment.topic_partitions)

    def close(self) -> None:
        self._consumer.close()


def observe(
    *,
    bootstrap: str,
    group: str,
    topic: str,
    partitions: int,
    target: int,
    members: int,
    pids: list[int],
    cap_s: float,
    timeout_s: float,
    alive: Callable[[], bool],
) -> Sample:
    """Watch one run until ``target`` records are committed or ``cap_s`` after the window
    opened; raises :class:`BenchError` if it does not open within ``timeout_s``."""
    progress = _Progress(bootstrap, group, topic, partitions)
    try:
        deadline = time.monotonic() + timeout_s
        while progress.stable_members() < members or (first := progress.committed()) == 0:
            if time.monotonic() > deadline or not alive():
                raise BenchError(f"group {group} made no progress within {timeout_s:.0f} s")
            time.sleep(POLL_S)
        if first >= target:
            raise BenchError(f"group {group} finished before it was stable: too few records")
        t0, cpu0 = time.monotonic(), sum(cpu_seconds(p) for p in pids)
        # The window closes at cap_s, or later at the next commit for a loop that commits in
        # bursts (the faust runner commits every batch.max_records acks or 2.8 s), at most
        # BURST_S later.
        while (done := progress.committed()) < target and (
            time.monotonic() - t0 < cap_s or done == first
        ):
            if not alive():
                raise BenchError(f"a process of group {group} died")
            if time.monotonic() - t0 > cap_s + BURST_S:
                break
            time.sleep(POLL_S)
        t1, cpu1 = time.monotonic(), sum(cpu_seconds(p) for p in pids)
        rss = max(peak_rss_mb(p) for p in pids)
    finally:
        progress.close()
    if done <= first:
        raise BenchError(f"group {group} committed nothing inside the window")
    return Sample(records=done - first, seconds=t1 - t0, cpu_s=cpu1 - cpu0, peak_rss_mb=rss)


def wait_stable(
    bootstrap: str, group: str, members: int, *, timeout_s: float, alive: Callable[[], bool]
) -> None:
    """Return once ``group`` is stable with ``members`` members holding partitions."""
    progress = _Progress(bootstrap, group, "", 0)
    try:
        deadline = time.monotonic() + timeout_s
        while progress.stable_members() < members:
            if time.monotonic() > deadline or not alive():
                raise BenchError(f"group {group} did not become stable within {timeout_s:.0f} s")
            time.sleep(POLL_S)
    finally:
        progress.close()
