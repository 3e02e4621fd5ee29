# SPDX-License-Identifier: MIT
#
# equivcache-server token add|list|revoke: the producer tokens of a cache
# (hashequiv/tokens.py), with their users in the cache's hash equivalence
# database, made through bitbake-hashserv's own user model as the cache's
# admin user (the running server's write socket, or a private endpoint).

import sys

from equivcache import signing
from equivcache.cli import Parser, UsageError, find_bitbake
from equivcache.server import options
from equivcache.server.hashequiv import tokens
from equivcache.server.store.layout import admin_credentials, token_store
from equivcache.server.store.storage import KEYS

NAME = "token"
HELP = "add, list or revoke producer, reporter and reader tokens"


def setup_parser(p):
    p.description = (
        "Tokens let remote builds publish (publish --to) and report: each names one "
        "producer, reporter or reader, whose secret is both its http credential (HTTP Basic, checked by the "
        "upload endpoint and, with serve --reports-need-token, by the build reports' endpoint) and the token "
        "of a bitbake-hashserv user of the same name: a producer's with @read @report, uploading and "
        "reporting; a reporter's with @read, sending build reports, never uploading (a pull request's build); "
        "a reader's with @read only. The cache keeps only the secret's SHA-256, in "
        "CACHE_DIR/server/tokens.json (mode 0600); `add` prints NAME:SECRET once, on standard "
        "output: keep it in a file only the producer can read. The upload endpoint is on while "
        "a producer token is; revocation counts at once, in a running server too. A cache that "
        "does not exist yet is created: a CI farm's cache may only ever take remote publishes.")
    p.epilog = ("examples:\n  %(p)s token add ci-agent-1 /srv/yocto-cache > ci-agent-1.token\n"
                "  %(p)s token list /srv/yocto-cache\n  %(p)s token revoke ci-agent-1 /srv/yocto-cache"
                % {"p": options.PROG})
    sub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=Parser)
    sub.required = True
    add = action(sub, "add", run_add, "add a token and print its token file's line, once",
                 "Add a token named NAME to the cache (created if absent) and print NAME:SECRET, the token file, "
                 "once on standard output.", named=True)
    add.add_argument("--role", choices=tuple(tokens.ROLES), default="producer",
                     help="producer: upload and report equivalences; reporter: send build reports and read, never "
                     "upload; reader: read the hash server only (default: %(default)s)")
    add.add_argument("--expires", type=options.days, metavar="DAYS", help="the token stops working DAYS days "
                     "from now (its hash server user is deleted within a minute of that); default: never")
    add.add_argument("--gpg-key", metavar="FILE", help="(producer) the producer's OpenPGP public key (gpg --export "
                     "--armor KEYID): a cache that requires signatures (serve --require-signatures) takes only "
                     "objects this key signed from this token, and its consumers trust it")
    action(sub, "list", run_list, "list the tokens, with their roles, expiry, last use and keys",
           "List the cache's tokens: name, role, when created, state (active, expiring, expired or revoked), when "
           "last used, and a producer's signing key.")
    action(sub, "revoke", run_revoke, "revoke a token and delete its hash server user",
           "Revoke the token NAME: it can no longer upload, and its hash server user is deleted, in a running "
           "server at once.", named=True)


def action(sub, name, run, help, description, named=False):
    """A token ACTION's parser: [NAME] CACHE_DIR, and the database of those that change its hash server's users."""
    p = sub.add_parser(name, help=help, description=description)
    p.set_defaults(run=run)
    if named:
        p.add_argument("name", metavar="NAME", help="the token's name: 1-64 letters, digits, '.', '_' or '-'")
    options.add_cache(p)
    if named:
        options.add_database(p)
    options.add_s3(p)
    return p


def run(args):
    return args.run(args)


def as_admin(args, change, create=False):
    """(cache, change(cache, store, hashserv, address, admin)) on the cache args names, through a write
    endpoint on its equivalences as its admin user."""
    tokens.check_name(args.name)
    cache = options.cache_of(args, create=create)
    cache.layout.create()
    store = token_store(cache.layout)
    bitbake, password = find_bitbake(args.bitbake), options.db_password(args)
    with cache.endpoint(bitbake, args.database, password, admin=True) as (hashserv, address, _):
        return cache, change(cache, store, hashserv, address, admin_credentials(cache.layout))


def read_key(args):
    """(key's {"fingerprint", "keyids"}, the public key in binary form) of --gpg-key, (None, None) without it."""
    if not args.gpg_key:
        return None, None
    if args.role != "producer":
        raise UsageError("--gpg-key binds a producer's signing key: not for a %s token" % args.role)
    try:
        with open(args.gpg_key, "rb") as f:
            data = f.read(1 << 20)
    except OSError as e:
        raise UsageError("--gpg-key %s: %s" % (args.gpg_key, e.strerror))
    try:
        key = signing.key_info(data)
    except UsageError as e:
        raise UsageError("--gpg-key %s: %s" % (args.gpg_key, e))
    binary = signing.dearmor(data)
    return key, binary


def bind_key(cache, store, name, binary):
    """The producer's keyring (gpgv's, private) and the public copy consumers fetch (keys/NAME.asc)."""
    store.put_key(name, binary)
    cache.storage.put_bytes("%s/%s.asc" % (KEYS, name), signing.armor(binary))


USE = {"producer": "publish --to URL --token-file FILE",
       "reporter": "EQUIVCACHE_REPORT_TOKEN_FILE = \"FILE\" beside EQUIVCACHE_REPORT_TO",
       "reader": "BB_HASHSERVE_USERNAME and BB_HASHSERVE_PASSWORD of a build that reads the hash server"}


def run_add(args, out=sys.stdout, err=sys.stderr):
    expires = tokens.expiry(args.expires)
    key, binary = read_key(args)

    def add(cache, store, *admin):
        line = tokens.add(store, *admin, args.name, args.role, expires, key)
        if key:
            bind_key(cache, store, args.name, binary)
        return line
    cache, line = as_admin(args, add, create=True)
    cache.write_descriptor()
    out.write(line + "\n")
    err.write("token %s (%s%s%s) added to %s; the line above is its token file, shown this once (keep it mode "
              "0600): %s\n" % (args.name, args.role, ", expires " + expires if expires else "",
                               ", signing key " + key["fingerprint"] if key else "", cache.root, USE[args.role]))
    return 0


def run_revoke(args, out=sys.stdout):
    cache, was_active = as_admin(args, lambda cache, *admin: tokens.revoke(*admin, args.name))
    store = token_store(cache.layout)
    store.drop_key(args.name)
    cache.storage.remove("%s/%s.asc" % (KEYS, args.name))
    cache.write_descriptor()
    out.write("token %s %s: it can no longer upload or report, its hash server user is deleted%s\n"
              % (args.name, "revoked" if was_active else "was already revoked",
                 ", and its key is no longer trusted" if store.find(args.name).get("key") else ""))
    return 0


def run_list(args, out=sys.stdout):
    cache = options.cache_of(args)
    store = token_store(cache.layout)
    found, uses = store.tokens(), store.uses()
    if not found:
        out.write("no tokens in %s: the upload endpoint is off (token add NAME %s)\n" % (cache.root, cache.root))
        return 0
    width = max(len(t["name"]) for t in found)
    for token in found:
        key = token.get("key")
        out.write("%-*s  %-8s  created %s  last used %s  %s%s\n" % (
            width, token["name"], token["role"], token["created"], uses.get(token["name"], "never"),
            tokens.state(token), "  key " + key["fingerprint"] if key else ""))
    return 0
