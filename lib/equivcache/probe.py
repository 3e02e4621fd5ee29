# SPDX-License-Identifier: MIT
#
# Network and file probes for equivcache.bbclass: each bounded by a short
# timeout, all run in parallel, none ever raising. Pure Python: no bb import.
# A probe answers None when the target answered, else a one-line reason.

import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from equivcache.outage import describe_error


def server(parsed, timeout):
    """Connect to a hash equivalence server.

    parsed: ("unix", path) or ("tcp", host, port), as bitbake's
    bb.asyncrpc.client.parse_address gives them (ws:// URLs as "tcp" to
    their host and port).
    """
    try:
        if parsed[0] == "unix":
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                s.settimeout(timeout)
                s.connect(parsed[1])
        else:
            with socket.create_connection((parsed[1], parsed[2]), timeout=timeout):
                pass
    except (OSError, ValueError) as e:
        return describe_error(e)
    return None


def http(url, timeout):
    """Any HTTP answer counts (a 404 on a directory is an answer)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
            pass
    except urllib.error.HTTPError:
        return None
    except urllib.error.URLError as e:
        return describe_error(e.reason) if isinstance(e.reason, Exception) else str(e.reason)
    except (OSError, ValueError) as e:
        return describe_error(e)
    return None


def directory(path):
    if os.path.isdir(path):
        return None
    return "no such directory" if not os.path.exists(path) else "not a directory"


def fetch(url, timeout, limit=1 << 20):
    """GET a small document (file:// or http(s)://); raise OSError with a reason."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as answer:
            data = answer.read(limit + 1)
    except urllib.error.HTTPError as e:
        raise OSError("HTTP %d %s" % (e.code, e.reason)) from e
    except urllib.error.URLError as e:
        reason = e.reason if isinstance(e.reason, Exception) else OSError(str(e.reason))
        raise OSError(describe_error(reason)) from e
    except ValueError as e:
        raise OSError(str(e)) from e
    if len(data) > limit:
        raise OSError("larger than %d bytes" % limit)
    return data


def run(needed, timeout, parse_server=None):
    """Run probes ("server", address) / ("http", URL) / ("dir", path) in parallel.

    parse_server turns a server address into the tuple server() takes.
    Returns {(kind, target): None or reason}.
    """
    def one(probe):
        kind, target = probe
        if kind == "server":
            try:
                parsed = parse_server(target)
            except (ValueError, TypeError) as e:
                return "not an address (%s)" % describe_error(e)
            return server(parsed, timeout)
        if kind == "http":
            return http(target, timeout)
        if kind == "dir":
            return directory(target)
        raise ValueError("unknown probe %r" % (kind,))

    needed = list(dict.fromkeys(needed))
    if not needed:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(needed))) as pool:
        return dict(zip(needed, pool.map(one, needed)))
