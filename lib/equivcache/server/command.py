# SPDX-License-Identifier: MIT
#
# equivcache-server's command line: publish a producer's build into a shared
# cache and serve it (the real bitbake-hashserv beside an http sstate and
# downloads mirror); tokens, gc, check, status and production
# configurations. The parser is built from the subcommand modules
# (commands/); scripts/equivcache-server calls main().

import argparse
import textwrap

from equivcache.cli import Parser, run
from equivcache.server.commands import COMMANDS
from equivcache.server.options import PROG

DESCRIPTION = """\
Publish and serve a shared Yocto cache: sstate objects and downloads over
http, with the hash equivalence server that names them.

  publish   add a producer build's sstate objects, downloads, signature
            data and hash equivalences to CACHE_DIR, or (--to URL) upload
            them to a cache served elsewhere; refresh its descriptor
            (equivcache.json), object index (index.json) and the sstate
            index builds check the mirror with (sstate-index/)
  serve     serve CACHE_DIR in the foreground until Ctrl-C or SIGTERM:
              http mirror     sstate-cache/, sstate-index/, downloads/, siginfo/,
                              equivcache.json, index.json
              read endpoint   bitbake-hashserv on TCP, anonymous @read only
              write endpoint  bitbake-hashserv on CACHE_DIR/server/hashserv.sock
              uploads         /upload/v1/ on the http port, for producer tokens only
  token     add, list or revoke the producer tokens remote publishes use
  gc        keep the cache within a bound (size, age): least recently used
            objects go, with their index entries; their equivalences a
            grace period later, through hashserv's own gc-mark/gc-sweep
  check     is every index entry's file there, every object's equivalence?
  status    what is up, where, and how big the cache is (against gc's bound)
  config    print an nginx site (--nginx) or systemd units (--systemd,
            with a daily timer for gc)
"""

EPILOG = """\
The seed guide's whole setup, on the producer's machine:
  %(prog)s publish --from ~/poky/build /srv/yocto-cache
  %(prog)s serve --bind 0.0.0.0 /srv/yocto-cache
and on each consumer, in its build directory:
  equivcache-client --server http://cache.example.com:8080

A CI farm: on the cache's machine, a token per producer (printed once):
  %(prog)s token add ci-agent-1 /srv/yocto-cache > ci-agent-1.token
and on the agent, after each build:
  %(prog)s publish --from build --to http://cache.example.com:8080 \
      --token-file ci-agent-1.token

bitbake-hashserv comes from poky: source oe-init-build-env first, or set
BITBAKEDIR or POKY_DIR, or pass --bitbake. Exit status: 0 success, 1 failure,
2 bad usage (nothing changed), 3 (status) not being served; (gc, check)
1 also when the check finds a fault.
"""


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions and epilogs wrapped paragraph by paragraph; indented
    lines (examples, tables) kept as written."""

    def _fill_text(self, text, width, indent):
        paragraphs = []
        for paragraph in text.split("\n\n"):
            if paragraph.startswith(" ") or "\n " in paragraph or paragraph.endswith(":"):
                paragraphs.append(paragraph)
            else:
                paragraphs.append(textwrap.fill(" ".join(paragraph.split()), width, initial_indent=indent,
                                                subsequent_indent=indent))
        return "\n\n".join(paragraphs)


def make_parser():
    """The whole command line: the global options, then each subcommand's (commands/*.setup_parser)."""
    formatter = Formatter
    parser = Parser(prog=PROG, description=DESCRIPTION, epilog=EPILOG % {"prog": PROG}, formatter_class=formatter)
    parser.add_argument("--bitbake", metavar="DIR", help="poky's bitbake directory (default: the bitbake on PATH, "
                        "$BITBAKEDIR, $POKY_DIR/bitbake, or poky beside this layer)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log more (every hashserv connection)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    sub.required = True
    for command in COMMANDS:
        p = sub.add_parser(command.NAME, help=command.HELP, formatter_class=formatter)
        p.set_defaults(func=command.run)
        command.setup_parser(p)
    return parser


def main(argv=None):
    args = make_parser().parse_args(argv)
    return run(PROG, args.func, args)
