# SPDX-License-Identifier: MIT
#
# What a producer and a cache's upload endpoint agree on (the endpoint is
# lib/equivcache/server/http/uploads.py): the URL prefix, the header carrying a
# file's SHA-256, the token file and HTTP Basic authentication with it.
# Here, at the top of the package, so that the class (EQUIVCACHE_PUBLISH)
# can check a token without importing the server. Pure Python: no bb import.

import base64
import re

PREFIX = "/upload/v1/"
SHA256_HEADER = "X-Equivcache-SHA256"
# A sstate object's detached signature (its .sig), base64, for a cache that requires them.
SIGNATURE_HEADER = "X-Equivcache-Signature"
TOKEN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
# The largest upload a cache takes unless told (serve --max-upload-size).
DEFAULT_MAX_UPLOAD = 8 << 30
# The largest JSON body of an action (missing, equivalences, commit) or manifest of a batch.
MANIFEST_LIMIT = 64 << 20
# How long a proxy leaves out a replica that failed (config --nginx --replica:
# max_fails=1). A producer tries a request again for longer than that: a
# moment in which every replica is left out (one killed, a connection to
# another broken) does not end its publish.
REPLICA_FAIL_TIMEOUT = 10


# POST /upload/v1/equivalences: what an output hash entry carries besides
# its method, taskhash and outhash (as bitbake's reports do).
EQUIVALENCE_EXTRA = ("PN", "PV", "PR", "task", "outhash_siginfo")


def equivalences_document(outhashes, unihashes):
    """POST /upload/v1/equivalences's body of a producer's database (read_producer_database()'s)."""
    return {"outhashes": [{k: row[k] for k in ("method", "taskhash", "outhash") + EQUIVALENCE_EXTRA
                           if row.get(k) is not None} for row in outhashes],
            "unihashes": [[method, taskhash, unihash] for (method, taskhash), unihash in unihashes.items()]}


class TokenFileError(ValueError):
    """A token file that cannot be used."""


def read_token_file(path):
    """(name, secret) of a token file: one line NAME:SECRET, as `equivcache-server token add` prints it."""
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError as e:
        raise TokenFileError("%s: %s" % (path, e.strerror))
    name, sep, secret = text.partition(":")
    if not sep or not secret or "\n" in text or not TOKEN_NAME.match(name):
        raise TokenFileError("%s: not a token file (one line NAME:SECRET, as `equivcache-server token add` "
                             "prints it)" % path)
    return name, secret


def basic_auth(name, secret):
    """The Authorization header's value for a token."""
    return "Basic " + base64.b64encode(("%s:%s" % (name, secret)).encode("utf-8")).decode("ascii")
