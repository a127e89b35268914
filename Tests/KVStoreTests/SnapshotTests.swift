import ByteCodec
import Testing

@testable import KVStore

@Suite struct SnapshotTests {
    /// A store with keys, deletes, txns and sessions, built from a seed.
    func randomStore(seed: UInt64, commands: Int = 400) -> KVStore {
        var random = RandomRequests(seed: seed)
        var store = KVStore()
        for _ in 0..<commands {
            var command = random.command()
            // Small client ids and sequences so that duplicates and stale requests happen.
            command.requestID = RequestID(
                clientID: UInt64(random.int(0...5)),
                sequence: UInt64(random.int(0...30))
            )
            _ = store.apply(command)
        }
        return store
    }

    @Test func emptyStoreRoundTrip() throws {
        let store = KVStore()
        let restored = try KVStore(snapshot: store.snapshot())
        #expect(restored == store)
        #expect(restored.revision == 1)
        #expect(restored.stateDigest() == store.stateDigest())
    }

    @Test func roundTripPreservesEverything() throws {
        for seed in testSeeds {
            let store = randomStore(seed: seed)
            let bytes = store.snapshot()
            var restored = try KVStore(snapshot: bytes)
            #expect(restored == store, "seed \(seed)")
            #expect(restored.snapshot() == bytes, "seed \(seed)")
            #expect(restored.stateDigest() == store.stateDigest(), "seed \(seed)")
            #expect(restored.checkConsistency() == nil, "seed \(seed)")
            // The restored replica keeps behaving identically, sessions included.
            var original = store
            var random = RandomRequests(seed: seed &+ 1)
            for _ in 0..<100 {
                var command = random.command()
                command.requestID = RequestID(clientID: UInt64(random.int(0...5)), sequence: UInt64(random.int(0...40)))
                #expect(original.apply(command) == restored.apply(command), "seed \(seed)")
            }
            #expect(original.snapshot() == restored.snapshot(), "seed \(seed)")
        }
    }

    @Test func sameHistorySameBytesAndDigest() {
        for seed in testSeeds {
            let first = randomStore(seed: seed)
            let second = randomStore(seed: seed)
            #expect(first.snapshot() == second.snapshot(), "seed \(seed)")
            #expect(first.stateDigest() == second.stateDigest(), "seed \(seed)")
            #expect(first.checkConsistency() == nil, "seed \(seed)")
        }
    }

    @Test func digestTellsStatesApart() {
        var store = KVStore()
        var seen: Set<UInt64> = [store.stateDigest()]
        for index in 0..<200 {
            store.put("k\(index % 7)", "v\(index)", id: RequestID(clientID: UInt64(index % 3), sequence: UInt64(index)))
            #expect(seen.insert(store.stateDigest()).inserted, "step \(index)")
        }
        // Same keys and values reached by a different history differ in metadata, hence digest.
        var a = KVStore()
        a.put("x", "1")
        var b = KVStore()
        b.put("x", "0")
        b.put("x", "1")
        #expect(a.stateDigest() != b.stateDigest())
    }

    @Test func everySingleByteCorruptionIsDetected() {
        let bytes = randomStore(seed: 7, commands: 60).snapshot()
        for position in 0..<bytes.count {
            var corrupt = bytes
            corrupt[position] ^= 0x10
            #expect(throws: KVSnapshotError.self, "byte \(position)") { try KVStore(snapshot: corrupt) }
        }
    }

    @Test func truncationIsDetected() {
        let bytes = randomStore(seed: 8, commands: 60).snapshot()
        for length in 0..<bytes.count {
            #expect(throws: KVSnapshotError.self, "length \(length)") {
                try KVStore(snapshot: Array(bytes.prefix(length)))
            }
        }
        #expect(throws: KVSnapshotError.self) { try KVStore(snapshot: bytes + [0]) }
    }

    @Test func specificSnapshotErrors() throws {
        var bytes = KVStore().snapshot()
        #expect(throws: KVSnapshotError.tooShort(sizeBytes: 3)) { try KVStore(snapshot: Array(bytes.prefix(3))) }
        bytes[0] = 0x00
        #expect(throws: KVSnapshotError.badMagic([0x00] + b("KVS"))) { try KVStore(snapshot: bytes) }
        var format = KVStore().snapshot()
        format[4] = 9
        #expect(throws: KVSnapshotError.unsupportedFormat(9)) { try KVStore(snapshot: format) }
        var flipped = KVStore().snapshot()
        flipped[5] ^= 1
        let error = try #require(throws: KVSnapshotError.self) { try KVStore(snapshot: flipped) }
        guard case .checksumMismatch = error else {
            Issue.record("expected a checksum mismatch, got \(error)")
            return
        }
    }

    /// Content with a valid checksum but broken invariants is refused (format 1, no history).
    @Test func invalidStateIsRefused() {
        func sealed(_ body: (inout ByteWriter) -> Void) -> [UInt8] {
            var writer = ByteWriter()
            writer.writeBytes(b("SKVS"))
            writer.writeUInt8(KVStore.snapshotFormatVersionWithoutHistory)
            body(&writer)
            writer.writeUInt32(CRC32C.checksum(writer.bytes))
            return writer.bytes
        }
        func keyValue(_ key: String, create: Int64, mod: Int64, version: Int64) -> KeyValue {
            KeyValue(key: b(key), value: [], createRevision: create, modRevision: mod, version: version)
        }
        let cases: [(String, [UInt8])] = [
            (
                "revision 0",
                sealed {
                    $0.writeSigned(0)
                    $0.writeVarint(0)
                    $0.writeVarint(0)
                    $0.writeVarint(0)
                }
            ),
            (
                "unordered keys",
                sealed { writer in
                    writer.writeSigned(5)
                    writer.writeVarint(0)
                    writer.writeVarint(2)
                    writer.writeKeyValue(keyValue("b", create: 2, mod: 2, version: 1))
                    writer.writeKeyValue(keyValue("a", create: 3, mod: 3, version: 1))
                    writer.writeVarint(0)
                }
            ),
            (
                "future modRevision",
                sealed { writer in
                    writer.writeSigned(2)
                    writer.writeVarint(0)
                    writer.writeVarint(1)
                    writer.writeKeyValue(keyValue("a", create: 2, mod: 3, version: 1))
                    writer.writeVarint(0)
                }
            ),
            (
                "version 0",
                sealed { writer in
                    writer.writeSigned(3)
                    writer.writeVarint(0)
                    writer.writeVarint(1)
                    writer.writeKeyValue(keyValue("a", create: 2, mod: 3, version: 0))
                    writer.writeVarint(0)
                }
            ),
            (
                "impossible version",
                sealed { writer in
                    writer.writeSigned(3)
                    writer.writeVarint(0)
                    writer.writeVarint(1)
                    writer.writeKeyValue(keyValue("a", create: 2, mod: 3, version: 3))
                    writer.writeVarint(0)
                }
            ),
            (
                "session clock behind",
                sealed { writer in
                    writer.writeSigned(1)
                    writer.writeVarint(0)
                    writer.writeVarint(0)
                    writer.writeVarint(1)
                    writer.writeVarint(5)
                    writer.writeVarint(1)
                    writer.writeVarint(1)
                    writer.writeResult(.failure(.emptyKey, revision: 1))
                }
            ),
        ]
        for (name, bytes) in cases {
            let error = #expect(throws: KVSnapshotError.self, "\(name)") { try KVStore(snapshot: bytes) }
            if let error, case .invalidState = error { continue }
            Issue.record("\(name): expected invalidState, got \(String(describing: error))")
        }
    }
}
