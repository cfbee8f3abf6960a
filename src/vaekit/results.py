"""Typed evaluation results: every reported number with what it is.

A `Result` carries its value, standard error, estimator, sample count, unit, and its side: whether it
is exact, an estimate, or a bound on the quantity it names (and which side), so that a report can put
different families in one table without special cases. eval.json keeps the flat keys it always had
(`nll`, `nll_stderr`, `elbo`, ...) and adds these records under "results": a superset, so older readers
keep working.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

SIDES = (
    "exact",
    "estimate",  # unbiased or consistent, no side
    "lower bound",  # always <= the quantity
    "upper bound",
    "stochastic lower bound",  # <= the quantity in expectation (Jensen): IS-NLL's log p(x), RAISE
    "stochastic upper bound",  # >= in expectation: e.g. forward AIS's log p(v) through log Z
)


@dataclass(frozen=True)
class Result:
    """One reported number. `side` says how `value` relates to the quantity `name` stands for."""

    value: float
    stderr: float | None
    estimator: str
    side: str
    num_samples: int | None = None
    num_examples: int | None = None
    unit: str = "nats"

    def __post_init__(self):
        if self.side not in SIDES:
            raise ValueError(f"side: {self.side!r} is not one of {SIDES}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def mean_result(values, estimator: str, side: str, num_samples: int | None = None, unit: str = "nats") -> Result:
    """The mean of per-example values [N] with its standard error: one reported number. A paired
    difference (the same examples by two estimators) is the mean of its per-example differences."""
    values = values.double()
    n = values.numel()
    stderr = float(values.std(unbiased=True) / math.sqrt(n)) if n > 1 else float("nan")
    return Result(float(values.mean()), stderr, estimator, side, num_samples, n, unit)


def proportion(value: float, num_examples: int, estimator: str, stderr: float | None = None) -> Result:
    """A share of num_examples as a Result, its error by default the binomial sqrt(p (1 - p) / n)."""
    if stderr is None:
        stderr = math.sqrt(value * (1 - value) / num_examples)
    return Result(value, stderr, estimator, "estimate", None, num_examples, "fraction")


def flat(results: dict[str, Result]) -> dict[str, float]:
    """The legacy flat keys of eval.json: name -> value, name_stderr -> stderr."""
    out: dict[str, float] = {}
    for name, r in results.items():
        out[name] = r.value
        if r.stderr is not None:
            out[f"{name}_stderr"] = r.stderr
    return out


def as_json(results: dict[str, Result]) -> dict[str, dict]:
    return {name: r.to_dict() for name, r in results.items()}


def from_json(values: dict[str, dict]) -> dict[str, Result]:
    return {name: Result(**v) for name, v in values.items()}


def format_line(name: str, r: Result) -> str:
    """'name  value ± stderr unit  (side; estimator, N samples)'."""
    error = f" ± {r.stderr:.3f}" if r.stderr is not None else ""
    count = f", {r.num_samples} samples" if r.num_samples else ""
    return f"{name:<22} {r.value:10.3f}{error} {r.unit}  ({r.side}; {r.estimator}{count})"
