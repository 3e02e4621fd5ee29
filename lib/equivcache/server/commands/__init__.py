# SPDX-License-Identifier: MIT
#
# equivcache-server's subcommands, a module each, as kas's plugins are:
# NAME, HELP, setup_parser(parser) and run(args) -> exit status. command.py
# builds the command line by looping over COMMANDS, in this order.
#
#   publish.py   a producer's build into a cache, or uploaded to one (--to)
#   serve.py     the cache server in the foreground
#   tokens.py    token add|list|revoke: producer tokens
#   gc.py        keep the cache within a bound
#   check.py     the consistency gc and publish keep
#   status.py    what is up, where, and how big the cache is
#   config.py    nginx and systemd configurations

from equivcache.server.commands import check, config, gc, publish, serve, status, tokens

COMMANDS = (publish, serve, tokens, gc, check, status, config)
