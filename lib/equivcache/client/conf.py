# SPDX-License-Identifier: MIT
#
# equivcache-client's configuration edits: one marked block, written
# idempotently into conf/site.conf (or conf/local.conf), that never repeats
# a line the user already has. Pure Python: no bb import.

import re
import urllib.parse

from equivcache.cli import UsageError

BEGIN = "# BEGIN meta-equivcache: managed by equivcache-client, edits here are replaced"
END = "# END meta-equivcache"

_INHERIT = re.compile(r'^\s*INHERIT\s*(\+=|=\+|\.=|=\.|:append\s*=|\?\?=|\?=|=)\s*"[^"]*\bequivcache\b[^"]*"')
_SERVER = re.compile(r'^\s*EQUIVCACHE_SERVER\s*(\?\?=|\?=|:=|=)\s*"([^"]*)"')


class ConfError(UsageError, ValueError):
    """Bad input for equivcache-client: one line, exit status 2, nothing written."""


def check_url(url):
    """The server URL without a trailing slash; ConfError if it is not one."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https", "file") or (parts.scheme != "file" and not parts.hostname):
        raise ConfError("%r is not a cache server URL (http://host:port, https://... or file:///path)" % url)
    if parts.query or parts.fragment:
        raise ConfError("%r: a cache server URL has no query or fragment" % url)
    if '"' in url or any(c.isspace() for c in url):
        raise ConfError("%r: a cache server URL has no quotes or spaces" % url)
    try:
        parts.port
    except ValueError as e:
        raise ConfError("%r: %s" % (url, e))
    return url.rstrip("/")


def split_block(text):
    """(text before, block lines or None, text after) of a configuration file."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if line.rstrip("\n") == BEGIN]
    if not starts:
        return text, None, ""
    start = starts[0]
    for end in range(start + 1, len(lines)):
        if lines[end].rstrip("\n") == END:
            return "".join(lines[:start]), lines[start + 1:end], "".join(lines[end + 1:])
    raise ConfError("a '%s' line without its '%s' line; fix the file by hand" % (BEGIN, END))


def user_settings(text):
    """What a configuration file sets outside the block: (inherits the
    class, EQUIVCACHE_SERVER or None, the line number of that setting)."""
    before, block, _ = split_block(text)
    first = len(before.splitlines()) + 1           # the BEGIN line
    last = first + len(block) + 1 if block is not None else 0
    inherits, server, line_no = False, None, None
    for i, line in enumerate(text.splitlines(), start=1):
        if first <= i <= last:
            continue
        if _INHERIT.match(line):
            inherits = True
        m = _SERVER.match(line)
        if m:
            server, line_no = m.group(2), i
    return inherits, server, line_no


def make_block(url, inherit=True, server=True):
    lines = [BEGIN]
    if inherit:
        lines.append('INHERIT += "equivcache"')
    if server:
        lines.append('EQUIVCACHE_SERVER = "%s"' % url)
    lines.append(END)
    return "\n".join(lines) + "\n"


def update(text, block):
    """text with the marked block replaced by block (appended if absent)."""
    before, old, after = split_block(text)
    if old is None:
        if text and not text.endswith("\n"):
            text += "\n"
        return text + ("\n" if text.strip() else "") + block
    return before + block + after


def remove(text):
    before, old, after = split_block(text)
    if old is None:
        return text
    if before.endswith("\n\n"):
        before = before[:-1]
    return before + after


def plan(url, target_text, other_texts):
    """The block for target_text, given the other configuration files
    bitbake reads ([(name, text)]): nothing the user already sets is
    repeated; a different EQUIVCACHE_SERVER set elsewhere is a ConfError."""
    inherit, server = True, True
    for name, text in [("target", target_text)] + list(other_texts):
        inherits, value, line_no = user_settings(text)
        if inherits:
            inherit = False
        if value is not None:
            if value.rstrip("/") != url:
                where = name if name != "target" else "the file"
                raise ConfError('%s already sets EQUIVCACHE_SERVER = "%s" (line %d); remove that line, or '
                                'run with that URL' % (where, value, line_no))
            server = False
    return make_block(url, inherit, server) if (inherit or server) else ""
