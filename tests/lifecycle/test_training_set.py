"""Which keys count as shifted (their flagged records are trained on): pure logic."""

from __future__ import annotations

import numpy as np

from streamer.lifecycle.training_set import _shifted_keys


def test_keys_flagged_above_the_share_are_shifted_unscored_records_do_not_count() -> None:
    keys = ["a"] * 10 + ["b"] * 10 + ["c"] * 4
    flagged = np.array([1] * 8 + [0] * 2 + [1] * 5 + [0] * 5 + [1, 1, 0, 0], dtype=bool)
    scored = np.ones(24, dtype=bool)
    scored[22:] = False  # c: 2 of 2 scored records flagged
    assert _shifted_keys(keys, flagged, scored, 0.5) == {"a", "c"}  # b: exactly half, not above
    assert _shifted_keys(keys, flagged, scored, 0.9) == {"c"}
    assert _shifted_keys(keys, flagged, scored, 1.0) == set()  # strict exclusion
    assert _shifted_keys(keys, flagged, np.zeros(24, dtype=bool), 0.5) == set()
