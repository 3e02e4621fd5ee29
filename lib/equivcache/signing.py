# SPDX-License-Identifier: MIT
#
# OpenPGP signatures of sstate objects, with the real gpg: what a signed
# cache checks on upload (a producer's detached .sig, as OE-core's
# SSTATE_SIG_KEY makes it, against that producer's public key only) and
# what a consumer's keyring holds (the cache's trusted keys and a local key
# for the consumer's own objects, so that SSTATE_VERIFY_SIG verifies both).
#
# OE-core's check (oe.gpg_sign.LocalSigner.verify) matches SSTATE_VALID_SIGS
# against the key id of gpg's GOODSIG status line: the 16-hex long id of the
# key that made the signature (a signing subkey's where there is one), not
# the fingerprint. key_info() gives both. Pure Python: no bb import.

import os
import re
import shutil
import subprocess
import tempfile

from equivcache.cli import Failure, UsageError

SIG_SUFFIX = ".sig"
# A detached binary signature is a few hundred bytes; a bound for headers.
MAX_SIGNATURE = 4096
_FPR = re.compile(r"^[0-9A-F]{40}$")
TIMEOUT = 60


def gpg_command(name="gpg"):
    found = shutil.which(name)
    if not found:
        raise Failure("%s not found: install GnuPG (Debian: gnupg, gpgv)" % name)
    return found


def _run(command, homedir, data=None, check=True):
    result = subprocess.run(command, input=data, capture_output=True, timeout=TIMEOUT,
                            env=dict(os.environ, GNUPGHOME=homedir, LC_ALL="C"))
    if check and result.returncode:
        raise Failure("%s: %s" % (" ".join(os.path.basename(c) for c in command[:2]),
                                  result.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or "failed"))
    return result


def key_info(data):
    """{"fingerprint": primary key's, "keyids": long ids of the keys that can sign}
    of one OpenPGP public key (armored or binary bytes); UsageError if it is not one."""
    with tempfile.TemporaryDirectory(prefix="equivcache-gpg-") as home:
        result = _run([gpg_command(), "--batch", "--with-colons", "--show-keys"], home, data, check=False)
    records = [line.split(":") for line in result.stdout.decode("utf-8", "replace").splitlines()]
    primaries = [r for r in records if r[0] == "pub"]
    if result.returncode or len(primaries) != 1:
        raise UsageError("not one OpenPGP public key (gpg --export --armor KEYID gives one): %s" % (
            "%d keys" % len(primaries) if primaries else
            (result.stderr.decode("utf-8", "replace").strip() or "no key found")))
    if any(r[0] == "sec" for r in records):
        raise UsageError("a secret key: give the public key only (gpg --export --armor KEYID)")
    fingerprint, keyids, current = None, [], None
    for r in records:
        if r[0] in ("pub", "sub"):
            current = r
            if "s" in r[11] and r[1] not in ("r", "e"):   # can sign; not revoked or expired
                keyids.append(r[4])
        elif r[0] == "fpr" and current is not None and current[0] == "pub" and fingerprint is None:
            fingerprint = r[9]
    if not keyids:
        raise UsageError("key %s has no valid key that can sign" % fingerprint)
    return {"fingerprint": fingerprint, "keyids": keyids}


def dearmor(data):
    """The binary form of a public key (what gpgv's --keyring takes)."""
    if not data.lstrip().startswith(b"-----BEGIN"):
        return data
    with tempfile.TemporaryDirectory(prefix="equivcache-gpg-") as home:
        return _run([gpg_command(), "--batch", "--dearmor"], home, data).stdout


def armor(binary):
    """The armored public key block of a key (what consumers fetch as keys/NAME.asc)."""
    with tempfile.TemporaryDirectory(prefix="equivcache-gpg-") as home:
        _run([gpg_command(), "--batch", "--import"], home, binary)
        return _run([gpg_command(), "--batch", "--export", "--armor"], home).stdout


def verify(signature, data_file, keyring):
    """The primary fingerprint of the key in `keyring` (a binary public key
    file) that made `signature` (bytes, detached) over the open file
    data_file, else None: by gpgv, which trusts only that keyring."""
    with tempfile.TemporaryDirectory(prefix="equivcache-gpg-") as home:
        sig = os.path.join(home, "object.sig")
        with open(sig, "wb") as f:
            f.write(signature)
        result = subprocess.run([gpg_command("gpgv"), "--homedir", home, "--status-fd", "1", "--keyring",
                                 os.path.abspath(keyring), sig, "-"], stdin=data_file, capture_output=True,
                                timeout=TIMEOUT, env=dict(os.environ, LC_ALL="C"))
    if result.returncode:
        return None
    for line in result.stdout.decode("utf-8", "replace").splitlines():
        fields = line.split()
        if fields[:2] == ["[GNUPG:]", "VALIDSIG"] and _FPR.match(fields[-1]):
            return fields[-1]
    return None


def verify_file(sig_path, data_path, keyrings):
    """Which of keyrings ({name: binary key file}) signed data_path by sig_path: its name, else None."""
    try:
        with open(sig_path, "rb") as f:
            signature = f.read(MAX_SIGNATURE + 1)
    except FileNotFoundError:
        return None
    if len(signature) > MAX_SIGNATURE:
        return None
    for name, keyring in keyrings.items():
        with open(data_path, "rb") as data:
            if verify(signature, data, keyring):
                return name
    return None


class Keyring:
    """A GnuPG home directory for a build (GPG_PATH): the cache's trusted
    public keys, and a local key without passphrase that signs the build's
    own sstate objects (SSTATE_SIG_KEY), so that SSTATE_VERIFY_SIG accepts
    them too. Its gpg-agent, started for the local key, ends with the
    directory's removal or `gpgconf --kill gpg-agent`."""

    LOCAL_UID = "equivcache local sstate key <equivcache@localhost>"

    def __init__(self, homedir):
        self.homedir = os.path.abspath(homedir)

    def gpg(self, *args, data=None):
        os.makedirs(self.homedir, mode=0o700, exist_ok=True)
        os.chmod(self.homedir, 0o700)
        return _run([gpg_command(), "--batch", "--no-tty", "--homedir", self.homedir] + list(args), self.homedir,
                    data)

    def fingerprints(self):
        """Primary fingerprints of the public keys the keyring holds."""
        if not os.path.isdir(self.homedir):
            return set()
        result = _run([gpg_command(), "--batch", "--homedir", self.homedir, "--with-colons", "--list-keys"],
                      self.homedir, check=False)
        found, previous = set(), None
        for line in result.stdout.decode("utf-8", "replace").splitlines():
            fields = line.split(":")
            if fields[0] == "fpr" and previous == "pub":
                found.add(fields[9])
            previous = fields[0]
        return found

    def add(self, data):
        self.gpg("--import", data=data)

    def local_key(self):
        """The long key id of the keyring's local signing key, made on first use."""
        listing = ["--with-colons", "--list-secret-keys", self.LOCAL_UID]
        secret = _run([gpg_command(), "--batch", "--homedir", self.homedir] + listing, self.homedir, check=False) \
            if os.path.isdir(self.homedir) else None
        if secret is None or secret.returncode:
            self.gpg("--passphrase", "", "--quick-generate-key", self.LOCAL_UID, "default", "sign", "never")
            secret = self.gpg(*listing)
        for line in secret.stdout.decode("utf-8", "replace").splitlines():
            fields = line.split(":")
            if fields[0] == "sec":
                return fields[4]
        raise Failure("gpg made no local key in %s" % self.homedir)
