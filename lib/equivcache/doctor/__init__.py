# SPDX-License-Identifier: MIT
#
# equivcache-doctor (scripts/equivcache-doctor).
#
#   command.py   the command line: bitbake -S none, the cache's index and
#                signature data, the diagnosis printed or as JSON
#   analysis.py  the analysis: uncovered tasks, root divergences, causes
#                ranked by cost (pure; takes bitbake's loader and comparer)
#   values.py    how a variable's value differs from the mirror's, in words
