# SPDX-License-Identifier: MIT
#
# Formatting for people and documents: sizes and UTC times.

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
