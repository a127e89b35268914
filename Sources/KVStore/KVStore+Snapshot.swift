/// Snapshots: the whole logical state as deterministic bytes (same state ⇒ same bytes).
///
/// ```
/// snapshot := magic "SKVS"  format=0x01  body  crc32c(magic..body) as UInt32 little-endian
/// body     := revision  sessionClock  keyCount keyValue*  sessionCount session*
/// session  := clientID  sequence  lastUsed  result
/// ```
/// Keys are in byte order and sessions in clientID order. Restore checks the checksum first
/// (corruption → `checksumMismatch`), then parses with bounds checks, then checks the store's
/// invariants (`invalidState`).
extension KVStore {
    static let snapshotMagic: [UInt8] = Array("SKVS".utf8)
    public static let snapshotFormatVersion: UInt8 = 1

    public func snapshot() -> [UInt8] {
        var writer = ByteWriter(capacity: 64 + index.count * 32)
        writer.writeRaw(Self.snapshotMagic)
        writer.writeByte(Self.snapshotFormatVersion)
        writer.writeSigned(revision)
        writer.writeVarint(sessionClock)
        writer.writeVarint(UInt64(index.count))
        for entry in index.entries { writer.writeKeyValue(entry) }
        writer.writeVarint(UInt64(sessions.count))
        for clientID in sessions.keys.sorted() {
            guard let session = sessions[clientID] else { preconditionFailure("session vanished") }
            writer.writeVarint(clientID)
            writer.writeVarint(session.sequence)
            writer.writeVarint(session.lastUsed)
            writer.writeResult(session.result)
        }
        let checksum = CRC32C.checksum(writer.bytes)
        writer.writeUInt32LittleEndian(checksum)
        return writer.bytes
    }

    public init(snapshot bytes: [UInt8]) throws(KVSnapshotError) {
        let headerBytes = Self.snapshotMagic.count + 1
        guard bytes.count >= headerBytes + 4 else { throw .tooShort(sizeBytes: bytes.count) }
        let magic = Array(bytes[0..<Self.snapshotMagic.count])
        guard magic == Self.snapshotMagic else { throw .badMagic(magic) }
        let format = bytes[Self.snapshotMagic.count]
        guard format == Self.snapshotFormatVersion else { throw .unsupportedFormat(format) }
        let contentBytes = bytes.count - 4
        var trailer = ByteReader(bytes, offset: contentBytes)
        let stored: UInt32
        do { stored = try trailer.readUInt32LittleEndian() } catch { throw .malformed(error) }
        let computed = CRC32C.checksum(bytes, count: contentBytes)
        guard stored == computed else { throw .checksumMismatch(stored: stored, computed: computed) }

        var reader = ByteReader(bytes, offset: headerBytes, end: contentBytes)
        self.init()
        let restoredSessions: [(clientID: UInt64, session: ClientSession)]
        do {
            restoredSessions = try readSnapshotBody(&reader)
            try reader.expectEnd()
        } catch {
            throw .malformed(error)
        }
        for (position, restored) in restoredSessions.enumerated() {
            if position > 0 && restoredSessions[position - 1].clientID >= restored.clientID {
                throw .invalidState("sessions out of clientID order at client \(restored.clientID)")
            }
            sessions[restored.clientID] = restored.session
        }
        if let problem = validateRestoredState() { throw .invalidState(problem) }
        rebuildSessionRecency()
        recomputeDigests()
    }

    private mutating func readSnapshotBody(
        _ reader: inout ByteReader
    ) throws(KVCodecError) -> [(clientID: UInt64, session: ClientSession)] {
        revision = try reader.readSigned()
        sessionClock = try reader.readVarint()
        let keyCount = try reader.readCount(field: "snapshot.keys", limit: Int.max, minimumElementBytes: 5)
        var entries: [KeyValue] = []
        entries.reserveCapacity(keyCount)
        for _ in 0..<keyCount { entries.append(try reader.readKeyValue()) }
        index = KeyIndex(sortedEntries: entries)
        let sessionCount = try reader.readCount(
            field: "snapshot.sessions",
            limit: KVLimits.sessionsMax,
            minimumElementBytes: 4
        )
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

    /// The invariants a restored state must hold; nil when all hold.
    private func validateRestoredState() -> String? {
        if revision < 1 { return "revision \(revision) below 1" }
        if let problem = index.checkInvariants() { return problem }
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
            if !RequestID(clientID: clientID, sequence: 0).hasSession { return "session for untracked client \(clientID)" }
            if session.lastUsed == 0 || session.lastUsed > sessionClock {
                return "session \(clientID) last used at \(session.lastUsed), clock \(sessionClock)"
            }
            if !uses.insert(session.lastUsed).inserted { return "two sessions last used at \(session.lastUsed)" }
        }
        return nil
    }
}
