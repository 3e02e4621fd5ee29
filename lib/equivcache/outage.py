# SPDX-License-Identifier: MIT
#
# What EquivCacheHash says when the hash equivalence server is away, and the
# marker that keeps it to one warning per build across bitbake's processes.
# Pure Python: no bb import, so plain pytest exercises it.

import fcntl
import os

# The consequence, in the user's terms, of building on without the server.
CONSEQUENCE = (
    "This build goes on without hash equivalence: each task's unihash is "
    "its task hash, so sstate objects stored under an equivalent unihash "
    "(on a shared mirror, say) are not found and those tasks rebuild, and "
    "no output hashes are reported to the server."
)


def describe_error(error):
    """One line naming an exception: its type and message."""
    text = str(error).strip()
    name = type(error).__name__
    return "%s: %s" % (name, text) if text else name


def outage_message(address, error, during):
    """The warning printed once per build when the server is away.

    address: the BB_HASHSERVE value in use; error: the exception seen;
    during: what was being done ("querying unihashes", ...).
    """
    return (
        "EquivCacheHash: the hash equivalence server BB_HASHSERVE = \"%s\" "
        "cannot be reached while %s (%s). %s Start the server, or point "
        "BB_HASHSERVE at one that is running." % (address, during, describe_error(error), CONSEQUENCE)
    )


def claim_once(path, token):
    """Return True for the first caller with this token, False for any later.

    Works across processes (the cooker and every forked task worker): the
    token of the build that last warned is kept in a small file under an
    exclusive lock. A new build brings a new token, so it warns again.
    Raises OSError if the file cannot be created.
    """
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            f.seek(0)
            if f.read().strip() == token:
                return False
            f.seek(0)
            f.truncate()
            f.write(token + "\n")
            f.flush()
            return True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
