# SPDX-License-Identifier: MIT
#
# Producer tokens: who may upload to a cache and report equivalences to its
# hash server. One secret per producer does both: it is the token of a
# bitbake-hashserv user of the same name (@read @report, or @read for a
# reader), created through the server's own user model, and its SHA-256 is
# what server/tokens.json (mode 0600) keeps for the upload endpoint. The
# secret itself is printed once, never stored by the cache.
#
#   server/tokens.json  {"format": "equivcache-tokens", "version": 1,
#                        "tokens": [{"name", "role", "sha256", "created", "revoked"}]}
#
# A token file, as `token add` prints it and `publish --token-file` reads
# it: one line "NAME:SECRET".

import contextlib
import hashlib
import hmac
import json
import os

from equivcache import files, uploadapi
from equivcache.cli import Failure, UsageError
from equivcache.formatting import utc_iso

NAME = "tokens.json"
FORMAT = "equivcache-tokens"
VERSION = 1
# What each role may do: upload files, and the hashserv permissions of its user.
ROLES = {"producer": ("@read", "@report"), "reader": ("@read",)}


def digest(secret):
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def check_name(name):
    if not uploadapi.TOKEN_NAME.match(name or ""):
        raise UsageError("token name %r: use 1-64 letters, digits, '.', '_' or '-', starting with a letter or "
                         "digit" % name)
    return name


def read_token_file(path):
    """(name, secret) of a token file (uploadapi.read_token_file), a UsageError if unusable."""
    try:
        return uploadapi.read_token_file(path)
    except uploadapi.TokenFileError as e:
        raise UsageError("--token-file %s" % e)


class TokenStore:
    """server/tokens.json of a cache. Reads again when the file changes, so
    that a token added or revoked counts at once in a running server."""

    def __init__(self, private_dir):
        self.path = os.path.join(private_dir, NAME)
        self._stamp = None
        self._tokens = []

    def tokens(self):
        try:
            st = os.stat(self.path)
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            return []
        if stamp != self._stamp:
            try:
                with open(self.path) as f:
                    doc = json.load(f)
            except ValueError as e:
                raise Failure("%s is not valid JSON (%s); fix or remove it" % (self.path, e))
            if not isinstance(doc, dict) or doc.get("format") != FORMAT:
                raise Failure("%s is not an equivcache token file" % self.path)
            self._tokens, self._stamp = doc.get("tokens", []), stamp
        return self._tokens

    def active(self, role=None):
        return [t for t in self.tokens() if not t.get("revoked") and (role is None or t["role"] == role)]

    def find(self, name):
        for token in self.tokens():
            if token["name"] == name:
                return token
        return None

    def verify(self, name, secret):
        """The active token of `name` if `secret` is its secret, else None."""
        token = self.find(name)
        if token is None or token.get("revoked"):
            # Compare anyway: the answer takes as long for an unknown name.
            hmac.compare_digest(digest(secret), "0" * 64)
            return None
        return token if hmac.compare_digest(digest(secret), token["sha256"]) else None

    def save(self, tokens):
        files.write_json(self.path, {"format": FORMAT, "version": VERSION, "tokens": tokens}, 0o600)
        self._stamp = None

    def add(self, name, role, secret):
        tokens = [t for t in self.tokens() if t["name"] != name]
        tokens.append({"name": name, "role": role, "sha256": digest(secret), "created": utc_iso(), "revoked": None})
        self.save(sorted(tokens, key=lambda t: t["name"]))

    def revoke(self, name):
        tokens = [dict(t) for t in self.tokens()]
        for token in tokens:
            if token["name"] == name:
                token["revoked"] = utc_iso()
        self.save(tokens)


def hashserv_admin(hashserv, address, admin):
    """A hashserv client on `address`, logged in as the cache's admin user."""
    client = hashserv.create_client(address, admin["username"], admin["password"])
    return contextlib.closing(client)


def add(store, hashserv, address, admin, name, role):
    """Create the token and its hashserv user; return the token file's line."""
    check_name(name)
    if role not in ROLES:
        raise UsageError("--role %s: one of %s" % (role, ", ".join(ROLES)))
    current = store.find(name)
    if current is not None and not current.get("revoked"):
        raise UsageError("a token named %s exists (created %s); revoke it first, or choose another name"
                         % (name, current["created"]))
    if name == admin["username"]:
        raise UsageError("%s is the cache's admin user; choose another name" % name)
    with hashserv_admin(hashserv, address, admin) as client:
        if client.get_user(name) is not None:
            client.delete_user(name)   # left by a revoked token, or by hand
        user = client.new_user(name, list(ROLES[role]))
    store.add(name, role, user["token"])
    return "%s:%s" % (name, user["token"])


def revoke(store, hashserv, address, admin, name):
    """Revoke the token and delete its hashserv user; True if it was active."""
    current = store.find(name)
    if current is None:
        raise UsageError("no token named %s (equivcache-server token list shows them)" % name)
    with hashserv_admin(hashserv, address, admin) as client:
        if client.get_user(name) is not None:
            client.delete_user(name)
    if current.get("revoked"):
        return False
    store.revoke(name)
    return True
