# SPDX-License-Identifier: MIT
SUMMARY = "meta-equivcache test chain, recipe C (depends on B)"
require equivcache-chain.inc

DEPENDS = "equivcache-b-native"

# Changes C's output only: a second, cheaper drift for equivcache-doctor.
EQUIVCACHE_TEST_C_OUTPUT ?= "0"

do_compile() {
    cat ${STAGING_DATADIR_NATIVE}/equivcache-chain/equivcache-b-native.txt > ${B}/${PN}.txt
    echo "C output ${EQUIVCACHE_TEST_C_OUTPUT}" >> ${B}/${PN}.txt
}
