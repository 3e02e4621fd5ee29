# SPDX-License-Identifier: MIT
#
# equivcache.bbclass: finds every mismatch between sstate mirrors, hash
# equivalence servers, signature handler and network settings, once per
# build, and warns, fixes or fails as EQUIVCACHE_MODE says. With
# EQUIVCACHE_SERVER it also configures this build as a client of a cache
# server. Enable it in local.conf:
#
#   INHERIT += "equivcache"
#
# With EQUIVCACHE_PUBLISH it publishes each successful build to a remote
# cache, in the background (lib/equivcache/buildpublish.py).
#
# With BB_SIGNATURE_HANDLER = "EquivCacheHash" it also reports, at the end of
# each build, what the sstate cache and the hash equivalence server gave and
# why each missed setscene task missed: one line, and a JSON document in
# ${LOG_DIR}/equivcache/ (lib/equivcache/report.py), sent to a cache
# server's dashboard with EQUIVCACHE_REPORT_TO.
#
# The rules live in lib/equivcache/rules.py; this class only hands them the
# datastore (lib/equivcache/configcheck.py) and the build's events
# (lib/equivcache/buildreport.py). No task reads these variables, so the
# class changes no task signature.

EQUIVCACHE_MODE ?= "warn"
EQUIVCACHE_MODE[doc] = "What equivcache.bbclass does with what it finds: 'warn' (one warning per finding), \
'fix' (correct the configuration before the build starts and print each change) or 'fatal' (stop before \
parsing recipes, listing every finding)."

EQUIVCACHE_IGNORE ?= ""
EQUIVCACHE_IGNORE[doc] = "Names of equivcache rules to silence, separated by spaces (the rules reference of the documentation lists them)."

EQUIVCACHE_SERVER ?= ""
EQUIVCACHE_SERVER[doc] = "The http(s):// URL of a cache server (scripts/equivcache-server). Its descriptor \
(equivcache.json) gives the sstate and downloads mirrors and the hash equivalence server, and the class \
configures this build to use them."

EQUIVCACHE_GPG_PATH ?= "${TOPDIR}/equivcache-gnupg"
EQUIVCACHE_GPG_PATH[doc] = "The GnuPG home directory a consumer of a cache that requires signatures verifies \
sstate objects with: with EQUIVCACHE_SERVER naming such a cache, and neither GPG_PATH nor SSTATE_SIG_KEY set, the \
class fills it with the cache's producer keys (checked against the descriptor's fingerprints) and a local key for \
this build's own objects, and sets GPG_PATH, SSTATE_VERIFY_SIG, SSTATE_VALID_SIGS and SSTATE_SIG_KEY for them."

EQUIVCACHE_KNOWN_CACHES ?= ""
EQUIVCACHE_KNOWN_CACHES[doc] = "Sstate mirrors without a descriptor and the hash equivalence server that names \
their objects, as MIRROR_ROOT=HASHSERV words (for example 'http://sstate.example.com/all=sstate.example.com:8686'), \
added to the layer's table of public caches (lib/equivcache/knowncaches.py)."

EQUIVCACHE_PROBE_TIMEOUT ?= "2"
EQUIVCACHE_PROBE_TIMEOUT[doc] = "Seconds each network check of equivcache.bbclass may take (they run in parallel)."

EQUIVCACHE_MIRROR_INDEX ?= "1"
EQUIVCACHE_MIRROR_INDEX[doc] = "'1': before a build runs anything, answer 'which objects does this sstate mirror \
have' from the mirror's sstate index (published by equivcache-server) in at most two requests, instead of one \
request per object; mirrors without an index are checked as stock does. '0': stock's check for every mirror."

EQUIVCACHE_SERVER_TIMEOUT[doc] = "Seconds the EquivCacheHash signature handler gives a hash equivalence server \
for a connection or an answer (default 10); then the handler warns once and stops asking for the rest of the \
build. Read by the handler, with or without this class."

EQUIVCACHE_PUBLISH ?= ""
EQUIVCACHE_PUBLISH[doc] = "The http(s):// URL of a cache server to publish this build to when it succeeds \
(equivcache-server publish --to, in the background: never failing or holding the build; a refused token or an \
unreachable server is one warning). Needs EQUIVCACHE_PUBLISH_TOKEN_FILE. Log: LOG_DIR/equivcache/publish.log."

EQUIVCACHE_PUBLISH_TOKEN_FILE ?= ""
EQUIVCACHE_PUBLISH_TOKEN_FILE[doc] = "The producer token file for EQUIVCACHE_PUBLISH, as 'equivcache-server token \
add' printed it (one line NAME:SECRET; keep it mode 0600)."

EQUIVCACHE_REPORT_TO ?= ""
EQUIVCACHE_REPORT_TO[doc] = "The http(s):// URL of a cache server whose dashboard gets each build's report \
(with EquivCacheHash): sent in the background at the end of the build, never failing or holding it. Log: \
LOG_DIR/equivcache/report-send.log."

EQUIVCACHE_REPORT_TOKEN_FILE ?= ""
EQUIVCACHE_REPORT_TOKEN_FILE[doc] = "A reporter's (or producer's) token file, as 'equivcache-server token add NAME \
--role reporter' printed it, that the reports of EQUIVCACHE_REPORT_TO carry: what a cache run with serve \
--reports-need-token wants. A reporter may send reports and read, never upload (a pull request's build)."

EQUIVCACHE_REPORT_NAME ?= ""
EQUIVCACHE_REPORT_NAME[doc] = "How the reports of EQUIVCACHE_REPORT_TO name this build machine on the dashboard \
(default: not at all)."

BB_HASHCONFIG_IGNORE_VARS += "EQUIVCACHE_MODE EQUIVCACHE_IGNORE EQUIVCACHE_PROBE_TIMEOUT EQUIVCACHE_MIRROR_INDEX \
    EQUIVCACHE_KNOWN_CACHES EQUIVCACHE_PUBLISH EQUIVCACHE_PUBLISH_TOKEN_FILE EQUIVCACHE_REPORT_TO \
    EQUIVCACHE_REPORT_NAME EQUIVCACHE_REPORT_TOKEN_FILE EQUIVCACHE_GPG_PATH"

# BB_HASHCHECK_FUNCTION (sstate.bbclass's sstate_checkhashes, or whatever
# another layer wrapped it in) is wrapped at ConfigParsed, once every class
# has set it: lib/equivcache/sstatecheck.py.
def equivcache_checkhashes(sq_data, d, siginfo=False, currentcount=0, summary=True, **kwargs):
    import equivcache.sstatecheck
    previous = globals()[d.getVar("EQUIVCACHE_HASHCHECK_PREVIOUS")]
    return equivcache.sstatecheck.checkhashes(previous, sq_data, d, siginfo=siginfo, currentcount=currentcount,
                                              summary=summary, **kwargs)

addhandler equivcache_config_parsed
equivcache_config_parsed[eventmask] = "bb.event.ConfigParsed bb.event.BuildCompleted"
python equivcache_config_parsed() {
    import equivcache.configcheck
    if isinstance(e, bb.event.ConfigParsed):
        equivcache.configcheck.on_config_parsed(e.data)
    else:
        import equivcache.buildpublish
        equivcache.configcheck.forget_reports(e.data)
        equivcache.buildpublish.on_build_completed(e, e.data)
}

addhandler equivcache_report
equivcache_report[eventmask] = "bb.event.BuildStarted bb.event.BuildCompleted \
    bb.runqueue.sceneQueueTaskStarted bb.runqueue.sceneQueueTaskCompleted bb.runqueue.sceneQueueTaskFailed \
    bb.runqueue.runQueueTaskStarted bb.runqueue.runQueueTaskFailed bb.runqueue.runQueueTaskSkipped"
python equivcache_report() {
    import equivcache.buildreport
    import equivcache.sstatecheck
    equivcache.sstatecheck.on_build_event(e)
    equivcache.buildreport.on_build_event(e, e.data)
}
