import ByteCodec

/// Snapshots: the whole logical state as deterministic bytes (same state ⇒ same bytes).
///
/// ```
/// snapshot := magic "SKVS"  format  body  crc32c(magic..body) as UInt32 little-endian
/// body(2)  := revision  compactedRevision  sessionClock
///             baseCount (keyValue proposedAt)*   -- the live keys at compactedRevision
///             hasCompactedRecord(bool) [proposedAt eventCount fullEvent*]
///             recordCount record*                -- revisions max(compactedRevision, 1) + 1 ... revision
///             sessionCount session*
///             [authSection]                      -- optional (Auth+Codec.swift), format 2 only
///             [alarms section, only while an alarm is active: Alarms+Codec.swift]
///             [leaseSection]                     -- KVStore+Leases.swift; absent without leases
///             (optional sections are tagged: a reader takes them in any order)
/// record   := proposedAt  eventCount event*
/// event    := type(0 put | 1 delete) key [value, for a put]
/// fullEvent := type keyValue hasPrevKV(bool) [keyValue]
/// body(1)  := revision  sessionClock  keyCount keyValue*  sessionCount session*
/// session  := clientID  sequence  lastUsed  result
/// ```
/// Format 2 stores the history as the store at the compacted revision plus the change log
/// after it; restore replays the log through the same code that applied it, so the restored
/// store (chains, events with their `prevKV`s, digests) is the one that was saved. The
/// compacted revision's own record (kept for watches starting there) cannot be replayed,
/// the state before it being gone, so it is stored whole. Format 1
/// (no history) still restores, as a store compacted at its own revision.
///
/// Keys are in byte order and sessions in clientID order. Restore checks the checksum first
/// (corruption → `checksumMismatch`), then parses with bounds checks (no allocation from a
/// corrupt count), then checks the store's invariants (`invalidState`).
extension KVStore {
    static let snapshotMagic: [UInt8] = Array("SKVS".utf8)
    /// The format `snapshot()` writes.
    public static let snapshotFormatVersion: UInt8 = 2
    /// The format of builds without history, still restored.
    static let snapshotFormatVersionWithoutHistory: UInt8 = 1

    private enum SnapshotMinimumBytes {
        /// keyValue (5 one-byte fields) and the proposal time.
        static let baseEntry = 6
        /// proposal time and event count (an empty record parses; restore then refuses it).
        static let record = 2
        static let event = 2
        /// type, keyValue (5 one-byte fields), hasPrevKV.
        static let fullEvent = 7
        static let session = 4
    }

    public func snapshot() -> [UInt8] {
        var writer = ByteWriter(reservingCapacity: 64 + approximateBytes)
        writer.writeBytes(Self.snapshotMagic)
        writer.writeUInt8(Self.snapshotFormatVersion)
        writer.writeSigned(revision)
        writer.writeSigned(compactedRevision)
        writer.writeVarint(sessionClock)
        var base: [(KeyValue, Int64)] = []
        for chain in history.entries {
            guard let position = chain.newestPosition(atOrBefore: compactedRevision) else { continue }
            let version = chain.versions[position]
            // Invariant (compaction): only the first version sits at or below the compacted
            // revision, and it is a put.
            precondition(position == 0 && !version.isTombstone, "history holds a compacted version")
            guard let keyValue = chain.keyValue(at: compactedRevision) else {
                preconditionFailure("base version vanished")
            }
            base.append((keyValue, version.proposedAtMilliseconds))
        }
        writer.writeVarint(UInt64(base.count))
        for (keyValue, proposedAt) in base {
            writer.writeKeyValue(keyValue)
            writer.writeSigned(proposedAt)
        }
        var replayed = changeLog.records[...]
        if compactedRevision >= 2, let first = changeLog.records.first, first.revision == compactedRevision {
            writer.writeBool(true)
            writer.writeSigned(first.proposedAtMilliseconds)
            writer.writeVarint(UInt64(first.events.count))
            for event in first.events {
                writer.writeUInt8(event.type.rawValue)
                writer.writeKeyValue(event.kv)
                writer.writeBool(event.prevKV != nil)
                if let prevKV = event.prevKV { writer.writeKeyValue(prevKV) }
            }
            replayed = replayed.dropFirst()
        } else {
            writer.writeBool(false)
        }
        writer.writeVarint(UInt64(replayed.count))
        for record in replayed {
            writer.writeSigned(record.proposedAtMilliseconds)
            writer.writeVarint(UInt64(record.events.count))
            for event in record.events {
                writer.writeUInt8(event.type.rawValue)
                writer.writeLengthPrefixed(event.kv.key)
                if event.type == .put { writer.writeLengthPrefixed(event.kv.value) }
            }
        }
        writeSessions(&writer)
        writer.writeAuthSection(auth)
        writer.writeAlarmsSection(alarms)
        writeLeaseSection(&writer)
        let checksum = CRC32C.checksum(writer.bytes)
        writer.writeUInt32(checksum)
        return writer.bytes
    }

    private func writeSessions(_ writer: inout ByteWriter) {
        writer.writeVarint(UInt64(sessions.count))
        for clientID in sessions.keys.sorted() {
            guard let session = sessions[clientID] else { preconditionFailure("session vanished") }
            writer.writeVarint(clientID)
            writer.writeVarint(session.sequence)
            writer.writeVarint(session.lastUsed)
            writer.writeResult(session.result)
        }
    }

    public init(snapshot bytes: [UInt8]) throws(KVSnapshotError) {
        let headerBytes = Self.snapshotMagic.count + 1
        guard bytes.count >= headerBytes + 4 else { throw .tooShort(sizeBytes: bytes.count) }
        let magic = Array(bytes[0..<Self.snapshotMagic.count])
        guard magic == Self.snapshotMagic else { throw .badMagic(magic) }
        let format = bytes[Self.snapshotMagic.count]
        guard format == Self.snapshotFormatVersion || format == Self.snapshotFormatVersionWithoutHistory else {
            throw .unsupportedFormat(format)
        }
        let contentBytes = bytes.count - 4
        var trailer = ByteReader(bytes, range: contentBytes..<bytes.count)
        let stored: UInt32
        do { stored = try trailer.readUInt32() } catch { throw .malformed(error) }
        let computed = CRC32C.checksum(bytes[0..<contentBytes])
        guard stored == computed else { throw .checksumMismatch(stored: stored, computed: computed) }

        var reader = ByteReader(bytes, range: headerBytes..<contentBytes)
        self.init()
        let restoredSessions: [(clientID: UInt64, session: ClientSession)]
        var restoredLeases: RestoredLeases?
        if format == Self.snapshotFormatVersion {
            let savedRevision: Int64
            let records: [(proposedAt: Int64, events: [(type: WatchEventType, key: [UInt8], value: [UInt8])])]
            let compactedRecord: RevisionRecord?
            do {
                savedRevision = try reader.readSigned()
                compactedRevision = try reader.readSigned()
                sessionClock = try reader.readVarint()
                try readBase(&reader)
                compactedRecord = try Self.readCompactedRecord(&reader, revision: compactedRevision)
                records = try Self.readRecords(&reader)
                restoredSessions = try Self.readSessions(&reader)
                let sections = try reader.readOptionalSnapshotSections()
                (auth, alarms, restoredLeases) = (sections.auth, sections.alarms, sections.leases)
                try reader.expectEnd()
            } catch {
                throw .malformed(error)
            }
            if let problem = auth.restoredStateProblem() { throw .invalidState(problem) }
            if let problem = Self.checkRestoredAlarms(alarms) { throw .invalidState(problem) }
            if let compactedRecord {
                if let problem = Self.checkCompactedRecord(compactedRecord) { throw .invalidState(problem) }
                changeLog.restoreFirstRecord(compactedRecord)
            }
            try replay(records, upTo: savedRevision)
        } else {
            do {
                revision = try reader.readSigned()
                sessionClock = try reader.readVarint()
                let keyCount = try reader.readCount(max: Int.max, minimumElementBytes: 5, "snapshot.keys")
                var entries: [KeyValue] = []
                entries.reserveCapacity(keyCount)
                for _ in 0..<keyCount { entries.append(try reader.readKeyValue()) }
                index = KeyIndex(sortedEntries: entries)
                restoredSessions = try Self.readSessions(&reader)
                try reader.expectEnd()
            } catch {
                throw .malformed(error)
            }
            // No history: the store as if compacted at its own revision.
            compactedRevision = revision
            // A version below 1 fails `validateRestoredState` below; keep the chain well formed until then.
            history = VersionIndex(
                sortedChains: index.entries.map { entry in
                    var fixed = entry
                    fixed.version = Swift.max(1, entry.version)
                    return KeyHistory(key: entry.key, versions: [KeyVersion(fixed, proposedAtMilliseconds: 0)])
                }
            )
        }
        for (position, restored) in restoredSessions.enumerated() {
            if position > 0 && restoredSessions[position - 1].clientID >= restored.clientID {
                throw .invalidState("sessions out of clientID order at client \(restored.clientID)")
            }
            sessions[restored.clientID] = restored.session
        }
        if let restoredLeases { try restoreLeases(restoredLeases) }
        if let problem = validateRestoredState() { throw .invalidState(problem) }
        rebuildSessionRecency()
        recomputeDigests()
        recomputeApproximateBytes()
    }

    /// Reads the live keys at the compacted revision into the index and the history.
    private mutating func readBase(_ reader: inout ByteReader) throws(KVCodecError) {
        let count = try reader.readCount(max: Int.max, minimumElementBytes: SnapshotMinimumBytes.baseEntry, "snapshot.base")
        var entries: [KeyValue] = []
        var chains: [KeyHistory] = []
        entries.reserveCapacity(count)
        chains.reserveCapacity(count)
        for _ in 0..<count {
            let keyValue = try reader.readKeyValue()
            let proposedAt = try reader.readSigned()
            entries.append(keyValue)
            // A version below 1 fails `validateRestoredState`; keep the chain well formed until then.
            var fixed = keyValue
            fixed.version = Swift.max(1, keyValue.version)
            chains.append(
                KeyHistory(key: keyValue.key, versions: [KeyVersion(fixed, proposedAtMilliseconds: proposedAt)]))
        }
        index = KeyIndex(sortedEntries: entries)
        history = VersionIndex(sortedChains: chains)
    }

    private static func readRecords(
        _ reader: inout ByteReader
    ) throws(KVCodecError) -> [(proposedAt: Int64, events: [(type: WatchEventType, key: [UInt8], value: [UInt8])])] {
        let count = try reader.readCount(max: Int.max, minimumElementBytes: SnapshotMinimumBytes.record, "snapshot.records")
        var records: [(proposedAt: Int64, events: [(type: WatchEventType, key: [UInt8], value: [UInt8])])] = []
        records.reserveCapacity(count)
        for _ in 0..<count {
            let proposedAt = try reader.readSigned()
            let eventCount = try reader.readCount(max: Int.max, minimumElementBytes: SnapshotMinimumBytes.event, "snapshot.events")
            var events: [(type: WatchEventType, key: [UInt8], value: [UInt8])] = []
            events.reserveCapacity(eventCount)
            for _ in 0..<eventCount {
                let typeOffset = reader.offset
                let typeTag = try reader.readUInt8()
                guard let type = WatchEventType(rawValue: typeTag) else {
                    throw KVCodecError(.unknownTag(field: "snapshot.event", tag: typeTag), offset: typeOffset)
                }
                let key = try reader.readLengthPrefixed(max: Int.max, "snapshot.event.key")
                let value = type == .put ? try reader.readLengthPrefixed(max: Int.max, "snapshot.event.value") : []
                events.append((type, key, value))
            }
            records.append((proposedAt, events))
        }
        return records
    }

    private static func readCompactedRecord(
        _ reader: inout ByteReader,
        revision: Int64
    ) throws(KVCodecError) -> RevisionRecord? {
        guard try reader.readBool("snapshot.hasCompactedRecord") else { return nil }
        let proposedAt = try reader.readSigned()
        let count = try reader.readCount(max: Int.max, minimumElementBytes: SnapshotMinimumBytes.fullEvent, "snapshot.compactedEvents")
        var events: [WatchEvent] = []
        events.reserveCapacity(count)
        for _ in 0..<count {
            let typeOffset = reader.offset
            let typeTag = try reader.readUInt8()
            guard let type = WatchEventType(rawValue: typeTag) else {
                throw KVCodecError(.unknownTag(field: "snapshot.compactedEvent", tag: typeTag), offset: typeOffset)
            }
            let kv = try reader.readKeyValue()
            let prevKV =
                try reader.readBool("snapshot.compactedEvent.hasPrevKV") ? try reader.readKeyValue() : nil
            events.append(WatchEvent(type: type, kv: kv, prevKV: prevKV))
        }
        return RevisionRecord(revision: revision, proposedAtMilliseconds: proposedAt, events: events)
    }

    /// What a stored compacted-revision record must look like; nil when it does.
    private static func checkCompactedRecord(_ record: RevisionRecord) -> String? {
        if record.revision < 2 { return "a change record for revision \(record.revision)" }
        if record.events.isEmpty { return "revision \(record.revision) has no changes" }
        for event in record.events {
            let kv = event.kv
            if kv.key.isEmpty || kv.modRevision != record.revision {
                return "event of \(KVBytes.describe(kv.key)) at \(kv.modRevision) in record \(record.revision)"
            }
            let wellFormed: Bool
            switch event.type {
            case .put: wellFormed = kv.version >= 1 && kv.createRevision >= 2 && kv.createRevision <= kv.modRevision
            case .delete:
                wellFormed = kv.version == 0 && kv.createRevision == 0 && kv.value.isEmpty && event.prevKV != nil
            }
            if !wellFormed { return "malformed \(event.type) event of \(KVBytes.describe(kv.key))" }
            if let prevKV = event.prevKV, prevKV.key != kv.key || prevKV.modRevision >= record.revision {
                return "previous pair of \(KVBytes.describe(kv.key)) does not precede it"
            }
        }
        return nil
    }

    private static func readSessions(
        _ reader: inout ByteReader
    ) throws(KVCodecError) -> [(clientID: UInt64, session: ClientSession)] {
        let sessionCount = try reader.readCount(max: KVLimits.sessionsMax, minimumElementBytes: SnapshotMinimumBytes.session, "snapshot.sessions")
        var restored: [(clientID: UInt64, session: ClientSession)] = []
        restored.reserveCapacity(sessionCount)
        for _ in 0..<sessionCount {
            let clientID = try reader.readVarint()
            let sequence = try reader.readVarint()
            let lastUsed = try reader.readVarint()
            let result = try reader.readResult()
            let session = ClientSession(
                sequence: sequence,
                result: result,
                lastUsed: lastUsed,
                resultDigest: Self.resultDigest(result)
            )
            restored.append((clientID, session))
        }
        return restored
    }

    /// Re-applies the change log on top of the base with the write rules of `writePut` and
    /// `writeDeleteRange` (new create revision on create, version + 1 per put, etcd's
    /// tombstone), checking each record against the state it lands on (a snapshot that lies
    /// fails as `invalidState`, never as a crash). The live keys are tracked in a hash map and
    /// sorted once at the end, so a long log restores in O(events + keys log keys); the
    /// digests and the byte estimate are recomputed by the caller.
    private mutating func replay(
        _ records: [(proposedAt: Int64, events: [(type: WatchEventType, key: [UInt8], value: [UInt8])])],
        upTo savedRevision: Int64
    ) throws(KVSnapshotError) {
        if compactedRevision < 0 { throw .invalidState("compacted revision \(compactedRevision) below 0") }
        if savedRevision < Swift.max(compactedRevision, 1) {
            throw .invalidState("revision \(savedRevision) below compacted revision \(compactedRevision)")
        }
        for entry in index.entries where entry.modRevision > compactedRevision || entry.version < 1 {
            throw .invalidState("base key \(KVBytes.describe(entry.key)) at m=\(entry.modRevision) v=\(entry.version)")
        }
        revision = Swift.max(compactedRevision, 1)
        if Int64(records.count) != savedRevision - revision {
            throw .invalidState("\(records.count) change records for revisions \(revision + 1)...\(savedRevision)")
        }
        if let problem = validateRestoredState() { throw .invalidState(problem) }
        var live: [[UInt8]: KeyValue] = [:]
        live.reserveCapacity(index.count)
        for entry in index.entries { live[entry.key] = entry }
        for record in records {
            if record.events.isEmpty { throw .invalidState("revision \(revision + 1) has no changes") }
            let changeRevision = revision + 1
            for event in record.events {
                if event.key.isEmpty { throw .invalidState("change of an empty key at revision \(changeRevision)") }
                let previous = live[event.key]
                let change: WatchEvent
                switch event.type {
                case .put:
                    let stored = KeyValue(
                        key: event.key,
                        value: event.value,
                        createRevision: previous?.createRevision ?? changeRevision,
                        modRevision: changeRevision,
                        version: (previous?.version ?? 0) + 1
                    )
                    live[event.key] = stored
                    change = WatchEvent(type: .put, kv: stored, prevKV: previous)
                case .delete:
                    guard let previous else {
                        throw .invalidState("delete of missing key \(KVBytes.describe(event.key)) at \(changeRevision)")
                    }
                    live[event.key] = nil
                    let tombstone = KeyValue(
                        key: event.key, value: [], createRevision: 0, modRevision: changeRevision, version: 0)
                    change = WatchEvent(type: .delete, kv: tombstone, prevKV: previous)
                }
                _ = appendToHistory(change, proposedAtMilliseconds: record.proposedAt, orderingKeys: false)
            }
            revision = changeRevision
        }
        history.rebuildOrderedKeys()
        index = KeyIndex(sortedEntries: live.values.sorted { KVBytes.compare($0.key, $1.key) < 0 })
        lastAppliedWriteRevision = 0
    }

    /// The invariants a restored state must hold; nil when all hold.
    private func validateRestoredState() -> String? {
        if revision < 1 { return "revision \(revision) below 1" }
        if let problem = index.checkInvariants() { return problem }
        if let problem = history.checkInvariants() { return "history: \(problem)" }
        for entry in index.entries {
            if entry.key.isEmpty { return "empty key" }
            if entry.createRevision < 2 || entry.createRevision > entry.modRevision || entry.modRevision > revision {
                return "key \(KVBytes.describe(entry.key)) has revisions c=\(entry.createRevision) "
                    + "m=\(entry.modRevision) beyond store revision \(revision)"
            }
            // Every put takes its own revision, so a version can never outrun them.
            if entry.version < 1 || entry.version > entry.modRevision - entry.createRevision + 1 {
                return "key \(KVBytes.describe(entry.key)) has impossible version \(entry.version)"
            }
        }
        var uses: Set<UInt64> = []
        for (clientID, session) in sessions {
            if !RequestID(clientID: clientID, sequence: 0).hasSession {
                return "session for untracked client \(clientID)"
            }
            if session.lastUsed == 0 || session.lastUsed > sessionClock {
                return "session \(clientID) last used at \(session.lastUsed), clock \(sessionClock)"
            }
            if !uses.insert(session.lastUsed).inserted { return "two sessions last used at \(session.lastUsed)" }
        }
        return nil
    }
}
