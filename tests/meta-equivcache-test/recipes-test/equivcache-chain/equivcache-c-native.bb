# SPDX-License-Identifier: MIT
SUMMARY = "meta-equivcache test chain, recipe C (depends on B)"
require equivcache-chain.inc

DEPENDS = "equivcache-b-native"

do_compile() {
    cat ${STAGING_DATADIR_NATIVE}/equivcache-chain/equivcache-b-native.txt > ${B}/${PN}.txt
    echo "C output" >> ${B}/${PN}.txt
}
