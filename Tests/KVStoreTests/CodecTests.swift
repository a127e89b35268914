import ByteCodec
import Testing

@testable import KVStore

@Suite struct CodecTests {
    @Test func roundTripOfRandomCommands() throws {
        for seed in testSeeds {
            var random = RandomRequests(seed: seed)
            for iteration in 0..<500 {
                let command = random.command()
                let bytes = command.encode()
                #expect(bytes.count <= KVLimits.commandBytesMax)
                let decoded = try WriteCommand.decode(bytes)
                #expect(decoded == command, "seed \(seed) iteration \(iteration)")
                #expect(decoded.encode() == bytes, "seed \(seed) iteration \(iteration)")
            }
        }
    }

    @Test func everyTruncationThrows() {
        for seed in testSeeds {
            var random = RandomRequests(seed: seed)
            for _ in 0..<40 {
                let bytes = random.command().encode()
                for length in 0..<bytes.count {
                    #expect(throws: KVCodecError.self, "seed \(seed) length \(length)") {
                        try WriteCommand.decode(Array(bytes.prefix(length)))
                    }
                }
                #expect(throws: KVCodecError.self, "seed \(seed) trailing byte") {
                    try WriteCommand.decode(bytes + [0])
                }
            }
        }
    }

    /// Random garbage and bit flips must decode or throw, never trap; whatever decodes must
    /// re-encode to a decodable command and apply without trapping.
    @Test func garbageNeverCrashes() {
        for seed in testSeeds {
            var random = RandomRequests(seed: seed)
            var store = KVStore()
            for _ in 0..<2000 {
                var bytes: [UInt8]
                if random.bool() {
                    bytes = random.bytes(maxCount: 64)
                    if random.bool() && !bytes.isEmpty { bytes[0] = WriteCommand.formatVersion }
                } else {
                    bytes = random.command().encode()
                    for _ in 0..<random.int(1...4) {
                        let position = random.int(0...(bytes.count - 1))
                        bytes[position] ^= UInt8(1 << random.int(0...7))
                    }
                }
                if let command = try? WriteCommand.decode(bytes) {
                    #expect((try? WriteCommand.decode(command.encode())) == command, "seed \(seed)")
                }
                _ = store.apply(encoded: bytes)
            }
            #expect(store.checkConsistency() == nil, "seed \(seed)")
        }
    }

    @Test func corruptLengthsAreRefusedWithoutAllocating() throws {
        // format, client 1, sequence 1, put, key length 2^62.
        var writer = ByteWriter()
        writer.writeUInt8(WriteCommand.formatVersion)
        writer.writeVarint(1)
        writer.writeVarint(1)
        writer.writeUInt8(1)
        writer.writeVarint(1 << 62)
        let error = try #require(throws: KVCodecError.self) { try WriteCommand.decode(writer.bytes) }
        #expect(error.offset == 4)
        guard case .lengthTooLarge(field: "put.key", length: 1 << 62, limit: 0) = error.reason else {
            Issue.record("unexpected \(error)")
            return
        }
        // A txn claiming 2^40 compares.
        var txn = ByteWriter()
        txn.writeUInt8(WriteCommand.formatVersion)
        txn.writeVarint(0)
        txn.writeVarint(0)
        txn.writeUInt8(3)
        txn.writeVarint(1 << 40)
        #expect(throws: KVCodecError.self) { try WriteCommand.decode(txn.bytes) }
    }

    @Test func specificErrors() throws {
        #expect(throws: KVCodecError(.truncated(needed: 1, available: 0), offset: 0)) { try WriteCommand.decode([]) }
        #expect(throws: KVCodecError(.unknownFormat(9), offset: 0)) { try WriteCommand.decode([9]) }
        let overflow: [UInt8] = [1] + [UInt8](repeating: 0xFF, count: 10) + [1]
        #expect(throws: KVCodecError(.varintOverflow, offset: 1)) { try WriteCommand.decode(overflow) }
        var flags = WriteCommand(requestID: .none, operation: .put(PutRequest(key: b("k"), value: []))).encode()
        flags[flags.count - 1] = 0x80
        #expect(throws: KVCodecError(.unknownFlags(field: "put.flags", flags: 0x80), offset: flags.count - 1)) {
            try WriteCommand.decode(flags)
        }
        let huge = [UInt8](repeating: 0, count: KVLimits.commandBytesMax + 1)
        #expect(throws: KVCodecError(.inputTooLarge(sizeBytes: huge.count), offset: 0)) {
            try WriteCommand.decode(huge)
        }
    }

    @Test func nestingBeyondTheLimitIsRefused() {
        var deep = TxnRequest()
        for _ in 0..<KVLimits.txnNestingDepthMax { deep = TxnRequest(success: [.txn(deep)]) }
        let bytes = WriteCommand(requestID: .none, operation: .txn(deep)).encode()
        #expect(throws: KVCodecError.self) { try WriteCommand.decode(bytes) }
        let fits = TxnRequest(
            success: deep.success.first.flatMap { op -> [RequestOp]? in
                if case .txn(let inner) = op { return inner.success }
                return nil
            } ?? []
        )
        #expect(throws: Never.self) {
            try WriteCommand.decode(WriteCommand(requestID: .none, operation: .txn(fits)).encode())
        }
    }

    /// The largest requests validation admits still fit `commandBytesMax`.
    @Test func maximalValidCommandsFitTheFrame() throws {
        // Payload-heavy: both branches full of large puts.
        let perOp = KVLimits.requestPayloadBytesMax / (2 * KVLimits.txnOperationsMax) - 8
        let ops = (0..<KVLimits.txnOperationsMax).map { index in
            RequestOp.put(PutRequest(key: b(String(index + 1000)), value: [UInt8](repeating: 0xAB, count: perOp)))
        }
        let compares = (0..<KVLimits.txnOperationsMax).map { _ in
            Compare(key: [0xFF], rangeEnd: [0], result: .notEqual, target: .modRevision(Int64.min))
        }
        let heavy = WriteCommand(
            requestID: RequestID(clientID: .max, sequence: .max),
            operation: .txn(TxnRequest(compare: compares, success: ops, failure: ops))
        )
        // Framing-heavy: ~1000 range ops with extreme revisions plus the largest value.
        let range = RangeRequest(
            key: [UInt8](repeating: 0x61, count: 500),
            rangeEnd: [0],
            limit: .min,
            revision: .min,
            sortOrder: .descend,
            sortTarget: .value,
            serializable: true,
            keysOnly: true,
            countOnly: true,
            minModRevision: .min,
            maxModRevision: .min,
            minCreateRevision: .min,
            maxCreateRevision: .min
        )
        let leaf = TxnRequest(success: [RequestOp](repeating: .range(range), count: 120))
        let bigPut = RequestOp.put(
            PutRequest(key: b("big"), value: [UInt8](repeating: 1, count: KVLimits.valueSizeBytesMax))
        )
        let framed = WriteCommand(
            requestID: RequestID(clientID: .max, sequence: .max),
            operation: .txn(
                TxnRequest(
                    compare: [Compare](
                        repeating: Compare(key: b("c"), result: .less, target: .version(.min)),
                        count: 8
                    ),
                    success: [RequestOp](repeating: .txn(leaf), count: 7) + [bigPut]
                )
            )
        )
        for command in [heavy, framed] {
            try KVStore.validate(command.operation)
            let bytes = command.encode()
            #expect(bytes.count <= KVLimits.commandBytesMax)
            #expect(try WriteCommand.decode(bytes) == command)
        }
    }
}
