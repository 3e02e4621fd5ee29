# SPDX-License-Identifier: MIT
#
# Formatting for people and documents: sizes, durations and UTC times.

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
