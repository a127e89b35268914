import ByteCodec

/// The binary forms of the alarm command, its result and the alarms' snapshot section.
///
/// ```
/// alarm (operation tag 9) := action memberID(varint) alarmType
/// alarm result (tag 6)    := revision count (memberID alarmType)*
/// alarms section          := sectionTag=0x41 version=1 count (memberID alarmType)*
/// ```
/// The section follows the sessions in a snapshot and is written only while an alarm is
/// active, so a store without alarms saves the bytes builds without alarms wrote, and their
/// snapshots (which end after the sessions) load here as "no alarm".
enum AlarmCodec {
    static let operationTag: UInt8 = 9
    static let resultTag: UInt8 = 7  // 6 is AuthResponse.resultTag
    static let snapshotSectionTag: UInt8 = 0x42  // auth's is 0x41
    static let snapshotSectionVersion: UInt8 = 1
    /// memberID (1 byte at least) and alarm type.
    static let memberBytesMin = 2
}

extension ByteWriter {
    mutating func writeAlarmRequest(_ request: AlarmRequest) {
        writeUInt8(request.action.rawValue)
        writeVarint(request.memberID)
        writeUInt8(request.alarm.rawValue)
    }

    mutating func writeAlarmMembers(_ members: [AlarmMember]) {
        writeVarint(UInt64(members.count))
        for member in members {
            writeVarint(member.memberID)
            writeUInt8(member.alarm.rawValue)
        }
    }

    mutating func writeAlarmResponse(_ response: AlarmResponse) {
        writeSigned(response.revision)
        writeAlarmMembers(response.alarms)
    }

    /// The snapshot section, only when an alarm is active.
    mutating func writeAlarmsSection(_ alarms: [AlarmMember]) {
        guard !alarms.isEmpty else { return }
        writeUInt8(AlarmCodec.snapshotSectionTag)
        writeUInt8(AlarmCodec.snapshotSectionVersion)
        writeAlarmMembers(alarms)
    }
}

extension ByteReader {
    mutating func readAlarmRequest() throws(KVCodecError) -> AlarmRequest {
        let actionOffset = offset
        let actionTag = try readUInt8()
        guard let action = AlarmAction(rawValue: actionTag) else {
            throw KVCodecError(.unknownTag(field: "alarm.action", tag: actionTag), offset: actionOffset)
        }
        let memberID = try readVarint()
        return AlarmRequest(action: action, memberID: memberID, alarm: try readAlarmType())
    }

    mutating func readAlarmType() throws(KVCodecError) -> AlarmType {
        let typeOffset = offset
        let typeTag = try readUInt8()
        guard let alarm = AlarmType(rawValue: typeTag) else {
            throw KVCodecError(.unknownTag(field: "alarm.type", tag: typeTag), offset: typeOffset)
        }
        return alarm
    }

    mutating func readAlarmMembers(field: String) throws(KVCodecError) -> [AlarmMember] {
        let count = try readCount(max: Int.max, minimumElementBytes: AlarmCodec.memberBytesMin, field)
        var members: [AlarmMember] = []
        members.reserveCapacity(count)
        for _ in 0..<count {
            let memberID = try readVarint()
            members.append(AlarmMember(memberID: memberID, alarm: try readAlarmType()))
        }
        return members
    }

    mutating func readAlarmResponse() throws(KVCodecError) -> AlarmResponse {
        let revision = try readSigned()
        return AlarmResponse(revision: revision, alarms: try readAlarmMembers(field: "alarm.alarms"))
    }

    /// The optional alarms section at the end of a snapshot: none when the input ends.
    /// The alarms section after its tag (`AlarmCodec.snapshotSectionTag`).
    mutating func readAlarmsSectionBody() throws(KVCodecError) -> [AlarmMember] {
        let versionOffset = offset
        let version = try readUInt8()
        guard version == AlarmCodec.snapshotSectionVersion else {
            throw KVCodecError(.unknownTag(field: "snapshot.alarms.version", tag: version), offset: versionOffset)
        }
        return try readAlarmMembers(field: "snapshot.alarms")
    }
}

extension KVStore {
    /// What a restored alarm list must look like; nil when it does.
    static func checkRestoredAlarms(_ alarms: [AlarmMember]) -> String? {
        for (position, member) in alarms.enumerated() {
            if member.alarm == .none { return "an active NONE alarm of member \(member.memberID)" }
            if position > 0 && !(alarms[position - 1] < member) { return "alarms out of order at member \(member.memberID)" }
        }
        return nil
    }
}
