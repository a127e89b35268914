import Testing

@testable import KVStore

/// How the bounds relate (STYLE §9).
@Suite struct LimitsTests {
    @Test func boundsRelate() {
        #expect(KVLimits.valueSizeBytesMax == 1_572_864)  // etcd's default request limit
        #expect(KVLimits.txnOperationsMax == 128)  // etcd's --max-txn-ops default
        #expect(KVLimits.keySizeBytesMax + KVLimits.valueSizeBytesMax <= KVLimits.requestPayloadBytesMax)
        #expect(KVLimits.requestPayloadBytesMax < KVLimits.commandBytesMax)
        #expect(KVLimits.txnOperationsMax <= KVLimits.txnOperationsTotalMax)
        #expect(KVLimits.txnNestingDepthMax < KVLimits.txnOperationsMax)
        #expect(KVLimits.keyIndexChunkEntriesMax >= 2)
        #expect(KVLimits.sessionsMax > 0)
    }
}
