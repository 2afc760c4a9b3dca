"""Choosing the vector detector's defaults honestly: leave-datasets-out cross-validation.

A default chosen on the sets it is then reported on fits those sets (0.937 in-sample,
0.806 on four sets it had never seen). Here each candidate configuration is one column of
seed-0 results on the public tabular sets; for every fold a candidate is chosen on the *other*
folds and reported on the held-out fold only. The mean of those held-out figures estimates what
the selection procedure delivers on new sets; the candidate chosen on all sets is the one the
defaults should be (docs/model.md, "How the defaults are chosen").

The choice keeps the incumbent (the current default, listed first) unless a challenger's mean
AUROC over the choosing sets beats it by more than the incumbent's own seed-to-seed spread of
that mean (the one-standard-error rule): with one seed per candidate and two dozen candidates,
a smaller lead is what chance alone hands the luckiest column.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

# Sets built from the same source rows (shared/data/adbench/README.md, "Quirks") stay in one
# fold, so no choice is judged on a copy of rows it was made on.
RELATED = (
    ("4_breastw", "42_WBC"),
    ("30_satellite", "31_satimage-2"),
    ("2_annthyroid", "38_thyroid"),
)

Table = Mapping[str, Mapping[str, float]]  # candidate -> data set -> AUROC


@dataclass(frozen=True)
class HeldOut:
    """One data set's figure under the candidate chosen without it."""

    dataset: str
    chosen: str
    auroc: float


@dataclass(frozen=True)
class CrossValidation:
    """Every set's held-out figure, and the choice the same rule makes on all of them."""

    held_out: list[HeldOut]
    chosen_on_all: str  # what the defaults should be: the choice made on every set
    margin_on_all: float  # the lead a challenger needed on every set

    @property
    def mean(self) -> float:
        return float(np.mean([h.auroc for h in self.held_out]))


def folds(datasets: Sequence[str]) -> list[list[str]]:
    """One fold per data set, except that related sets share one."""
    out: list[list[str]] = []
    placed: set[str] = set()
    for name in datasets:
        if name in placed:
            continue
        group = next((g for g in RELATED if name in g), (name,))
        fold = [d for d in datasets if d in group]
        placed.update(fold)
        out.append(fold)
    return out


def margin(seed_runs: Mapping[str, Sequence[float]], datasets: Sequence[str]) -> float:
    """Standard deviation over seeds of the incumbent's mean AUROC over ``datasets`` (0 with
    fewer than two seeds). ``seed_runs``: data set -> the incumbent's AUROC per seed."""
    runs = np.array([seed_runs[d] for d in datasets], dtype=np.float64)  # (sets, seeds)
    if runs.ndim != 2 or runs.shape[1] < 2:
        return 0.0
    return float(np.std(runs.mean(0), ddof=1))


def choose(table: Table, datasets: Sequence[str], lead: float = 0.0) -> str:
    """The first candidate (the incumbent) unless another's mean AUROC over ``datasets`` is
    higher by more than ``lead``; then the best of those."""
    means = {c: float(np.mean([v[d] for d in datasets])) for c, v in table.items()}
    incumbent = next(iter(table))
    best = max(means, key=lambda c: means[c])  # first of equals
    return best if means[best] > means[incumbent] + lead else incumbent


def cross_validate(
    table: Table,
    datasets: Sequence[str],
    seed_runs: Mapping[str, Sequence[float]] | None = None,
) -> CrossValidation:
    """Leave-one-fold-out: choose on the other folds, report on the held-out one.

    ``seed_runs`` (the incumbent's AUROC per seed and data set) sets the lead a challenger
    needs (:func:`margin`, over the choosing sets only); without it any lead wins. Only
    candidates with a figure on every data set take part (a partial column would be chosen on
    fewer sets than the others)."""
    complete = {c: v for c, v in table.items() if all(d in v for d in datasets)}
    if not complete or next(iter(table)) not in complete:
        raise ValueError("the incumbent and its challengers need a result on every data set")

    def lead(sets: Sequence[str]) -> float:
        return margin(seed_runs, sets) if seed_runs else 0.0

    held: list[HeldOut] = []
    for fold in folds(datasets):
        rest = [d for d in datasets if d not in fold]
        pick = choose(complete, rest, lead(rest))
        held += [HeldOut(d, pick, float(complete[pick][d])) for d in fold]
    order = {d: i for i, d in enumerate(datasets)}
    held.sort(key=lambda h: order[h.dataset])
    return CrossValidation(held, choose(complete, datasets, lead(datasets)), lead(datasets))
