"""`ama-stream bench` completes against the real broker and Redis and writes valid JSON.

A smoke test, not a timed one: it runs every row of the quick path on fewer records than
``--quick`` and checks the report's shape; it never asserts on a rate or a latency.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bench.report import BEGIN, END, write_doc
from bench.run import QUICK, run_bench
from streamer.cli import app

pytestmark = pytest.mark.integration

ROWS = ["passthrough", "pipeline-1w", "pipeline-1w-single", "pipeline-1w-fp32", "pipeline-1w-noop",
        "pipeline-1w-eos", "pipeline-2w", "per-record", "images", "faust", "river-hst"]  # fmt: skip
ROW_FIELDS = {"name", "records_per_s", "min_per_s", "max_per_s", "runs", "cpu_s_per_1k",
              "peak_rss_mb", "ratio_to_ceiling"}  # fmt: skip


def test_quick_bench_writes_every_row_as_json(
    kafka_bootstrap: str, redis_url: str, tmp_path: Path
) -> None:
    # Without the quix-river peer: its own environment is made on first use (bench/peers.py).
    cfg = replace(QUICK, records=12_000, images=4_000, cap_s=1.0, latency_s=1.5, peers=False,
                  bootstrap=kafka_bootstrap, redis_url=redis_url)  # fmt: skip
    report = run_bench(cfg, log=lambda _line: None)
    out = tmp_path / "bench.json"
    out.write_bytes(report.to_json())
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text(f"# Benchmarks\n\nkept\n\n{BEGIN}\nstale table\n{END}\n\nalso kept\n")
    write_doc(doc, report.markdown())

    result = json.loads(out.read_text())
    assert [row["name"] for row in result["rows"]] == ROWS
    for row in result["rows"]:
        assert row.keys() >= ROW_FIELDS
        assert row["records_per_s"] > 0 and row["cpu_s_per_1k"] >= 0
    assert result["rows"][0]["ratio_to_ceiling"] == 1.0
    assert {"cores", "cpu_model", "gpu"} <= result["machine"].keys()
    assert {"p50_ms", "p95_ms", "p99_ms"} <= result["latency"].keys()
    assert [t["name"] for t in result["targets"]][-2:] == [
        "faust / pipeline-1w", "p99 end-to-end latency at half max rate",
    ]  # fmt: skip
    text = doc.read_text()
    assert "kept" in text and "also kept" in text and "stale table" not in text
    assert "| `pipeline-1w` |" in text


def test_bench_command_is_wired() -> None:
    result = CliRunner().invoke(app, ["bench", "--help"])
    assert result.exit_code == 0
    assert "--quick" in result.output and "--json" in result.output
