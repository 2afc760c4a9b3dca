"""A short coverage-guided run of the atheris harness in CI: it starts from the seed corpus,
must finish its time budget without a crash, and must actually have executed inputs."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from seeds import write_corpus

HARNESS = Path(__file__).with_name("fuzz_decoders.py")
SECONDS = 20


def test_atheris_finds_no_crash_in_a_short_run(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus")
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(Path.cwd()), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, str(HARNESS), f"-max_total_time={SECONDS}", "-max_len=4096",
         "-seed=1", "-print_final_stats=1", str(corpus)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=SECONDS + 120,
    )  # fmt: skip
    tail = done.stderr[-3000:]
    assert done.returncode == 0, tail
    assert not list(tmp_path.glob("crash-*")), tail
    runs = int(re.search(r"stat::number_of_executed_units:\s*(\d+)", done.stderr).group(1))  # type: ignore[union-attr]
    assert runs > 1000, tail
    print(f"atheris: {runs} inputs in {SECONDS} s, no crash")
