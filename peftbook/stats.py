"""Intervals and tests over a handful of runs: what a comparison of seeds may and may not say.

Every number the course compares is a mean over a few seeds (3 to 5). The right interval for so few
values is Student's t, not the normal: with 3 seeds the 95% half-width is 4.30 standard errors, not 1.96.
This module has no dependency beyond the standard library (no scipy):

* ``t_cdf`` / ``t_quantile``: Student's t distribution (regularized incomplete beta, continued fraction);
* ``t_interval(values)``: mean and 95% interval of the mean;
* ``paired(a, b)``: the mean difference of two methods run on the same seeds, its interval and p-value;
* ``welch(a, b)``: the same for two unpaired samples (Welch's unequal-variance t);
* ``holm(p_values)``: Holm's step-down correction for several comparisons at once;
* ``scoring_interval(p, n)``: the binomial noise of one accuracy on ``n`` test examples (Wilson).

A comparison's ``verdict`` is "higher" or "lower" when its interval excludes 0, else "cannot tell": the
data decide which, never a threshold chosen after looking.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

CONFIDENCE = 0.95


def _beta_fraction(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz's method)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    fraction = d
    for m in range(1, 300):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            fraction *= c * d
        if abs(c * d - 1.0) < 1e-15:
            break
    return fraction


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), for 0 <= x <= 1."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    if df <= 0:
        raise ValueError(f"df={df!r} is not allowed; use a positive number of degrees of freedom")
    tail = 0.5 * incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(probability: float, df: float) -> float:
    """The ``probability`` quantile of Student's t with ``df`` degrees of freedom (bisection on ``t_cdf``)."""
    if not 0.0 < probability < 1.0:
        raise ValueError(f"probability={probability!r} is not allowed; use a number strictly between 0 and 1")
    low, high = -1.0, 1.0
    while t_cdf(low, df) > probability:
        low *= 2.0
    while t_cdf(high, df) < probability:
        high *= 2.0
    for _ in range(200):
        middle = 0.5 * (low + high)
        if t_cdf(middle, df) < probability:
            low = middle
        else:
            high = middle
        if high - low < 1e-12:
            break
    return 0.5 * (low + high)


@dataclass(frozen=True)
class Interval:
    """A mean with its two-sided interval; ``low``/``high`` are None when n < 2 (no spread to measure)."""
    mean: float
    low: float | None
    high: float | None
    n: int
    sd: float | None

    @property
    def half_width(self) -> float | None:
        return None if self.low is None else (self.high - self.low) / 2

    def text(self, digits: int = 3) -> str:
        if self.low is None:
            return f"{self.mean:.{digits}f} (n={self.n}, no interval)"
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"

    def to_dict(self) -> dict:
        return {**asdict(self), "half_width": self.half_width}


def _check_values(name: str, values) -> list[float]:
    values = [float(v) for v in values]
    if not values or any(math.isnan(v) for v in values):
        raise ValueError(f"{name}={values!r} is not allowed; give at least one number and no NaN")
    return values


def t_interval(values, confidence: float = CONFIDENCE) -> Interval:
    """Mean of ``values`` and its ``confidence`` interval (Student's t with n - 1 degrees of freedom)."""
    values = _check_values("values", values)
    n, mean = len(values), sum(values) / len(values)
    if n < 2:
        return Interval(mean, None, None, n, None)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(0.5 + confidence / 2, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n, sd)


@dataclass(frozen=True)
class Comparison:
    """``a`` minus ``b``: the mean difference, its interval, the two-sided p-value and what they allow."""
    difference: Interval
    p_value: float | None
    test: str

    @property
    def verdict(self) -> str:
        """"higher" / "lower" when the interval excludes 0, else "cannot tell"."""
        d = self.difference
        if d.low is None:
            return "cannot tell"
        return "higher" if d.low > 0 else "lower" if d.high < 0 else "cannot tell"

    def text(self, digits: int = 3) -> str:
        d = self.difference
        if d.low is None:
            return f"difference {d.mean:+.{digits}f} (one value each: no interval, cannot tell)"
        return (f"difference {d.mean:+.{digits}f} [{d.low:+.{digits}f}, {d.high:+.{digits}f}], "
                f"p = {self.p_value:.3g} ({self.test})")

    def to_dict(self) -> dict:
        return {"difference": self.difference.to_dict(), "p_value": self.p_value, "test": self.test,
                "verdict": self.verdict}


def _two_sided_p(t: float, df: float) -> float:
    return 2.0 * t_cdf(-abs(t), df)


def paired(a, b, confidence: float = CONFIDENCE) -> Comparison:
    """``a[i] - b[i]`` over runs paired by seed (same examples, same order): a one-sample t on the differences.

    ``b`` may be a single number (a deterministic baseline such as the untrained model): every run is then
    compared with it.
    """
    a = _check_values("a", a)
    b = _check_values("b", [b] * len(a) if isinstance(b, (int, float)) else b)
    if len(a) != len(b):
        raise ValueError(f"paired comparison needs as many values in a ({len(a)}) as in b ({len(b)})")
    differences = [x - y for x, y in zip(a, b)]
    interval = t_interval(differences, confidence)
    if interval.low is None:
        return Comparison(interval, None, "paired t")
    if interval.sd == 0:
        p = 1.0 if interval.mean == 0 else 0.0
    else:
        p = _two_sided_p(interval.mean / (interval.sd / math.sqrt(interval.n)), interval.n - 1)
    return Comparison(interval, p, "paired t")


def welch(a, b, confidence: float = CONFIDENCE) -> Comparison:
    """``mean(a) - mean(b)`` for two unpaired samples, Welch's t (variances not assumed equal)."""
    a, b = _check_values("a", a), _check_values("b", b)
    mean = sum(a) / len(a) - sum(b) / len(b)
    if len(a) < 2 or len(b) < 2:
        return Comparison(Interval(mean, None, None, min(len(a), len(b)), None), None, "Welch t")
    var_a, var_b = (t_interval(x).sd ** 2 / len(x) for x in (a, b))
    se = math.sqrt(var_a + var_b)
    if se == 0:
        return Comparison(Interval(mean, mean, mean, min(len(a), len(b)), 0.0), 1.0 if mean == 0 else 0.0, "Welch t")
    df = (var_a + var_b) ** 2 / (var_a ** 2 / (len(a) - 1) + var_b ** 2 / (len(b) - 1))
    half = t_quantile(0.5 + confidence / 2, df) * se
    interval = Interval(mean, mean - half, mean + half, min(len(a), len(b)), None)
    return Comparison(interval, _two_sided_p(mean / se, df), "Welch t")


def holm(p_values: list[float], alpha: float = 1 - CONFIDENCE) -> list[bool]:
    """Which of several tests reject at family-wise level ``alpha`` (Holm's step-down procedure)."""
    order = sorted(range(len(p_values)), key=lambda i: p_values[i])
    rejected = [False] * len(p_values)
    for rank, index in enumerate(order):
        if p_values[index] > alpha / (len(p_values) - rank):
            break
        rejected[index] = True
    return rejected


def scoring_interval(p: float, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson interval of an accuracy ``p`` measured on ``n`` examples: the noise of the test split alone."""
    if n < 1:
        raise ValueError(f"n={n!r} is not allowed; use the number of scored examples, at least 1")
    z = math.sqrt(2.0) * _inverse_erf(confidence)
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def _inverse_erf(y: float) -> float:
    low, high = 0.0, 10.0
    for _ in range(200):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if math.erf(middle) < y else (low, middle)
    return 0.5 * (low + high)
