# SPDX-License-Identifier: MIT
#
# The cache client (scripts/equivcache-client).
#
#   command.py  the command line: read the server's descriptor, write the block
#   conf.py     the block in conf/site.conf or conf/local.conf (pure text edits)
