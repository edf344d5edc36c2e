"""A template's resource limits, written as Kubernetes quantities, in numbers.

``cpu``: cores, ``"2"``, ``"0.5"`` or millicores ``"500m"``. ``memory``: bytes, plain or with
a suffix, binary ``Ki Mi Gi Ti`` or decimal ``k M G T`` (``"512Mi"``, ``"1G"``). Other keys
belong to other platforms and are ignored here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_MEMORY_UNITS = {
    "": 1,
    **{s: 1000**i for i, s in enumerate(("k", "M", "G", "T"), start=1)},
    **{s: 1024**i for i, s in enumerate(("Ki", "Mi", "Gi", "Ti"), start=1)},
}
_QUANTITY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*$")


@dataclass(frozen=True)
class Limits:
    """``None`` means no limit."""

    cpus: float | None = None
    memory_bytes: int | None = None


def parse_limits(resources: dict[str, str]) -> Limits:
    """The limits in ``resources``; raises ``ValueError`` naming the bad value."""
    cpus = memory = None
    if (cpu := resources.get("cpu")) is not None:
        number, unit = _split("cpu", cpu)
        if unit not in ("", "m"):
            raise ValueError(f"cpu {cpu!r}: use cores ('1', '0.5') or millicores ('500m')")
        cpus = number / 1000 if unit == "m" else number
    if (mem := resources.get("memory")) is not None:
        number, unit = _split("memory", mem)
        if unit not in _MEMORY_UNITS:
            raise ValueError(f"memory {mem!r}: use bytes or a suffix among {list(_MEMORY_UNITS)}")
        memory = int(number * _MEMORY_UNITS[unit])
    if cpus == 0 or memory == 0:
        raise ValueError(f"resource limits must be above zero: {resources}")
    return Limits(cpus=cpus, memory_bytes=memory)


def _split(name: str, value: str) -> tuple[float, str]:
    match = _QUANTITY.match(value)
    if match is None:
        raise ValueError(f"{name} {value!r} is not a quantity")
    return float(match.group(1)), match.group(2)
