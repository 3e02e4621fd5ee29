# SPDX-License-Identifier: MIT
#
# SSTATE_MIRRORS as bitbake reads it, and what can be wrong with it.
# Pure Python: no bb import.

import re
import urllib.parse
from dataclasses import dataclass, field

# Fetchers that can serve sstate objects (bitbake's wget, local, s3, gcp,
# az and sftp fetchers).
SUPPORTED_SCHEMES = ("file", "http", "https", "ftp", "ftps", "s3", "gs", "az", "sftp")
NETWORK_SCHEMES = tuple(s for s in SUPPORTED_SCHEMES if s != "file")


@dataclass(frozen=True)
class Mirror:
    """One "<regex> <replacement URL>" pair of SSTATE_MIRRORS."""

    pattern: str
    url: str

    @property
    def scheme(self):
        return urllib.parse.urlsplit(self.url).scheme.lower()

    @property
    def is_network(self):
        return self.scheme in NETWORK_SCHEMES

    @property
    def parameters(self):
        """The ";name=value" parameters after the URL, as a dict."""
        return dict(p.split("=", 1) if "=" in p else (p, "") for p in self.url.split(";")[1:])

    @property
    def location(self):
        """The URL without its parameters."""
        return self.url.split(";", 1)[0]

    @property
    def root(self):
        """Where the sstate cache starts: the location without its /PATH."""
        location = self.location
        if location.endswith("/PATH"):
            location = location[: -len("/PATH")]
        return location.rstrip("/") or location

    @property
    def directory(self):
        """For a file:// mirror, the local directory of its root."""
        return urllib.parse.unquote(urllib.parse.urlsplit(self.root).path) if self.scheme == "file" else None


@dataclass
class ParsedMirrors:
    mirrors: list = field(default_factory=list)
    problems: list = field(default_factory=list)   # (kind, detail, Mirror or None) tuples


def split_words(value):
    """The words of a mirror variable, as bb.fetch2.mirror_from_string splits them."""
    return (value or "").replace("\\n", " ").split()


def parse_mirrors(value):
    """Parse SSTATE_MIRRORS; report malformed entries instead of raising.

    Problems are (kind, detail, mirror) tuples, kind one of "odd-words"
    (mirror None), "bad-regex", "no-path",
    "unsupported-scheme".
    """
    words = split_words(value)
    parsed = ParsedMirrors()
    if len(words) % 2:
        parsed.problems.append(("odd-words", "%d words, the last one (%s) has no pair" % (len(words), words[-1]), None))
    for pattern, url in zip(words[0::2], words[1::2]):
        mirror = Mirror(pattern, url)
        parsed.mirrors.append(mirror)
        try:
            re.compile(pattern)
        except re.error as e:
            parsed.problems.append(("bad-regex", "%s: %s" % (pattern, e), mirror))
        if mirror.scheme not in SUPPORTED_SCHEMES:
            parsed.problems.append(("unsupported-scheme", "%s (scheme %s)" % (url, mirror.scheme or "none"), mirror))
            continue
        # No ";downloadfilename=PATH" is needed: sstate.bbclass adds it to
        # every object it fetches (pstaging_fetch), since 2016.
        if "PATH" not in mirror.location:
            parsed.problems.append(("no-path", url, mirror))
    return parsed
