"""The absolute counters of one dashboard bucket, as one type.

Every counter is an integer count except ``cost_cents_total``, a sum of fractional cents
(``DECIMAL(18,4)``). The values arrive as MySQL ``Decimal``s and ints, as JSON strings and
numbers (snapshots, the Faust table), as floats (the analyst API), and leave again as JSON;
:class:`Counters` is the one place that converts, so a counter compares equal whatever
its source.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from decimal import Decimal
from typing import Any

from pipeline.models import COUNTERS, DECIMAL_COUNTERS

Number = int | Decimal
CENT = Decimal("0.0001")  # the scale of cost_cents_total


def normalize(name: str, value: Any) -> Number:
    """One counter value, comparable whatever its source (MySQL, JSON, the API's floats)."""
    if name in DECIMAL_COUNTERS:
        if isinstance(value, float):
            value = repr(value)  # the API renders DECIMAL counters as JSON floats
        return Decimal(str(value if value is not None else 0)).quantize(CENT)
    return int(value or 0)


class Counters(Mapping[str, Number]):
    """All counters of a bucket (missing ones are zero), immutable, comparable to any
    mapping of counter names (``==`` compares every counter)."""

    __slots__ = ("_values",)

    def __init__(self, values: Mapping[Any, Any] | None = None) -> None:
        values = values or {}
        self._values = {name: normalize(name, values.get(name, 0)) for name in COUNTERS}

    @classmethod
    def zero(cls) -> Counters:
        return cls()

    @classmethod
    def of_row(cls, row: Mapping[Any, Any]) -> Counters:
        """From a ``dashboard_buckets`` row as the driver returns it: BIGINTs are ints and
        the DECIMAL(18,4) column a Decimal of that scale already, so nothing converts."""
        made = cls.__new__(cls)
        made._values = {name: row[name] for name in COUNTERS}
        return made

    @classmethod
    def of_values(cls, values: Sequence[Number]) -> Counters:
        """From the counter columns of a bucket row in :data:`COUNTERS` order, as the
        driver returns them (like :meth:`of_row`, nothing converts)."""
        made = cls.__new__(cls)
        made._values = dict(zip(COUNTERS, values, strict=True))
        return made

    def __getitem__(self, name: str) -> Number:
        return self._values[name]

    def __iter__(self) -> Iterator[str]:
        return iter(COUNTERS)

    def __len__(self) -> int:
        return len(COUNTERS)

    def __repr__(self) -> str:
        shown = {n: v for n, v in self._values.items() if v}
        return f"Counters({shown})"

    def __add__(self, other: Mapping[str, Any]) -> Counters:
        return Counters({n: self._values[n] + normalize(n, other.get(n, 0)) for n in COUNTERS})

    def is_zero(self) -> bool:
        return not any(self._values.values())

    def to_json(self) -> dict[str, int | str]:
        """JSON-safe and exact: the decimal counter as a string."""
        return {n: str(v) if isinstance(v, Decimal) else v for n, v in self._values.items()}

    def rendered(self) -> dict[str, int | float]:
        """For people and the analyst API: the decimal counter as a float."""
        return {n: float(v) if isinstance(v, Decimal) else v for n, v in self._values.items()}
