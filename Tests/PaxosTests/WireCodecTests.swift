import ByteCodec
import Testing

@testable import Paxos

/// SplitMix64 (the core's), so every random case is a function of its printed seed.
private typealias SeededRandom = SplitMix64

/// Random values of every codec type; integers of every magnitude so varints of every
/// length appear.
private struct Generator {
    var random: SeededRandom

    init(seed: UInt64) { random = SeededRandom(seed: seed) }

    mutating func int(_ range: ClosedRange<Int>) -> Int { Int.random(in: range, using: &random) }

    mutating func uint64() -> UInt64 {
        let bits = int(0...64)
        return bits == 64 ? random.next() : random.next() & ((UInt64(1) << UInt64(bits)) - 1)
    }

    mutating func uint32() -> UInt32 { UInt32(truncatingIfNeeded: uint64()) }

    mutating func ballot() -> Ballot { Ballot(round: uint64(), replica: uint32()) }

    mutating func command() -> Command {
        let count = int(0...3) == 0 ? int(128...700) : int(0...20)
        return Command((0..<count).map { _ in UInt8.random(in: 0...255, using: &random) })
    }

    mutating func commands(max: Int = 6) -> [Command] { (0..<int(0...max)).map { _ in command() } }

    mutating func value() -> Value { int(0...4) == 0 ? .noop : .batch(commands()) }

    mutating func slotEntry() -> SlotEntry {
        SlotEntry(slot: uint64(), entry: LogEntry(ballot: ballot(), value: value()))
    }

    mutating func entries() -> [SlotEntry] { (0..<int(0...5)).map { _ in slotEntry() } }

    static let messageKinds = 13

    mutating func message(kind: Int) -> Message {
        switch kind {
        case 0: return .prepare(ballot: ballot(), fromSlot: uint64())
        case 1: return .promise(ballot: ballot(), entries: entries(), chosenThrough: uint64(), more: uint64() % 2 == 0)
        case 2: return .accept(ballot: ballot(), slot: uint64(), value: value(), chosenThrough: uint64())
        case 3: return .accepted(ballot: ballot(), slot: uint64())
        case 4: return .reject(promised: ballot())
        case 5: return .heartbeat(ballot: ballot(), chosenThrough: uint64(), readRound: uint64())
        case 6: return .heartbeatAck(ballot: ballot(), readRound: uint64(), chosenThrough: uint64())
        case 7: return .learn(ballot: ballot(), entries: entries(), chosenThrough: uint64())
        case 8: return .learnRequest(fromSlot: uint64())
        case 9: return .forward(commands: commands())
        case 10: return .readIndexRequest(requestID: uint64())
        case 11: return .readIndexResponse(requestID: uint64(), ballot: ballot(), readIndex: uint64())
        case 12: return .transferLeadership(ballot: ballot(), target: uint32())
        default: preconditionFailure("no message kind \(kind)")
        }
    }

    mutating func envelope(kind: Int) -> Envelope {
        Envelope(from: uint32(), to: uint32(), message: message(kind: kind))
    }

    static let recordKinds = 3

    mutating func record(kind: Int) -> Record {
        switch kind {
        case 0: return .promised(ballot())
        case 1: return .accepted(slot: uint64(), entry: LogEntry(ballot: ballot(), value: value()))
        case 2: return .chosenThrough(uint64())
        default: preconditionFailure("no record kind \(kind)")
        }
    }
}

private let seeds: [UInt64] = Array(1...40)

@Suite("WireCodec")
struct WireCodecTests {
    @Test("every message kind round-trips, as a message and in an envelope", arguments: seeds)
    func messageRoundTrip(seed: UInt64) throws {
        var generator = Generator(seed: seed)
        for kind in 0..<Generator.messageKinds {
            for _ in 0..<5 {
                let envelope = generator.envelope(kind: kind)
                let message = envelope.message
                #expect(try Message(decoding: message.encoded()) == message, "seed \(seed) kind \(kind)")
                #expect(try Envelope(decoding: envelope.encoded()) == envelope, "seed \(seed) kind \(kind)")
            }
        }
    }

    @Test("every record kind round-trips", arguments: seeds)
    func recordRoundTrip(seed: UInt64) throws {
        var generator = Generator(seed: seed)
        for kind in 0..<Generator.recordKinds {
            for _ in 0..<10 {
                let record = generator.record(kind: kind)
                #expect(try Record(decoding: record.encoded()) == record, "seed \(seed) kind \(kind)")
            }
        }
    }

    @Test("the lesser types round-trip", arguments: seeds.prefix(10))
    func typesRoundTrip(seed: UInt64) throws {
        var generator = Generator(seed: seed)
        for _ in 0..<20 {
            let entry = generator.slotEntry()
            var writer = ByteWriter()
            entry.encode(into: &writer)
            entry.entry.encode(into: &writer)
            entry.entry.ballot.encode(into: &writer)
            entry.entry.value.encode(into: &writer)
            let command = generator.command()
            command.encode(into: &writer)
            var reader = ByteReader(writer.bytes)
            #expect(try SlotEntry.decode(from: &reader) == entry, "seed \(seed)")
            #expect(try LogEntry.decode(from: &reader) == entry.entry, "seed \(seed)")
            #expect(try Ballot.decode(from: &reader) == entry.entry.ballot, "seed \(seed)")
            #expect(try Value.decode(from: &reader) == entry.entry.value, "seed \(seed)")
            #expect(try Command.decode(from: &reader) == command, "seed \(seed)")
            #expect(reader.isAtEnd, "seed \(seed)")
        }
    }

    /// Every cut of the first 512 bytes (where all headers and counts sit), then every
    /// 97th byte: large random batches would make every-byte cuts quadratic.
    static func cutPoints(_ count: Int) -> [Int] {
        Array(0..<min(count, 512)) + Array(stride(from: 512, to: count, by: 97))
    }

    @Test("truncation throws, never traps", arguments: seeds.prefix(12))
    func truncationThrows(seed: UInt64) {
        var generator = Generator(seed: seed)
        for kind in 0..<Generator.messageKinds {
            let bytes = generator.envelope(kind: kind).encoded()
            for length in Self.cutPoints(bytes.count) {
                #expect(throws: DecodeError.self, "seed \(seed) kind \(kind) cut at \(length)") {
                    try Envelope(decoding: Array(bytes[0..<length]))
                }
            }
        }
        for kind in 0..<Generator.recordKinds {
            let bytes = generator.record(kind: kind).encoded()
            for length in Self.cutPoints(bytes.count) {
                #expect(throws: DecodeError.self, "seed \(seed) record kind \(kind) cut at \(length)") {
                    try Record(decoding: Array(bytes[0..<length]))
                }
            }
        }
    }

    @Test("trailing bytes are refused", arguments: seeds.prefix(5))
    func trailingBytes(seed: UInt64) {
        var generator = Generator(seed: seed)
        for kind in 0..<Generator.messageKinds {
            let bytes = generator.envelope(kind: kind).encoded() + [0]
            #expect(throws: DecodeError.self, "seed \(seed) kind \(kind)") { try Envelope(decoding: bytes) }
        }
        let record = generator.record(kind: 1).encoded() + [7]
        #expect(throws: DecodeError.self, "seed \(seed)") { try Record(decoding: record) }
    }

    /// Random bytes and mutated encodings never trap; whatever decodes is canonical: it
    /// re-encodes to exactly the input (one value, one encoding).
    @Test("garbage and mutations throw or decode canonically", arguments: seeds)
    func garbage(seed: UInt64) {
        var generator = Generator(seed: seed)
        for round in 0..<200 {
            var bytes: [UInt8]
            if round % 2 == 0 {
                bytes = (0..<generator.int(0...64)).map { _ in UInt8.random(in: 0...255, using: &generator.random) }
                if !bytes.isEmpty && round % 4 == 0 { bytes[0] = WireTag.envelopeVersion }
            } else {
                bytes = generator.envelope(kind: round % Generator.messageKinds).encoded()
                for _ in 0..<generator.int(1...3) {
                    let index = generator.int(0...bytes.count - 1)
                    bytes[index] = UInt8.random(in: 0...255, using: &generator.random)
                }
            }
            if let envelope = try? Envelope(decoding: bytes) {
                #expect(envelope.encoded() == bytes, "seed \(seed) round \(round)")
            }
            if let message = try? Message(decoding: bytes) {
                #expect(message.encoded() == bytes, "seed \(seed) round \(round)")
            }
            if let record = try? Record(decoding: bytes) {
                #expect(record.encoded() == bytes, "seed \(seed) round \(round)")
            }
        }
    }

    @Test("a hostile length or count is refused before allocating")
    func hostileLengths() throws {
        // A command claiming 2^40 bytes.
        var writer = ByteWriter()
        writer.writeVarint(UInt64(1) << 40)
        var reader = ByteReader(writer.bytes)
        let error = try #require(throws: DecodeError.self) { try Command.decode(from: &reader) }
        #expect(error.offset == 0)
        #expect(error.description.contains("exceeds"))

        // A command length within the bound but beyond the bytes present.
        writer = ByteWriter()
        writer.writeVarint(UInt64(1000))
        writer.writeBytes([1, 2, 3])
        reader = ByteReader(writer.bytes)
        #expect(throws: DecodeError.self) { try Command.decode(from: &reader) }

        // A batch of more commands than commandsPerValueMax.
        writer = ByteWriter()
        writer.writeUInt8(WireTag.valueBatch)
        writer.writeCount(WireLimits.commandsPerValueMax + 1)
        writer.writeBytes([UInt8](repeating: 0, count: WireLimits.commandsPerValueMax + 1))
        reader = ByteReader(writer.bytes)
        let countError = try #require(throws: DecodeError.self) { try Value.decode(from: &reader) }
        #expect(countError.offset == 1)

        // A promise claiming more entries than entriesPerMessageMax.
        writer = ByteWriter()
        writer.writeUInt8(WireTag.messagePromise)
        Ballot(round: 1, replica: 1).encode(into: &writer)
        writer.writeCount(WireLimits.entriesPerMessageMax + 1)
        #expect(throws: DecodeError.self) { try Message(decoding: writer.bytes) }

        // Unknown tags and versions.
        #expect(throws: DecodeError.self) { try Message(decoding: [99]) }
        #expect(throws: DecodeError.self) { try Record(decoding: [0]) }
        #expect(throws: DecodeError.self) { try Envelope(decoding: [2, 1, 1, 10, 0]) }
    }

    @Test("varints: boundaries, shortest form, overflow")
    func varints() throws {
        for value: UInt64 in [0, 1, 127, 128, 255, 16383, 16384, UInt64(UInt32.max), UInt64.max - 1, UInt64.max] {
            var writer = ByteWriter()
            writer.writeVarint(value)
            var reader = ByteReader(writer.bytes)
            #expect(try reader.readVarint() == value)
            #expect(reader.isAtEnd)
        }
        var reader = ByteReader([0x80, 0x00])
        #expect(throws: DecodeError.self) { try reader.readVarint() }
        reader = ByteReader([0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0x02])
        #expect(throws: DecodeError.self) { try reader.readVarint() }
        reader = ByteReader([UInt8](repeating: 0xFF, count: 11))
        #expect(throws: DecodeError.self) { try reader.readVarint() }
        var writer = ByteWriter()
        writer.writeVarint(UInt64(UInt32.max) + 1)
        reader = ByteReader(writer.bytes)
        #expect(throws: DecodeError.self) { try reader.readVarintUInt32() }
    }

    @Test("fixed-width integers are little-endian")
    func fixedWidth() throws {
        var writer = ByteWriter()
        writer.writeUInt16(0x0102)
        writer.writeUInt32(0x0304_0506)
        writer.writeUInt64(0x0708_090A_0B0C_0D0E)
        #expect(writer.bytes == [0x02, 0x01, 0x06, 0x05, 0x04, 0x03, 0x0E, 0x0D, 0x0C, 0x0B, 0x0A, 0x09, 0x08, 0x07])
        var reader = ByteReader(writer.bytes)
        #expect(try reader.readUInt16() == 0x0102)
        #expect(try reader.readUInt32() == 0x0304_0506)
        #expect(try reader.readUInt64() == 0x0708_090A_0B0C_0D0E)
        #expect(throws: DecodeError.self) { try reader.readUInt8() }
    }

    /// The format is on disk and on the wire: these bytes must never change.
    @Test("golden encodings")
    func golden() throws {
        let envelope = Envelope(from: 1, to: 2, message: .accepted(ballot: Ballot(round: 3, replica: 1), slot: 17))
        #expect(envelope.encoded() == [1, 1, 2, 4, 3, 1, 17])
        let record = Record.accepted(
            slot: 300, entry: LogEntry(ballot: Ballot(round: 2, replica: 5), value: .batch([Command([0xAB])])))
        #expect(record.encoded() == [2, 0xAC, 0x02, 2, 5, 1, 1, 1, 0xAB])
        #expect(Record.promised(Ballot(round: 1, replica: 2)).encoded() == [1, 1, 2])
        #expect(Record.chosenThrough(5).encoded() == [3, 5])
    }
}
