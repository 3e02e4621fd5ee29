# SPDX-License-Identifier: MIT
#
# Network and file probes for equivcache.bbclass: each bounded by a short
# timeout, all run in parallel, none ever raising. Pure Python: no bb import.
# A probe answers None when the target answered, else a one-line reason.

import json
import os
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor

from equivcache.outage import describe_error


# What a hash equivalence client sends first (bitbake's asyncrpc: the
# protocol line, headers up to an empty line), then a ping; the server
# answers {"alive": true} on one line. The same on scarthgap and wrynose.
HASHSERV_PING = b'OEHASHEQUIV 1.1\nneeds-headers: false\n\n{"ping": {}}\n'


def server(parsed, timeout):
    """Ask a hash equivalence server whether it is alive, within `timeout`
    seconds in all: a host that accepts the connection and never answers
    gets a reason too, as bitbake would wait for it.

    parsed: ("unix", path) or ("tcp", host, port), as bitbake's
    bb.asyncrpc.client.parse_address gives them, or ("ws", host, port,
    tls) for a ws:// or wss:// URL, where any HTTP answer counts.
    """
    deadline = time.monotonic() + timeout
    try:
        if parsed[0] == "unix":
            s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        else:
            s = socket.create_connection((parsed[1], parsed[2]), timeout=timeout)
        with s:
            if parsed[0] == "unix":
                s.settimeout(timeout)
                s.connect(parsed[1])
            if parsed[0] == "ws":
                if parsed[3]:
                    s = ssl.create_default_context().wrap_socket(s, server_hostname=parsed[1])
                s.sendall(b"GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % parsed[1].encode())
                return None if first_line(s, deadline) else "closed the connection without answering"
            s.sendall(HASHSERV_PING)
            line = first_line(s, deadline)
    except socket.timeout:
        return "connected, but no answer within %g s" % timeout
    except (OSError, ValueError) as e:
        return describe_error(e)
    if not line:
        return "closed the connection without answering"
    try:
        alive = json.loads(line.decode("utf-8", "replace")).get("alive")
    except (ValueError, AttributeError):
        alive = None
    return None if alive else "answered, but not as a hash equivalence server"


def first_line(s, deadline, limit=4096):
    """The first line a socket sends (without its newline), or what came
    before it closed; socket.timeout when `deadline` passes first."""
    data = b""
    while b"\n" not in data and len(data) < limit:
        left = deadline - time.monotonic()
        if left <= 0:
            raise socket.timeout()
        s.settimeout(left)
        chunk = s.recv(limit)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0].strip()


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
