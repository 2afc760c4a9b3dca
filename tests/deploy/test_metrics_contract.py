"""The Prometheus rules and the Grafana dashboard against the real metrics.

promtool checks the rules and runs their unit tests; the dashboard's queries must parse; a
running worker and a running retrain job (`run_schedule`) are scraped over HTTP, and every
metric the rules and the dashboard name must be in what they expose, named by the Prometheus
conventions (base units in the name, ``_total`` on counters). Their probes answer too.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import redis
import yaml
from helpers import Topics, free_ports, make_settings, make_worker, produce, read_topic, running
from prometheus_client.parser import text_string_to_metric_families

from model.detector import AMADetector
from model.store import ModelStore
from streamer.lifecycle import registry
from streamer.lifecycle.drift import DriftMetrics
from streamer.lifecycle.retrain import run_schedule
from streamer.probes import ProbeServer
from streamer.worker.metrics import WorkerMetrics

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "ama-stream.rules.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "ama-stream.rules.test.yml"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
GRAFANA = ROOT / "deploy" / "grafana" / "ama-stream-fleet.json"
#: The last word of a gauge's or histogram's name: its unit (base units only), or what a
#: unitless number is (a ratio, an info metric, the population stability index).
UNITS = ("seconds", "bytes", "records", "partitions", "keys", "ratio", "info", "psi")
NOT_BASE_UNITS = ("ms", "milliseconds", "microseconds", "minutes", "hours", "kb", "mb", "percent")


def promtool(*args: str | Path) -> subprocess.CompletedProcess[str]:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.fail("promtool not found: deploy/dev.sh setup installs Debian's prometheus package")
    return subprocess.run([binary, *map(str, args)], capture_output=True, text=True, timeout=60,
                          check=False)  # fmt: skip


def rule_queries() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def dashboard_queries() -> list[str]:
    panels = json.loads(GRAFANA.read_text())["panels"]
    return [t["expr"] for p in panels for t in p.get("targets", [])]


def metric_names(queries: list[str]) -> set[str]:
    return {name for q in queries for name in re.findall(r"\bama_[a-z0-9_]+\b", q)}


def exposed(text: str) -> set[str]:
    """Every series name an exposition declares (a labelled metric without children yet has
    its HELP and TYPE lines, and no sample)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}
    out = set()
    for family in text_string_to_metric_families(text):
        out |= {family.name + s for s in suffixes.get(family.type, ("",))}
        out |= {sample.name for sample in family.samples}
    return out


def convention_problems(text: str) -> list[str]:
    problems = []
    for family in text_string_to_metric_families(text):
        name, kind = family.name, family.type
        if name.endswith("_created"):
            continue  # prometheus-client's creation timestamps of counters and histograms
        if not re.fullmatch(r"ama_[a-z][a-z0-9_]*", name):
            problems.append(f"{name}: not ama_ and snake_case")
        if any(word in name.split("_") for word in NOT_BASE_UNITS):
            problems.append(f"{name}: not in base units")
        if kind == "counter":
            if name.endswith("_total") or any(
                not s.name.endswith(("_total", "_created")) for s in family.samples
            ):
                problems.append(f"{name}: a counter is exposed as exactly one NAME_total")
        elif name.endswith(("_total", "_count", "_sum", "_bucket")):
            problems.append(f"{name}: a {kind} with a reserved suffix")
        elif name.removesuffix("_max").rsplit("_", 1)[-1] not in UNITS:
            problems.append(f"{name}: a {kind} without a unit ({', '.join(UNITS)})")
    return problems


def test_promtool_checks_and_unit_tests_the_rules() -> None:
    checked = promtool("check", "rules", RULES)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 12 rules found" in checked.stdout
    tested = promtool("test", "rules", RULE_TESTS)
    assert tested.returncode == 0, tested.stdout + tested.stderr
    alerts = {r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]}
    fired = set(re.findall(r"alertname: (\w+)\n\s+exp_alerts:", RULE_TESTS.read_text()))
    assert fired == alerts  # every alert has a test in which it fires
    config = promtool("check", "config", PROMETHEUS_CONFIG)
    assert config.returncode == 0, config.stdout + config.stderr
    jobs = {c["job_name"] for c in yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]}
    assert set(re.findall(r'job="([^"]+)"', "\n".join(rule_queries()))) == jobs


def test_the_dashboard_queries_parse(tmp_path: Path) -> None:
    """promtool parses them as recording rules (it has no other offline PromQL check)."""
    queries = dashboard_queries()
    assert len(queries) >= 20
    rules = {"groups": [{"name": "grafana", "rules": [
        {"record": f"grafana:query_{i}", "expr": q} for i, q in enumerate(queries)
    ]}]}  # fmt: skip
    path = tmp_path / "grafana.rules.yml"
    path.write_text(yaml.safe_dump(rules))
    checked = promtool("check", "rules", path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_every_metric_of_the_worker_and_the_retrain_job_follows_the_conventions() -> None:
    from prometheus_client import generate_latest

    for metrics in (WorkerMetrics(), DriftMetrics()):
        assert convention_problems(generate_latest(metrics.registry).decode()) == []


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


def _until(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.2)


@pytest.mark.integration
def test_the_rules_and_the_dashboard_use_only_metrics_a_worker_and_the_retrain_job_expose(
    kafka_bootstrap: str,
    redis_url: str,
    redis_prefix: str,
    topics: Topics,
    group_factory: Callable[[], str],
    tiny_bundle: Path,
    tmp_path: Path,
) -> None:
    # Into the model store, as `model publish` does: the retrain job reads its champion only
    # from there (a cycle that cannot would leave the job unready).
    store = ModelStore(tmp_path / "store")
    registry.publish_manual(redis.Redis.from_url(redis_url), redis_prefix, tiny_bundle, store=store)
    retrain_port = free_ports(1)[0]
    settings = make_settings(
        kafka_bootstrap, group_factory(), topics, redis_url=redis_url, prefix=redis_prefix,
        extra={"statistics.interval.ms": "200"},
        sections={"retrain": {"store": tmp_path / "store", "group_id": group_factory(),
                              "drift_check_s": 0.5, "lock_ttl_s": 60, "time_budget_s": 30}},
    )  # fmt: skip
    job_settings = settings.model_copy(
        update={"metrics": settings.metrics.model_copy(update={"port": retrain_port})}
    )
    stop = threading.Event()
    job = threading.Thread(
        target=run_schedule, args=(job_settings,), daemon=True,
        kwargs={"every_s": 3600.0, "on_drift": False, "stop": stop, "metrics": DriftMetrics()},
    )  # fmt: skip
    worker = make_worker(settings, AMADetector.load(tiny_bundle, device="cpu"))
    server = ProbeServer(worker.metrics.probes(), port=0, host="127.0.0.1").start()
    worker_url, job_url = f"http://127.0.0.1:{server.port}", f"http://127.0.0.1:{retrain_port}"
    job.start()
    try:
        with running(worker):
            record = orjson.dumps({"key": "k", "ts": time.time(), "values": [0.1] * 38})
            produce(kafka_bootstrap, topics.input, [(b"k", record)] * 20 + [(b"k", b"x")])
            read_topic(kafka_bootstrap, topics.scores, expect=20, settle=0.0)
            _until(lambda: _get(worker_url + "/readyz")[0] == 200, "the worker never got ready")
            _until(lambda: "ama_consumer_lag_records{" in _get(worker_url + "/metrics")[1],
                   "no lag gauge after the statistics interval")  # fmt: skip
            assert _get(worker_url + "/healthz")[0] == 200
            worker_text = _get(worker_url + "/metrics")[1]
        _until(lambda: _get(job_url + "/readyz")[0] == 200, "the retrain job never got ready")
        assert _get(job_url + "/healthz")[0] == 200
        _until(lambda: "ama_score_psi_max " in _get(job_url + "/metrics")[1], "no drift check")
        job_text = _get(job_url + "/metrics")[1]
    finally:
        stop.set()
        job.join(60)
        server.stop()
    assert not job.is_alive()
    names = exposed(worker_text) | exposed(job_text)
    used_by_rules = metric_names(rule_queries())
    used_by_dashboard = metric_names(dashboard_queries())
    assert used_by_rules - names == set(), "rules name metrics nobody exposes"
    assert used_by_dashboard - names == set(), "the dashboard names metrics nobody exposes"
    assert len(used_by_rules | used_by_dashboard) >= 15
    assert convention_problems(worker_text) == [] and convention_problems(job_text) == []
