"""Value ranges as people write them in a "metrics to watch" table: ``< 0.2``, ``0.3–0.7``, ``1.0 or 0.25``.

Accepted forms (spaces optional, case-insensitive):

==================  ====================================================================
``< 0.2``           also ``<=``, ``>``, ``>=``, ``≤``, ``≥``
``0.3-0.7``         inclusive; the dash may be ``-``, an en dash ``–``, an em dash, or ``to``
``1.0``             a value that rounds to 1.0 at the precision written (0.95 ≤ x < 1.05)
``1.0 or 0.25``     any of several forms (``or`` or a comma between them)
``NaN``, ``Inf``    a NaN value; an infinite value (either sign; ``-Inf``/``+Inf`` for one)
``1e-6``            scientific notation anywhere a number goes
``> 10x median``    relative to the metric's own median (``×`` works too)
==================  ====================================================================

``parse_range`` turns text into a ``Range``; bad text raises ``RangeSyntaxError`` saying what
was expected.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from labfolio.analysis.errors import RangeSyntaxError

__all__ = ["Bound", "Range", "parse_range", "RANGE_EXAMPLES"]

RANGE_EXAMPLES = "'< 0.2', '<= 5', '0.3-0.7', '> 0.4', '>= 1.0', '1.0 or 0.25', '1.0', 'NaN', '> 10x median'"

_NUMBER = r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?"
_COMPARATORS = {"<": "<", "<=": "<=", "=<": "<=", "≤": "<=", ">": ">", ">=": ">=", "=>": ">=", "≥": ">="}
_RELATIVE = r"(?:([x×])\s*(?:its\s+|the\s+)?(?:running\s+)?(median))?"  # '10x median', '10× its median'
_COMPARISON = re.compile(rf"^(<=|>=|=<|=>|<|>|≤|≥)\s*({_NUMBER})\s*{_RELATIVE}$", re.I)
_INTERVAL = re.compile(rf"^({_NUMBER})\s*(?:-|–|—|\bto\b)\s*({_NUMBER})$", re.I)
_POINT = re.compile(rf"^(?:==?\s*)?({_NUMBER})$")
_SPLIT = re.compile(r"\s+or(?:\s+|$)|\s*,\s*", re.I)


def _written_precision(number: str) -> float:
    """Half a unit in the last written digit: '1.0' -> 0.05, '0.25' -> 0.005, '1e-6' -> 5e-7."""
    mantissa, _, exponent = number.lower().lstrip("+-").partition("e")
    decimals = len(mantissa.partition(".")[2])
    return 0.5 * 10.0 ** (int(exponent or 0) - decimals)


@dataclass(frozen=True)
class Bound:
    """One alternative of a range."""

    op: str  # '<' '<=' '>' '>=' 'between' 'near' 'nan' 'inf'
    low: float = math.nan  # 'between' low end, 'near' centre, or a comparison's number
    high: float = math.nan  # 'between' high end
    tolerance: float = 0.0  # 'near': half a unit of the last written digit
    sign: int = 0  # 'inf': +1 or -1 for one sign, 0 for either
    relative: bool = False  # the number is a factor of the metric's median

    def contains(self, value: float, median: float | None = None) -> bool:
        if self.op == "nan":
            return math.isnan(value)
        if math.isnan(value):
            return False
        if self.op == "inf":
            return math.isinf(value) and (self.sign == 0 or math.copysign(1, value) == self.sign)
        limit = self.low
        if self.relative:
            if median is None or not math.isfinite(median):
                return False
            limit = self.low * median
        if self.op == "<":
            return value < limit
        if self.op == "<=":
            return value <= limit
        if self.op == ">":
            return value > limit
        if self.op == ">=":
            return value >= limit
        if self.op == "between":
            return self.low <= value <= self.high
        return abs(value - self.low) <= self.tolerance * (1 + 1e-9)  # 'near'


@dataclass(frozen=True)
class Range:
    """A parsed range: the text as written and its alternatives (a value matches if any does)."""

    text: str
    bounds: tuple[Bound, ...]

    @property
    def relative(self) -> bool:
        """True when some alternative compares with the metric's median."""
        return any(bound.relative for bound in self.bounds)

    def contains(self, value: float, median: float | None = None) -> bool:
        """Whether `value` lies in the range (`median` is needed for relative forms)."""
        return any(bound.contains(float(value), median) for bound in self.bounds)

    def __str__(self) -> str:
        return self.text


def _parse_alternative(text: str, whole: str) -> Bound:
    lowered = text.lower()
    if lowered in ("nan", "nans"):
        return Bound("nan")
    if lowered in ("inf", "+inf", "-inf", "infinity", "+infinity", "-infinity", "±inf"):
        return Bound("inf", sign=-1 if lowered.startswith("-") else 1 if lowered.startswith("+") else 0)
    match = _COMPARISON.match(text)
    if match:
        op, number, times, _ = match.groups()
        return Bound(_COMPARATORS[op], low=float(number), relative=times is not None)
    match = _INTERVAL.match(text)
    if match:
        low, high = float(match.group(1)), float(match.group(2))
        if low > high:
            raise RangeSyntaxError(
                f"cannot read the range {whole!r}: its low end {match.group(1)} is above its high end "
                f"{match.group(2)}; write '{match.group(2)}-{match.group(1)}'"
            )
        return Bound("between", low=low, high=high)
    match = _POINT.match(text)
    if match:
        number = match.group(1)
        return Bound("near", low=float(number), tolerance=_written_precision(number))
    if re.search(r"[x×]\s*\w+", text, re.I) and "median" not in lowered:
        detail = "only the median can be a reference ('> 10x median')"
    elif not text:
        detail = "an empty alternative (a stray 'or' or comma?)"
    else:
        detail = f"{text!r} is not a comparison, an interval, a number or NaN"
    raise RangeSyntaxError(f"cannot read the range {whole!r}: {detail}. Write one of: {RANGE_EXAMPLES}")


def parse_range(text: str) -> Range:
    """Parse a range (forms in the module doc); raises ``RangeSyntaxError`` on anything else.

    >>> parse_range("0.3–0.7").contains(0.5), parse_range("1.0 or 0.25").contains(0.251)
    (True, True)
    """
    if not isinstance(text, str):
        raise RangeSyntaxError(f"a range must be text such as '< 0.2', got {text!r}")
    cleaned = " ".join(text.strip().split())
    if not cleaned:
        raise RangeSyntaxError(f"the range is empty. Write one of: {RANGE_EXAMPLES}")
    alternatives = _SPLIT.split(cleaned)
    return Range(cleaned, tuple(_parse_alternative(alt.strip(), cleaned) for alt in alternatives))
