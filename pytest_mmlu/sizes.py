"""Byte sizes as people write them in markers and options ("6 GiB", "6GB", "6144 MiB")."""

from __future__ import annotations

import re

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 10**3,
    "mb": 10**6,
    "gb": 10**9,
    "tb": 10**12,
    "kib": 2**10,
    "mib": 2**20,
    "gib": 2**30,
    "tib": 2**40,
}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: object) -> int:
    """Return a byte count; raise ValueError with the accepted forms on anything else."""
    if isinstance(value, bool):
        raise ValueError(f"invalid size {value!r}")
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"size must be positive, got {value}")
        return value
    if isinstance(value, str):
        m = _SIZE.match(value)
        if m and m.group(2).lower() in _UNITS:
            n = float(m.group(1)) * _UNITS[m.group(2).lower()]
            if n <= 0:
                raise ValueError(f"size must be positive, got {value!r}")
            return int(n)
    raise ValueError(f"invalid size {value!r}; write e.g. '6 GiB', '6GB', '6144 MiB' or an int of bytes")


def format_gib(n: float | None) -> str:
    return "-" if n is None else f"{n / 2**30:.2f} GiB"
