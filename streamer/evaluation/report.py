"""The stream tables of docs/RESULTS.md: a block between two markers that each stream run
replaces (and the tabular report keeps), plus every number as JSON beside it."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from streamer.evaluation.run import FALSE_ALERT_BUDGET, POLICIES, Judged
from streamer.evaluation.scoring import FIT_SHARE, FLOOR_QUANTILE, GroupScores

__all__ = ["BEGIN", "END", "write_streams"]

BEGIN = "<!-- streams:begin -->"  # model/report.py keeps what follows it
END = "<!-- streams:end -->"
PRODUCT = "AMA"  # the detector the product serves by default: its whole curve is shown


def _mean(values: Iterable[float]) -> float:
    v = [x for x in values if not math.isnan(x)]
    return float(np.mean(v)) if v else float("nan")


def _f(x: float, digits: int = 3) -> str:
    return "–" if math.isnan(x) else f"{x:.{digits}f}"


def summarise(rows: list[Judged]) -> dict[str, float]:
    """Means over streams, and delays pooled over every detected segment."""
    delays = [d for j in rows for d in j.event["delays_rows"]]
    delays_s = [d for j in rows for d in j.event["delays_s"]]
    days = sum(j.tail_days for j in rows)
    return {
        "precision": _mean(j.event["precision"] for j in rows),
        "recall": _mean(j.event["recall"] for j in rows),
        "f1": _mean(j.event["f1"] for j in rows),
        "delay_median_rows": float(np.median(delays)) if delays else float("nan"),
        "delay_p90_rows": float(np.quantile(delays, 0.9)) if delays else float("nan"),
        "delay_median_s": float(np.median(delays_s)) if delays_s else float("nan"),
        "false_per_day": _mean(j.event["false_per_day"] for j in rows),
        "tail_false_per_day": sum(j.tail_false for j in rows) / days if days else float("nan"),
        "vus_pr": _mean(j.vus_pr for j in rows),
        "auroc": _mean(j.point["auroc"] for j in rows),
        "auprc": _mean(j.point["auprc"] for j in rows),
    }


def _means_table(judged: list[Judged], suite: str, chosen: dict[str, str],
                 scores: dict[tuple[str, str], GroupScores]) -> list[str]:  # fmt: skip
    out = [
        f"**{suite.upper()}** ({len({j.stream for j in judged if j.suite == suite})} streams)",
        "",
        "| detector | policy | precision | recall | F1 | delay median / p90 (rows) | "
        "delay median | false alerts/day | VUS-PR | AUROC | AUPRC | fit s |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for det, policy in chosen.items():
        rows = [j for j in judged if j.suite == suite and j.detector == det and j.policy == policy]
        if not rows:
            continue
        m = summarise(rows)
        fit = sum(g.fit_s for (d, _), g in scores.items() if d == det and g.suite == suite)
        out.append(
            f"| {det} | {policy} | {_f(m['precision'])} | {_f(m['recall'])} | **{_f(m['f1'])}**"
            f" | {_f(m['delay_median_rows'], 0)} / {_f(m['delay_p90_rows'], 0)}"
            f" | {_duration(m['delay_median_s'])} | {_f(m['false_per_day'], 2)}"
            f" | **{_f(m['vus_pr'])}** | {_f(m['auroc'])} | {_f(m['auprc'])} | {fit:.0f} |"
        )
    return [*out, ""]


def _duration(seconds: float) -> str:
    if math.isnan(seconds):
        return "–"
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


def _per_stream(judged: list[Judged], suite: str, chosen: dict[str, str]) -> list[str]:
    dets = list(chosen)
    out = [
        f"<details><summary>{suite.upper()} per stream: event F1 / VUS-PR</summary>",
        "",
        "| stream | " + " | ".join(dets) + " |",
        "|---|" + "---:|" * len(dets),
    ]
    streams = dict.fromkeys(j.stream for j in judged if j.suite == suite)
    index = {(j.stream, j.detector, j.policy): j for j in judged}
    for s in streams:
        cells = []
        for det in dets:
            j = index[(s, det, chosen[det])]
            cells.append(f"{_f(j.event['f1'], 2)} / {_f(j.vus_pr, 2)}")
        out.append(f"| {s} | " + " | ".join(cells) + " |")
    return [*out, "", "</details>", ""]


def _curve(judged: list[Judged], suites: list[str], detector: str) -> list[str]:
    out = [
        f"**Trade-off of `{detector}` along the candidate policies** (precision / recall / "
        "median delay in rows; the last column is what the rule reads: false alerts per key-day "
        "on the training tails, all suites pooled)",
        "",
        "| policy | " + " | ".join(s.upper() for s in suites) + " | tails: false/day |",
        "|---|" + "---:|" * (len(suites) + 1),
    ]
    for policy in POLICIES:
        cells = []
        for suite in suites:
            rows = [
                j for j in judged if (j.suite, j.detector, j.policy) == (suite, detector, policy)
            ]
            m = summarise(rows)
            cells.append(
                f"{_f(m['precision'], 2)} / {_f(m['recall'], 2)} / {_f(m['delay_median_rows'], 0)}"
            )
        pooled = summarise([j for j in judged if (j.detector, j.policy) == (detector, policy)])
        out.append(
            f"| {policy} | " + " | ".join(cells) + f" | {_f(pooled['tail_false_per_day'], 2)} |"
        )
    return [*out, ""]


def render(judged: list[Judged], scores: dict[tuple[str, str], GroupScores],
           chosen: dict[str, str]) -> str:  # fmt: skip
    suites = list(dict.fromkeys(j.suite for j in judged))
    now = datetime.now(UTC).isoformat(timespec="seconds")
    lines = [
        BEGIN,
        "## (e) Streams: alerts through the worker's verdict path",
        "",
        f"Generated by `ama-stream eval --suites streams` on {now}. Protocol: "
        "docs/stream-eval.md. Each stream is one key, replayed in time order; every detector is "
        f"fitted on the first {FIT_SHARE:.0%} of its training rows; the rest (the tail) sets the "
        f"floor (quantile {FLOOR_QUANTILE} of its scores) and warms the key's thresholds in "
        "Redis; the test part then runs through the real `verdicts.lua` (per-key quantile "
        "threshold, alert state machine). The policy of each detector is chosen without labels: "
        "the most sensitive candidate with at most "
        f"{FALSE_ALERT_BUDGET:g} false alert per key-day on the training tails. Event metrics: "
        "an episode is true when it fires inside a labelled segment; recall counts segments in "
        "which an episode fires; delay = that firing row minus the segment's first row. "
        "Precision and recall are means over streams; delays are pooled over segments.",
        "",
    ]
    for suite in suites:
        lines += _means_table(judged, suite, chosen, scores)
    lines += _curve(judged, suites, PRODUCT)
    for suite in suites:
        lines += _per_stream(judged, suite, chosen)
    return "\n".join([*lines, END]) + "\n"


def write_streams(out: Path, judged: list[Judged], scores: dict[tuple[str, str], GroupScores],
                  chosen: dict[str, str]) -> None:  # fmt: skip
    """Replace the stream block of ``out`` (or append it) and write ``*-streams.json``."""
    block = render(judged, scores, chosen)
    old = out.read_text() if out.is_file() else ""
    if BEGIN in old and END in old:
        head, rest = old.split(BEGIN, 1)
        text = head + block + rest.split(END, 1)[1].lstrip("\n")
    else:
        text = (old.rstrip("\n") + "\n\n" if old else "") + block
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    out.with_name(out.stem + "-streams.json").write_text(json.dumps(summary(judged, chosen)))


def summary(judged: list[Judged], chosen: dict[str, str]) -> dict[str, Any]:
    """Every number of the tables: the means of every detector under every candidate, and the
    per-stream rows of the policies reported (each detector's chosen one, the product's whole
    curve); the other per-stream rows only feed the means."""
    return {
        "chosen_policy": chosen,
        "means": {
            suite: {
                det: {
                    p: summarise(
                        [j for j in judged if (j.suite, j.detector, j.policy) == (suite, det, p)]
                    )
                    for p in POLICIES
                }
                for det in chosen
            }
            for suite in dict.fromkeys(j.suite for j in judged)
        },
        "streams": [
            j.__dict__ for j in judged if j.policy == chosen[j.detector] or j.detector == PRODUCT
        ],
    }
