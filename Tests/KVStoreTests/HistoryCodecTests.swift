import ByteCodec
import Testing

@testable import KVStore

/// The history in the command codec and in snapshots.
@Suite struct HistoryCodecTests {
    // MARK: - Commands

    @Test func compactionAndProposalTimeRoundTrip() throws {
        let commands = [
            WriteCommand(
                requestID: RequestID(clientID: 3, sequence: 9), operation: .compact(CompactionRequest(revision: 42))),
            WriteCommand(requestID: .none, operation: .compact(CompactionRequest(revision: -1, physical: true))),
            WriteCommand(
                requestID: RequestID(clientID: 1, sequence: 2),
                operation: .put(PutRequest(key: b("k"), value: b("v"))),
                proposedAtMilliseconds: 1_764_540_000_123
            ),
            WriteCommand(
                requestID: .none, operation: .compact(CompactionRequest(revision: 7)), proposedAtMilliseconds: -5),
        ]
        for command in commands {
            #expect(try WriteCommand.decode(command.encode()) == command, "\(command)")
        }
    }

    @Test func aCommandWithoutTimeKeepsFormatOneBytes() throws {
        let command = WriteCommand(
            requestID: RequestID(clientID: 1, sequence: 2), operation: .put(PutRequest(key: b("k"), value: b("v"))))
        // Format 1 as written before the proposal time existed.
        #expect(command.encode() == [1, 1, 2, 1, 1, 0x6B, 1, 0x76, 0])
        var timed = command
        timed.proposedAtMilliseconds = 3
        #expect(timed.encode() == [2, 1, 2, 6, 1, 1, 0x6B, 1, 0x76, 0])
        #expect(try WriteCommand.decode([2, 1, 2, 6, 1, 1, 0x6B, 1, 0x76, 0]).proposedAtMilliseconds == 3)
        #expect(
            WriteCommand(requestID: .none, operation: .compact(CompactionRequest(revision: 5, physical: true))).encode()
                == [1, 0, 0, 4, 10, 1]
        )
    }

    @Test func malformedCompactionsAndTimesAreRefused() {
        func reason(_ bytes: [UInt8]) -> KVCodecError.Reason? {
            do {
                _ = try WriteCommand.decode(bytes)
                return nil
            } catch {
                return error.reason
            }
        }
        // Undefined compaction flag bits.
        #expect(reason([1, 0, 0, 4, 10, 2]) == .unknownFlags(field: "compact.flags", flags: 2))
        // Compaction missing its flags, or its revision.
        #expect(reason([1, 0, 0, 4, 10]) == .truncated(needed: 1, available: 0))
        #expect(reason([1, 0, 0, 4]) == .truncated(needed: 1, available: 0))
        // Trailing bytes after a compaction.
        #expect(reason([1, 0, 0, 4, 10, 0, 0]) == .trailingBytes(count: 1))
        // A compaction is not a txn op: tag 4 inside a txn branch is refused.
        #expect(reason([1, 0, 0, 3, 0, 1, 4, 10, 0, 0]) == .unknownTag(field: "requestOp", tag: 4))
        // Format 2 truncated in the time, or with a time longer than a varint may be.
        #expect(reason([2, 1, 2]) == .truncated(needed: 1, available: 0))
        #expect(reason([2, 1, 2] + [UInt8](repeating: 0xFF, count: 10) + [1]) == .varintOverflow)
        // Format 3 does not exist.
        #expect(reason([3, 1, 2, 6, 1, 1, 0x6B, 1, 0x76, 0]) == .unknownFormat(3))
        // A compaction result is refused where a response op is expected (only top level).
        var writer = ByteWriter()
        writer.writeUInt8(3)
        writer.writeSigned(5)
        writer.writeBool(true)
        writer.writeVarint(1)
        writer.writeBytes([4, 10, 0, 0])
        var reader = ByteReader(writer.bytes)
        let error = #expect(throws: KVCodecError.self) { try reader.readResult() }
        #expect(error?.reason == .unknownTag(field: "responseOp", tag: 4))
    }

    @Test func everyTruncationOfANewCommandThrows() {
        let command = WriteCommand(
            requestID: RequestID(clientID: 300, sequence: 70_000),
            operation: .compact(CompactionRequest(revision: 123_456, physical: true)),
            proposedAtMilliseconds: 1_764_540_000_123
        )
        let bytes = command.encode()
        for length in 0..<bytes.count {
            #expect(throws: KVCodecError.self, "length \(length)") {
                try WriteCommand.decode(Array(bytes.prefix(length)))
            }
        }
    }

    // MARK: - Snapshots

    /// A store with history, a compaction, sessions (one holding a compaction result) and times.
    func storeWithHistory() -> KVStore {
        var store = KVStore()
        for step in 0..<40 {
            let key = b("k\(step % 7)")
            let operation: WriteOperation
            switch step % 5 {
            case 0, 1: operation = .put(PutRequest(key: key, value: b("v\(step)")))
            case 2: operation = .deleteRange(DeleteRangeRequest(key: key, rangeEnd: b("k\(step % 7)z")))
            case 3:
                operation = .txn(
                    TxnRequest(success: [
                        .put(PutRequest(key: b("t\(step)"), value: b("a"))),
                        .deleteRange(DeleteRangeRequest(key: b("k"), rangeEnd: b("k3"))),
                        .put(PutRequest(key: key + b("x"), value: b("b"))),
                    ])
                )
            default: operation = .put(PutRequest(key: key, value: []))
            }
            _ = store.apply(
                WriteCommand(
                    requestID: RequestID(clientID: UInt64(step % 3), sequence: UInt64(step)),
                    operation: operation,
                    proposedAtMilliseconds: Int64(1000 + step)
                )
            )
            if step == 25 {
                _ = store.apply(
                    WriteCommand(
                        requestID: RequestID(clientID: 2, sequence: 100),
                        operation: .compact(CompactionRequest(revision: store.revision - 10))
                    )
                )
            }
        }
        return store
    }

    @Test func snapshotRoundTripKeepsTheHistory() throws {
        let store = storeWithHistory()
        #expect(store.compactedRevision > 0)
        #expect(store.checkConsistency() == nil)
        let bytes = store.snapshot()
        #expect(bytes[4] == 2)
        let restored = try KVStore(snapshot: bytes)
        #expect(restored == store)
        #expect(restored.stateDigest() == store.stateDigest())
        #expect(restored.snapshot() == bytes)
        #expect(restored.approximateBytes == store.approximateBytes)
        #expect(restored.compactedRevision == store.compactedRevision)
        #expect(restored.checkConsistency() == nil)
        for revision in store.compactedRevision...store.revision {
            let request = RangeRequest(key: [0], rangeEnd: [0], revision: revision)
            #expect(try restored.range(request) == store.range(request), "revision \(revision)")
        }
        let from = store.compactedRevision + 1
        #expect(
            try restored.events(from: from, key: [0], rangeEnd: [0])
                == store.events(from: from, key: [0], rangeEnd: [0]))
        #expect(restored.history(key: [0], rangeEnd: [0]) == store.history(key: [0], rangeEnd: [0]))
        #expect(try restored.hashKV() == store.hashKV())
        // The restored store goes on exactly like the original.
        var original = store
        var copy = restored
        original.put("k1", "after")
        copy.put("k1", "after")
        #expect(original == copy)
        #expect(original.lastAppliedEvents == copy.lastAppliedEvents)
    }

    @Test func aSnapshotWithoutHistoryRestoresAsCompactedAtItsRevision() throws {
        var writer = ByteWriter()
        writer.writeBytes(b("SKVS"))
        writer.writeUInt8(KVStore.snapshotFormatVersionWithoutHistory)
        writer.writeSigned(5)
        writer.writeVarint(0)
        writer.writeVarint(1)
        writer.writeKeyValue(KeyValue(key: b("a"), value: b("1"), createRevision: 2, modRevision: 4, version: 3))
        writer.writeVarint(0)
        writer.writeUInt32(CRC32C.checksum(writer.bytes))
        var store = try KVStore(snapshot: writer.bytes)
        #expect(store.revision == 5)
        #expect(store.compactedRevision == 5)
        #expect(store.value("a") == "1")
        #expect(throws: KVError.compacted(revision: 5)) { try store.range(RangeRequest(key: b("a"), revision: 4)) }
        // Format 1 brought no events, not even those of its own revision.
        #expect(store.firstWatchableRevision == 6)
        #expect(throws: KVError.compacted(revision: 5)) { try store.events(from: 5, key: b("a")) }
        #expect(store.checkConsistency() == nil)
        store.put("a", "2")
        #expect(store.get(b("a"))?.version == 4)
        #expect(try store.events(from: 6, key: b("a")).first?.prevKV?.value == b("1"))
        #expect(store.checkConsistency() == nil)
    }

    /// Well-sealed format-2 content that lies about the history is refused, never trapped on.
    @Test func inconsistentHistoryIsRefused() {
        func sealed(_ body: (inout ByteWriter) -> Void) -> [UInt8] {
            var writer = ByteWriter()
            writer.writeBytes(b("SKVS"))
            writer.writeUInt8(KVStore.snapshotFormatVersion)
            body(&writer)
            writer.writeUInt32(CRC32C.checksum(writer.bytes))
            return writer.bytes
        }
        func header(_ writer: inout ByteWriter, revision: Int64, compacted: Int64) {
            writer.writeSigned(revision)
            writer.writeSigned(compacted)
            writer.writeVarint(0)
        }
        func put(_ writer: inout ByteWriter, _ key: String) {
            writer.writeUInt8(WatchEventType.put.rawValue)
            writer.writeLengthPrefixed(b(key))
            writer.writeLengthPrefixed(b("v"))
        }
        let cases: [(String, [UInt8])] = [
            (
                "fewer records than revisions",
                sealed { writer in
                    header(&writer, revision: 3, compacted: 0)
                    writer.writeVarint(0)
                    writer.writeBool(false)  // no compacted-revision record
                    writer.writeVarint(1)
                    writer.writeSigned(0)
                    writer.writeVarint(1)
                    put(&writer, "a")
                    writer.writeVarint(0)
                }
            ),
            (
                "empty record",
                sealed { writer in
                    header(&writer, revision: 2, compacted: 0)
                    writer.writeVarint(0)
                    writer.writeBool(false)  // no compacted-revision record
                    writer.writeVarint(1)
                    writer.writeSigned(0)
                    writer.writeVarint(0)
                    writer.writeVarint(0)
                }
            ),
            (
                "delete of a missing key",
                sealed { writer in
                    header(&writer, revision: 2, compacted: 0)
                    writer.writeVarint(0)
                    writer.writeBool(false)  // no compacted-revision record
                    writer.writeVarint(1)
                    writer.writeSigned(0)
                    writer.writeVarint(1)
                    writer.writeUInt8(WatchEventType.delete.rawValue)
                    writer.writeLengthPrefixed(b("a"))
                    writer.writeVarint(0)
                }
            ),
            (
                "base key after the compaction",
                sealed { writer in
                    header(&writer, revision: 4, compacted: 3)
                    writer.writeVarint(1)
                    writer.writeKeyValue(
                        KeyValue(key: b("a"), value: [], createRevision: 2, modRevision: 4, version: 1))
                    writer.writeSigned(0)
                    writer.writeBool(false)  // no compacted-revision record
                    writer.writeVarint(1)
                    writer.writeSigned(0)
                    writer.writeVarint(1)
                    put(&writer, "b")
                    writer.writeVarint(0)
                }
            ),
            (
                "compaction beyond the revision",
                sealed { writer in
                    header(&writer, revision: 2, compacted: 3)
                    writer.writeVarint(0)
                    writer.writeBool(false)  // no compacted-revision record
                    writer.writeVarint(0)
                    writer.writeVarint(0)
                }
            ),
            (
                "empty key",
                sealed { writer in
                    header(&writer, revision: 2, compacted: 0)
                    writer.writeVarint(0)
                    writer.writeBool(false)  // no compacted-revision record
                    writer.writeVarint(1)
                    writer.writeSigned(0)
                    writer.writeVarint(1)
                    put(&writer, "")
                    writer.writeVarint(0)
                }
            ),
        ]
        func compactedRecord(compacted: Int64, eventRevision: Int64) -> [UInt8] {
            sealed { writer in
                header(&writer, revision: 3, compacted: compacted)
                writer.writeVarint(0)
                writer.writeBool(true)
                writer.writeSigned(0)
                writer.writeVarint(1)
                writer.writeUInt8(WatchEventType.put.rawValue)
                writer.writeKeyValue(
                    KeyValue(key: b("a"), value: [], createRevision: 2, modRevision: eventRevision, version: 1))
                writer.writeBool(false)
                writer.writeVarint(UInt64(3 - Swift.max(compacted, 1)))
                for _ in 0..<(3 - Swift.max(compacted, 1)) {
                    writer.writeSigned(0)
                    writer.writeVarint(1)
                    put(&writer, "z")
                }
                writer.writeVarint(0)
            }
        }
        let baseVersionZero = sealed { writer in
            header(&writer, revision: 3, compacted: 3)
            writer.writeVarint(1)
            writer.writeKeyValue(KeyValue(key: b("a"), value: [], createRevision: 2, modRevision: 3, version: 0))
            writer.writeSigned(0)
            writer.writeBool(false)
            writer.writeVarint(0)
            writer.writeVarint(0)
        }
        let recordCases: [(String, [UInt8])] = [
            ("base version 0", baseVersionZero),
            ("compacted record for revision 0", compactedRecord(compacted: 0, eventRevision: 0)),
            ("compacted record event off its revision", compactedRecord(compacted: 3, eventRevision: 2)),
        ]
        for (name, bytes) in cases + recordCases {
            let error = #expect(throws: KVSnapshotError.self, "\(name)") { try KVStore(snapshot: bytes) }
            if let error, case .invalidState = error { continue }
            Issue.record("\(name): expected invalidState, got \(String(describing: error))")
        }
        // A corrupt count never allocates: a huge record count is refused as malformed.
        let huge = sealed { writer in
            header(&writer, revision: 2, compacted: 0)
            writer.writeVarint(0)
            writer.writeBool(false)  // no compacted-revision record
            writer.writeVarint(UInt64(Int.max))
        }
        let error = #expect(throws: KVSnapshotError.self) { try KVStore(snapshot: huge) }
        if let error, case .malformed(let codec) = error, case .lengthTooLarge = codec.reason {
        } else {
            Issue.record("expected lengthTooLarge, got \(String(describing: error))")
        }
    }

    @Test func everyByteCorruptionOfAHistorySnapshotIsDetected() {
        let bytes = storeWithHistory().snapshot()
        for position in stride(from: 0, to: bytes.count, by: 7) {
            var corrupt = bytes
            corrupt[position] ^= 0x20
            #expect(throws: KVSnapshotError.self, "byte \(position)") { try KVStore(snapshot: corrupt) }
        }
    }

    /// Corruption behind a valid checksum (as from a buggy writer): restore either refuses
    /// it or yields a consistent store, and never traps.
    @Test func resealedCorruptionNeverTraps() {
        let bytes = storeWithHistory().snapshot()
        let body = Array(bytes.prefix(bytes.count - 4))
        for seed in testSeeds {
            var random = RandomRequests(seed: seed)
            for round in 0..<300 {
                var corrupt = body
                for _ in 0..<random.int(1...3) {
                    let position = random.int(5...(corrupt.count - 1))
                    switch random.int(0...2) {
                    case 0: corrupt[position] = UInt8(random.int(0...255))
                    case 1: corrupt[position] ^= 1
                    default: corrupt.removeSubrange(position...)
                    }
                    if corrupt.count <= 6 { break }
                }
                var writer = ByteWriter()
                writer.writeBytes(corrupt)
                writer.writeUInt32(CRC32C.checksum(corrupt))
                if let restored = try? KVStore(snapshot: writer.bytes) {
                    #expect(restored.checkConsistency() == nil, "seed \(seed) round \(round)")
                }
            }
        }
    }
}
