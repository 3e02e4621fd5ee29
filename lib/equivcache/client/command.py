# SPDX-License-Identifier: MIT
#
# equivcache-client's command line: configure a build directory to use a
# shared cache served by equivcache-server, from its URL alone. The block's
# text is client/conf.py's; scripts/equivcache-client calls main().

import argparse
import os
import sys

from equivcache import descriptor as desc
from equivcache import probe
from equivcache.cli import Failure, Parser, layer_dir, run
from equivcache.client import conf as block
from equivcache.files import write_atomic

PROG = "equivcache-client"

DESCRIPTION = """\
Configure this build directory to use a shared cache from its URL alone.

Writes one marked block into conf/site.conf (created if absent):

  %s
  INHERIT += "equivcache"
  EQUIVCACHE_SERVER = "http://cache.example.com:8080"
  %s

equivcache.bbclass then sets the sstate and downloads mirrors, the
EquivCacheHash signature handler and the hash equivalence upstream from the
server's descriptor, keeping values you set yourself (OEEquivHash becomes
EquivCacheHash: the same signatures), and checks them on every parse. For a
cache that requires signatures it also makes the build verify every object
against the keys the descriptor lists (SSTATE_VERIFY_SIG, GPG_PATH: a keyring
in EQUIVCACHE_GPG_PATH with those keys and a local one for the build's own
objects, SSTATE_VALID_SIGS, SSTATE_SIG_KEY). Running it again changes nothing; a line you already have
(in site.conf, auto.conf or local.conf) is not repeated.
""" % (block.BEGIN, block.END)

EPILOG = """\
examples:
  %(prog)s --server http://cache.example.com:8080
  %(prog)s --server http://cache.example.com:8080 --print
  %(prog)s --remove

Exit status: 0 done (or nothing to do), 1 the server's descriptor could not
be read (nothing written; --no-check writes anyway), 2 bad usage (nothing
written).
"""


def make_parser():
    parser = Parser(prog=PROG, description=DESCRIPTION, epilog=EPILOG % {"prog": PROG},
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--server", metavar="URL", help="the cache server's http mirror, as "
                        "equivcache-server serve prints it (http://host:port)")
    action.add_argument("--remove", action="store_true", help="remove the block (from site.conf and local.conf)")
    parser.add_argument("--builddir", metavar="DIR", help="the build directory (default: $BUILDDIR, which "
                        "oe-init-build-env sets, else the current directory)")
    parser.add_argument("--local-conf", action="store_true", help="write the block into conf/local.conf "
                        "instead of conf/site.conf")
    parser.add_argument("--print", dest="print_only", action="store_true",
                        help="print the block, write nothing")
    parser.add_argument("--no-check", action="store_true", help="do not read the server's descriptor first")
    parser.add_argument("--timeout", type=float, default=5, help="seconds to wait for the server (default: 5)")
    return parser


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except FileNotFoundError:
        return ""


def write(path, text):
    """Write path if text is new. A symbolic link stays one: its target is
    written (bitbake-setup links each build's conf/site.conf to one shared file)."""
    path = os.path.realpath(path)
    if text == read(path):
        return False
    write_atomic(path, text, os.stat(path).st_mode & 0o777 if os.path.exists(path) else 0o644)
    return True


def layer_enabled(bblayers, layerdirs):
    """Whether conf/bblayers.conf names this layer (by its path, resolved or not)."""
    text = read(bblayers)
    return any(p in text for p in layerdirs)


def main(argv=None, layerdirs=()):
    """The command; layerdirs: the paths the script was reached by, besides the layer's real one."""
    args = make_parser().parse_args(argv)
    return run(PROG, configure, args, {layer_dir(), *layerdirs})


def configure(args, layerdirs):
    builddir = os.path.abspath(args.builddir or os.environ.get("BUILDDIR") or os.getcwd())
    conf = os.path.join(builddir, "conf")
    if not os.path.isfile(os.path.join(conf, "local.conf")):
        raise block.ConfError("%s is not a build directory (no conf/local.conf); run it there, or "
                              "pass --builddir" % builddir)
    names = {"site.conf": os.path.join(conf, "site.conf"), "local.conf": os.path.join(conf, "local.conf"),
             "auto.conf": os.path.join(conf, "auto.conf")}
    target_name = "local.conf" if args.local_conf else "site.conf"
    other_managed = "site.conf" if args.local_conf else "local.conf"

    if args.remove:
        changed = [n for n in ("site.conf", "local.conf")
                   if os.path.exists(names[n]) and write(names[n], block.remove(read(names[n])))]
        print("removed the block from %s" % ", ".join("conf/" + n for n in changed) if changed
              else "no block to remove")
        return 0

    url = block.check_url(args.server)
    target_text = read(names[target_name])
    others = [("conf/" + n, read(p)) for n, p in names.items() if n != target_name]
    lines = block.plan(url, target_text, others)
    if args.print_only:
        sys.stdout.write(lines or "# conf/ already has everything; nothing to add\n")
        return 0
    if not layer_enabled(os.path.join(conf, "bblayers.conf"), layerdirs):
        raise block.ConfError("meta-equivcache is not in conf/bblayers.conf; add it first: "
                              "bitbake-layers add-layer %s" % layer_dir())
    if not args.no_check:
        where = url + "/" + desc.NAME
        try:
            doc = desc.loads(probe.fetch(where, args.timeout), source=where)
        except (OSError, desc.DescriptorError) as e:
            raise Failure("cannot use %s: %s\n(nothing written; --no-check writes anyway)" % (where, e))
        producer = doc.get("producer", {})
        print("cache %s: hash equivalence server %s; producer %s" % (
            url, ", ".join(doc["hashserv"]),
            " ".join("%s=%s" % (k, producer[k]) for k in ("DISTRO", "MACHINE") if k in producer) or "unknown"))
        if desc.valid_sigs(doc):
            print("cache %s requires signed objects: builds verify each against its producers' keys (%s)"
                  % (url, ", ".join("%s %s" % (k["producer"], k["fingerprint"]) for k in doc["signatures"]["keys"])))
    new_text = block.update(target_text, lines) if lines else block.remove(target_text)
    changed = write(names[target_name], new_text)
    # The block lives in one file only.
    if os.path.exists(names[other_managed]):
        changed |= write(names[other_managed], block.remove(read(names[other_managed])))
    print(("wrote conf/%s" % target_name) if changed else ("conf/%s is already up to date" % target_name))
    return 0
