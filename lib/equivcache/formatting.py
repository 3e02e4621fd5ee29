# SPDX-License-Identifier: MIT
#
# Formatting for people and documents: sizes, durations and UTC times.

import re

from datetime import datetime, timezone


def utc_iso(when=None):
    """when (seconds since the epoch; default: now) as an ISO 8601 UTC time."""
    moment = datetime.now(timezone.utc) if when is None else datetime.fromtimestamp(when, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def human(size):
    """A size in bytes, for people: 512 B, 1.5 KiB, 3.2 GiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return ("%d %s" % (size, unit)) if unit == "B" else ("%.1f %s" % (size, unit))
        size /= 1024.0


def duration(seconds):
    """A duration for people: 4.2 s, 1 min 39 s, 12 min, 3 h 05 min."""
    if seconds < 60:
        return "%.1f s" % seconds
    if seconds < 600:
        return "%d min %02d s" % divmod(int(seconds + 0.5), 60)
    minutes = int(seconds / 60.0 + 0.5)
    if minutes < 60:
        return "%d min" % minutes
    return "%d h %02d min" % divmod(minutes, 60)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B)?\s*$", re.IGNORECASE)


def parse_size(text):
    """Bytes of "500G", "1.5T", "800MiB", "1024" (powers of 1024): what human() writes, read back."""
    m = _SIZE.match(text or "")
    if not m:
        raise ValueError("%r is not a size (e.g. 500G, 1.5T, 800M)" % text)
    return int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2).upper() or " "))
