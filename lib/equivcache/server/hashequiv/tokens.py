# SPDX-License-Identifier: MIT
#
# Tokens: who may upload to a cache, report equivalences to its hash
# server, and send build reports. One secret per token does all its role
# allows: it is the token of a bitbake-hashserv user of the same name
# (@read @report for a producer, @read otherwise), created through the
# server's own user model, and its SHA-256 is what server/tokens.json (mode
# 0600) keeps for the http endpoints. The secret itself is printed once,
# never stored by the cache.
#
#   server/tokens.json  {"format": "equivcache-tokens", "version": 1,
#                        "tokens": [{"name", "role", "sha256", "created", "revoked",
#                                    "expires" (or null), "key" (a producer's signing
#                                    key: {"fingerprint", "keyids"}, or null)}]}
#   server/token-use.json  {NAME: when last used}, written at most once a minute
#   server/keys/NAME.gpg   a producer's public key (binary, gpgv's keyring)
#
# A token file, as `token add` prints it and `publish --token-file` reads
# it: one line "NAME:SECRET".

import contextlib
import hashlib
import hmac
import json
import os
import time
from datetime import datetime, timedelta, timezone

from equivcache import files, uploadapi
from equivcache.cli import Failure, UsageError
from equivcache.formatting import utc_iso

NAME = "tokens.json"
FORMAT = "equivcache-tokens"
VERSION = 1
# The hashserv permissions of each role's user. A producer uploads and reports
# equivalences; a reporter sends build reports (a pull request's build: it
# may read and report, never write); a reader only reads the hash server.
ROLES = {"producer": ("@read", "@report"), "reporter": ("@read",), "reader": ("@read",)}
REPORTS = ("producer", "reporter")   # the roles that may send build reports
USE_FILE = "token-use.json"
USE_EVERY = 60


def parse_time(text):
    return datetime.fromisoformat(text.replace("Z", "+00:00")) if text else None


def expired(token, now=None):
    """True if the token has an expiry and it is past."""
    expires = parse_time(token.get("expires"))
    return expires is not None and expires <= (now or datetime.now(timezone.utc))


def state(token):
    """What `token list` says of a token's state."""
    if token.get("revoked"):
        return "revoked " + token["revoked"]
    if expired(token):
        return "expired " + token["expires"]
    return "active" + (", expires " + token["expires"] if token.get("expires") else "")


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
        self.private = private_dir
        self.path = os.path.join(private_dir, NAME)
        self.use_path = os.path.join(private_dir, USE_FILE)
        self._stamp = None
        self._tokens = []
        self._written_use = {}

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

    def refresh(self):
        """Read the tokens again at the next look (the file is read again whenever it changes)."""

    def active(self, role=None):
        return [t for t in self.tokens() if not t.get("revoked") and not expired(t)
                and (role is None or t["role"] == role)]

    def key_path(self, name):
        return os.path.join(self.private, "keys", name + ".gpg")

    def keyring(self, name):
        """The file gpgv reads the producer's key from."""
        return self.key_path(name)

    def keyrings(self):
        """{name: keyring} of the active producers with a signing key."""
        return {t["name"]: self.keyring(t["name"]) for t in self.active("producer") if t.get("key")}

    def find(self, name):
        for token in self.tokens():
            if token["name"] == name:
                return token
        return None

    def verify(self, name, secret):
        """(token, None) if `secret` is the secret of the active token `name`,
        else (None, why): unknown or wrong (one answer for both), revoked, expired."""
        token = self.find(name)
        if token is None or not hmac.compare_digest(digest(secret), token["sha256"]):
            self.refresh()   # a token added a moment ago, through another replica
            token = self.find(name)
        if token is None:
            # Compare anyway: the answer takes as long for an unknown name.
            hmac.compare_digest(digest(secret), "0" * 64)
            return None, "unknown or wrong"
        if not hmac.compare_digest(digest(secret), token["sha256"]):
            return None, "unknown or wrong"
        if token.get("revoked"):
            return None, "revoked on %s" % token["revoked"]
        if expired(token):
            return None, "expired on %s (token add %s --expires DAYS makes a new one)" % (token["expires"], name)
        self.note_use(name)
        return token, None

    def uses(self):
        try:
            with open(self.use_path) as f:
                doc = json.load(f)
            return doc if isinstance(doc, dict) else {}
        except (OSError, ValueError):
            return {}

    def note_use(self, name, now=None):
        """Remember when the token was last used, on disk at most once a minute a token."""
        now = now or time.time()
        if now - self._written_use.get(name, 0) < USE_EVERY:
            return
        self._written_use[name] = now
        uses = self.uses()
        uses[name] = utc_iso(now)
        files.write_json(self.use_path, uses, 0o600)

    def save(self, tokens):
        files.write_json(self.path, {"format": FORMAT, "version": VERSION, "tokens": tokens}, 0o600)
        self._stamp = None

    def save_token(self, token):
        """Add or replace one token."""
        self.save(sorted([t for t in self.tokens() if t["name"] != token["name"]] + [token],
                         key=lambda t: t["name"]))

    def add(self, name, role, secret, expires=None, key=None):
        self.save_token({"name": name, "role": role, "sha256": digest(secret), "created": utc_iso(),
                         "revoked": None, "expires": expires, "key": key})

    def revoke(self, name):
        token = self.find(name)
        if token is not None:
            self.save_token(dict(token, revoked=utc_iso()))

    def put_key(self, name, binary):
        """A producer's public key (binary) as gpgv's keyring."""
        os.makedirs(os.path.dirname(self.key_path(name)), mode=0o700, exist_ok=True)
        files.write_atomic(self.key_path(name), binary, 0o600)

    def drop_key(self, name):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.key_path(name))


def hashserv_admin(hashserv, address, admin):
    """A hashserv client on `address`, logged in as the cache's admin user."""
    client = hashserv.create_client(address, admin["username"], admin["password"])
    return contextlib.closing(client)


def expiry(days, now=None):
    """The ISO time `days` days from now, None for none; UsageError if not a positive number."""
    if days is None:
        return None
    if not 0 < days <= 36500:
        raise UsageError("--expires %s: a number of days above 0" % days)
    return utc_iso(((now or datetime.now(timezone.utc)) + timedelta(days=days)).timestamp())


def add(store, hashserv, address, admin, name, role, expires=None, key=None):
    """Create the token and its hashserv user; return the token file's line.
    key: a producer's signing key ({"fingerprint", "keyids"}), its keyring already in place."""
    check_name(name)
    if role not in ROLES:
        raise UsageError("--role %s: one of %s" % (role, ", ".join(ROLES)))
    current = store.find(name)
    if current is not None and not current.get("revoked") and not expired(current):
        raise UsageError("a token named %s exists (created %s); revoke it first, or choose another name"
                         % (name, current["created"]))
    if name == admin["username"]:
        raise UsageError("%s is the cache's admin user; choose another name" % name)
    with hashserv_admin(hashserv, address, admin) as client:
        if client.get_user(name) is not None:
            client.delete_user(name)   # left by a revoked token, or by hand
        user = client.new_user(name, list(ROLES[role]))
    store.add(name, role, user["token"], expires, key)
    return "%s:%s" % (name, user["token"])


def delete_expired_users(store, hashserv, address, admin):
    """Delete the hashserv users of expired tokens (serve does, each minute); their names."""
    candidates = [t["name"] for t in store.tokens() if expired(t) and not t.get("revoked")]
    gone = []
    if not candidates:   # the common case: no connection to the server at all
        return gone
    with hashserv_admin(hashserv, address, admin) as client:
        for name in candidates:
            if client.get_user(name) is not None:
                client.delete_user(name)
                gone.append(name)
    return gone


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
