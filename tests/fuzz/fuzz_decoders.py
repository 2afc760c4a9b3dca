"""Coverage-guided fuzzing of every decoder of outside bytes (atheris, libFuzzer's engine).

    python tests/fuzz/fuzz_decoders.py [libFuzzer flags] [corpus dirs]

``make fuzz`` runs it for five minutes on a corpus seeded from valid records of every kind;
tests/fuzz/test_fuzz_smoke.py runs it briefly in CI. Each input goes through every target of
targets.py; any exception (an invariant's AssertionError included) is a crash: libFuzzer saves
the input as ``crash-<sha1>`` and exits non-zero. A crash found becomes a regression case in
tests/fuzz/test_fuzz_properties.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import atheris

sys.path.insert(0, str(Path(__file__).resolve().parent))

with atheris.instrument_imports(include=["schemas", "streamer.lifecycle", "streamer.dashboard"]):
    import targets


def main() -> None:
    atheris.Setup(sys.argv, targets.check_any)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
