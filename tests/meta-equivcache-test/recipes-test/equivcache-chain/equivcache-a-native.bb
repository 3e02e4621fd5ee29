# SPDX-License-Identifier: MIT
SUMMARY = "meta-equivcache test chain, recipe A (the root)"
require equivcache-chain.inc

# Changes A's task hash but not its output: hash equivalence must find
# the new do_compile equivalent and keep B and C from rebuilding.
EQUIVCACHE_TEST_SAME_OUTPUT ?= "0"
# Changes A's output: B and C must rebuild.
EQUIVCACHE_TEST_NEW_OUTPUT ?= "0"
# A process to kill from do_compile, to stop a hash equivalence server in
# the middle of a build (after the runqueue has its unihashes).
EQUIVCACHE_TEST_KILL_PID ?= ""

do_compile() {
    # same-output knob, in a comment only: ${EQUIVCACHE_TEST_SAME_OUTPUT}
    if [ -n "${EQUIVCACHE_TEST_KILL_PID}" ]; then
        kill -9 ${EQUIVCACHE_TEST_KILL_PID}
    fi
    echo "A output ${EQUIVCACHE_TEST_NEW_OUTPUT}" > ${B}/${PN}.txt
}
