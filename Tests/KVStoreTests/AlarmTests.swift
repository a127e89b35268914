import ByteCodec
import Testing

@testable import KVStore

/// etcd's alarms as replicated state: the NOSPACE alarm refuses what would add data, the
/// command and result codecs, and the optional snapshot section.
@Suite struct AlarmTests {
    static let noSpace = AlarmMember(memberID: 2, alarm: .nospace)

    @discardableResult
    static func alarm(_ store: inout KVStore, _ action: AlarmAction, member: UInt64 = 2, _ type: AlarmType = .nospace)
        -> WriteResult
    {
        store.apply(WriteCommand(requestID: .none, operation: .alarm(AlarmRequest(action: action, memberID: member, alarm: type))))
    }

    @Test func activateListDeactivate() {
        var store = KVStore()
        store.put("a", "1")
        #expect(Self.alarm(&store, .get, member: 0, .none) == .alarm(AlarmResponse(revision: 2, alarms: [])))
        #expect(Self.alarm(&store, .activate) == .alarm(AlarmResponse(revision: 2, alarms: [Self.noSpace])))
        // Activating again changes nothing; alarms take no revision.
        Self.alarm(&store, .activate)
        Self.alarm(&store, .activate, member: 1)
        #expect(store.revision == 2)
        let both = [AlarmMember(memberID: 1, alarm: .nospace), Self.noSpace]
        #expect(Self.alarm(&store, .get, member: 0, .none) == .alarm(AlarmResponse(revision: 2, alarms: both)))
        #expect(Self.alarm(&store, .get, member: 0, .corrupt) == .alarm(AlarmResponse(revision: 2, alarms: [])))
        #expect(store.activeAlarms == both)
        #expect(Self.alarm(&store, .deactivate) == .alarm(AlarmResponse(revision: 2, alarms: [Self.noSpace])))
        #expect(Self.alarm(&store, .deactivate) == .alarm(AlarmResponse(revision: 2, alarms: [])))
        #expect(store.isOutOfSpace)
        Self.alarm(&store, .deactivate, member: 1)
        #expect(!store.isOutOfSpace)
        #expect(store.activeAlarms.isEmpty)
        // NONE cannot be activated.
        #expect(Self.alarm(&store, .activate, .none) == .alarm(AlarmResponse(revision: 2, alarms: [])))
        #expect(store.activeAlarms.isEmpty)
    }

    @Test func noSpaceRefusesPutsAndTxnsWithPutsOnly() {
        var store = KVStore()
        store.put("a", "1")
        store.put("b", "2")
        Self.alarm(&store, .activate)
        #expect(store.put("c", "3") == .failure(.noSpace, revision: 3))
        #expect(store.put("c", "3").error?.message == "etcdserver: mvcc: database space exceeded")
        // A put hidden in a nested txn's failure branch counts too.
        let nested = TxnRequest(
            success: [.txn(TxnRequest(failure: [.put(PutRequest(key: b("d"), value: b("4")))]))])
        #expect(store.txn(nested) == .failure(.noSpace, revision: 3))
        // Reads, deletes, read-only txns and compaction go on.
        let readOnly = TxnRequest(success: [.range(RangeRequest(key: b("a")))])
        #expect(store.txn(readOnly).error == nil)
        #expect(store.delete("a").error == nil)
        #expect(store.revision == 4)
        #expect(store.apply(WriteCommand(requestID: .none, operation: .compact(CompactionRequest(revision: 4)))).error == nil)
        #expect(store.value("c") == nil)
        Self.alarm(&store, .deactivate)
        #expect(store.put("c", "3").error == nil)
        #expect(store.checkConsistency() == nil)
    }

    @Test func quotaCostIsEtcds() {
        let put = WriteOperation.put(PutRequest(key: b("key"), value: b("value")))
        #expect(KVStore.quotaCostBytes(put) == 256 + 3 + 5)
        let txn = WriteOperation.txn(
            TxnRequest(
                success: [.put(PutRequest(key: b("a"), value: b("1")))],
                failure: [.put(PutRequest(key: b("bb"), value: b("22"))), .deleteRange(DeleteRangeRequest(key: b("x")))]))
        #expect(KVStore.quotaCostBytes(txn) == 256 + 4)
        #expect(KVStore.quotaCostBytes(.deleteRange(DeleteRangeRequest(key: b("x")))) == 0)
        #expect(KVStore.quotaCostBytes(.compact(CompactionRequest(revision: 3))) == 0)
    }

    @Test func commandAndResultRoundTrip() throws {
        for action in AlarmAction.allCases {
            for type in AlarmType.allCases {
                let command = WriteCommand(
                    requestID: RequestID(clientID: 5, sequence: 6),
                    operation: .alarm(AlarmRequest(action: action, memberID: 1 << 40, alarm: type)))
                #expect(try WriteCommand.decode(command.encode()) == command)
            }
        }
        // Results go through the session table, hence through snapshots.
        var store = KVStore()
        store.put("a", "1")
        let listed = store.apply(
            WriteCommand(
                requestID: RequestID(clientID: 9, sequence: 1),
                operation: .alarm(AlarmRequest(action: .activate, memberID: 3, alarm: .nospace))))
        _ = store.apply(
            WriteCommand(
                requestID: RequestID(clientID: 10, sequence: 1), operation: .put(PutRequest(key: b("b"), value: b("2")))))
        let restored = try KVStore(snapshot: store.snapshot())
        #expect(restored == store)
        #expect(restored.stateDigest() == store.stateDigest())
        #expect(restored.isOutOfSpace)
        var repeated = restored
        let again = repeated.apply(
            WriteCommand(
                requestID: RequestID(clientID: 9, sequence: 1),
                operation: .alarm(AlarmRequest(action: .activate, memberID: 3, alarm: .nospace))))
        #expect(again == listed)
        let refused = repeated.apply(
            WriteCommand(
                requestID: RequestID(clientID: 10, sequence: 1), operation: .put(PutRequest(key: b("b"), value: b("2")))))
        #expect(refused == .failure(.noSpace, revision: 2))
    }

    @Test func snapshotsWithoutAlarmsKeepTheirBytesAndAlarmsChangeTheDigest() throws {
        var store = KVStore()
        store.put("a", "1")
        let before = store.snapshot()
        let digestBefore = store.stateDigest()
        Self.alarm(&store, .activate)
        #expect(store.snapshot().count > before.count)
        #expect(store.stateDigest() != digestBefore)
        Self.alarm(&store, .deactivate)
        // Without an active alarm the snapshot is byte for byte what a build without alarms writes.
        #expect(store.snapshot() == before)
        #expect(store.stateDigest() == digestBefore)
        #expect(try KVStore(snapshot: before).activeAlarms.isEmpty)
    }

    @Test func corruptAlarmSectionsAreRefused() throws {
        var store = KVStore()
        store.put("a", "1")
        Self.alarm(&store, .activate)
        var bytes = store.snapshot()
        // The alarm type byte sits just before the checksum: NONE is not an active alarm.
        bytes[bytes.count - 5] = 0
        let content = bytes.count - 4
        let checksum = CRC32C.checksum(bytes[0..<content])
        for shift in 0..<4 { bytes[content + shift] = UInt8(truncatingIfNeeded: checksum >> (8 * UInt32(shift))) }
        #expect(throws: KVSnapshotError.self) { try KVStore(snapshot: bytes) }
    }
}
