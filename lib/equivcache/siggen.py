# SPDX-License-Identifier: MIT
#
# EquivCacheHash: OE-core's OEEquivHash signature handler, unchanged in every
# task hash and unihash it computes, except that a hash equivalence server
# that is missing, refuses connections or dies never breaks the build
# (its clients: lib/equivcache/hashclient.py), and that it records what the
# server and the sstate check gave the build for its report (report.py).
#
# Select it with BB_SIGNATURE_HANDLER = "EquivCacheHash". Importing this
# module (the layer's addpylib does) registers it in bb.siggen, the way
# oe.sstatesig registers OEEquivHash.

import os
import time

import bb.asyncrpc
import bb.runqueue
import bb.siggen

try:
    import oe.sstatesig
except ImportError as e:
    raise ImportError(
        "meta-equivcache needs OE-core's Python library (oe.sstatesig): list "
        "the meta layer before meta-equivcache in BBLAYERS (%s)" % e
    ) from e

from equivcache import report
from equivcache.hashclient import AwayTolerantClients, ServerAway
from equivcache.outage import describe_error
from equivcache.sstatecheck import sstate_object

hashequiv_logger = bb.siggen.hashequiv_logger


class SstateCheckReport:
    """The part of EquivCacheHash that hands the build report the sstate
    check: what sstate_checkhashes found locally, on a mirror, or missed."""

    def checkhashes(self, sq_data, missed, found, d):
        """Called by sstate_checkhashes with what it found (locally or on a
        mirror) and missed: recorded for the build report."""
        super().checkhashes(sq_data, missed, found, d)
        record = report.current()
        if record is None:
            return
        try:
            sstate_dir = d.getVar("SSTATE_DIR")
            entries = {}
            for tid in sq_data["hash"]:
                path = os.path.join(sstate_dir, sstate_object(sq_data, tid, d))
                if tid in missed:
                    where = "missed"
                else:
                    # A mirror object is only checked, not yet downloaded.
                    where = "local" if os.path.exists(path) else "mirror"
                entries[tid] = {
                    "recipe": self.tidtopn.get(tid) or bb.runqueue.fn_from_tid(tid),
                    "task": bb.runqueue.taskname_from_tid(tid),
                    "unihash": sq_data["unihash"][tid],
                    "taskhash": sq_data["hash"][tid],
                    "where": where,
                    "path": path,
                }
            record.sstate_checked(entries)
        except Exception as e:
            # The report never breaks a build.
            hashequiv_logger.debug("equivcache: cannot record the sstate check: %s" % describe_error(e))


class SignatureGeneratorEquivCacheHash(SstateCheckReport, AwayTolerantClients,
                                       oe.sstatesig.SignatureGeneratorOEEquivHash):
    """OEEquivHash's signatures; while the server is away (AwayTolerantClients),
    the unihash of a task is its task hash for the rest of the build, nothing
    is reported and no guessed unihash is saved."""

    name = "EquivCacheHash"

    def get_unihashes(self, tids):
        tids = list(tids)
        record = report.current()
        asked = [tid for tid in tids if not self.get_cached_unihash(tid)] if record else []
        if not self.equivcache_away:
            try:
                start = time.monotonic()
                answers = super().get_unihashes(tids)
                if asked:
                    record.unihash_call(asked, answers, self.taskhash, time.monotonic() - start)
                return answers
            except ServerAway as e:
                self.equivcache_server_away(e.error, "querying unihashes")
        if record:
            record.unihashes_guessed(asked)

        # As OEEquivHash does for a task the server does not know: the
        # unihash is the task hash, unless this build already has one.
        result = {}
        for tid in tids:
            unihash = self.get_cached_unihash(tid)
            if not unihash:
                unihash = self.taskhash[tid]
                self.set_unihash(tid, unihash)
            result[tid] = unihash
        return result

    def unihashes_exist(self, query):
        if not self.equivcache_away:
            try:
                return super().unihashes_exist(query)
            except ServerAway as e:
                self.equivcache_server_away(e.error, "checking unihashes")
        return {key: False for key in query}

    def report_unihash(self, path, task, d):
        if self.equivcache_away:
            hashequiv_logger.debug("Not reporting %s: hash equivalence server %s is away" % (task, self.server))
            return
        try:
            super().report_unihash(path, task, d)
        except ServerAway as e:
            self.equivcache_server_away(e.error, "reporting an output hash")

    def report_unihash_equiv(self, tid, taskhash, wanted_unihash, current_unihash, datacaches):
        if self.equivcache_away:
            return False
        try:
            return super().report_unihash_equiv(tid, taskhash, wanted_unihash, current_unihash, datacaches)
        except ServerAway as e:
            if isinstance(e.error, bb.asyncrpc.InvokeError):
                # The server answered and refused: a read-only endpoint
                # (anonymous @read). Not an outage: go on asking it.
                hashequiv_logger.verbose("Hash equivalence server %s refused the equivalence report of %s: %s"
                                         % (self.server, tid, e))
            else:
                self.equivcache_server_away(e.error, "reporting an equivalence")
            return False

    def save_unitaskhashes(self):
        # Unihashes guessed while the server was away must not outlive this
        # build: saved, they would be taken from the cache next time instead
        # of being asked from the server, and the mirror would keep missing.
        if self.equivcache_away:
            hashequiv_logger.debug("Not saving the unihash cache: hash equivalence server %s was away" % self.server)
            return
        super().save_unitaskhashes()


# Insert the class into siggen's namespace so BB_SIGNATURE_HANDLER can select it
bb.siggen.SignatureGeneratorEquivCacheHash = SignatureGeneratorEquivCacheHash
