"""Go durations (``time.ParseDuration``): ``1m30s``, ``10m``, ``1.5h``, ``300ms``.

The CRD patterns are Flux's (``ms``, ``s``, ``m``, ``h``); the parser accepts everything Go
does (``ns``, ``us``, ``µs`` too, a sign, a bare ``0``) so values written by other tools
still parse.
"""

from __future__ import annotations

import re

# Flux's kubebuilder patterns, reused in the CRD schemas.
DURATION_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$"
TIMEOUT_PATTERN = r"^([0-9]+(\.[0-9]+)?(ms|s|m))+$"

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0,
          "m": 60.0, "h": 3600.0}
_PART = re.compile(r"([0-9]*(?:\.[0-9]*)?)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(value: str) -> float:
    """Seconds in a Go duration string; ``ValueError`` with the offending value if invalid."""
    if not isinstance(value, str):
        raise ValueError(f"duration {value!r} is not a string")
    s = value.strip()
    sign = 1.0
    if s[:1] in "+-" and s:
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    if not s:
        raise ValueError(f"invalid duration {value!r}")
    total = 0.0
    pos = 0
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None or m.group(1) in ("", "."):
            raise ValueError(f"invalid duration {value!r}: use e.g. 30s, 10m, 1h or 1m30s")
        total += float(m.group(1)) * _UNITS[m.group(2)]
        pos = m.end()
    return sign * total


def format_duration(seconds: float) -> str:
    """Go's ``Duration.String`` form of whole and fractional seconds: ``1h0m0s``, ``1m30s``,
    ``500ms``, ``0s``."""
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    seconds = abs(seconds)
    if seconds < 1:
        ms = seconds * 1000
        return f"{sign}{ms:g}ms" if ms >= 1 else f"{sign}{seconds * 1e6:g}µs"
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    sec = f"{s:.9f}".rstrip("0").rstrip(".")
    if h:
        return f"{sign}{int(h)}h{int(m)}m{sec}s"
    if m:
        return f"{sign}{int(m)}m{sec}s"
    return f"{sign}{sec}s"
