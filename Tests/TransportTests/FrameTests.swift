import ByteCodec
import NIOCore
import Paxos
import Storage
import Testing

@testable import Transport

@Suite struct FrameTests {
    private func stream(_ frames: [ByteBuffer]) -> [UInt8] {
        frames.flatMap { Array($0.readableBytesView) }
    }

    private func sampleFrames(seed: UInt64, count: Int) -> (frames: [ByteBuffer], envelopes: [Envelope]) {
        var generator = EnvelopeGenerator(seed: seed)
        var frames = [FrameEncoder.hello(sender: 2, Hello(clusterID: 7, receiver: 1))]
        var envelopes: [Envelope] = []
        for index in 0..<count {
            let envelope = Envelope(from: 2, to: 1, message: generator.message(kind: index))
            envelopes.append(envelope)
            frames.append(FrameEncoder.message(envelope))
        }
        return (frames, envelopes)
    }

    /// Parses everything in `bytes`, fed in pieces cut at `cuts`.
    private func parse(_ bytes: [UInt8], cuts: [Int], frameBytesMax: Int = 1 << 20) throws -> [Frame] {
        var parser = FrameParser(frameBytesMax: frameBytesMax, expectsHello: true)
        var buffer = ByteBuffer()
        var frames: [Frame] = []
        var start = 0
        for cut in cuts + [bytes.count] {
            buffer.writeBytes(bytes[start..<cut])
            start = cut
            while let frame = try parser.next(from: &buffer) { frames.append(frame) }
            buffer.discardReadBytes()
        }
        #expect(buffer.readableBytes == 0)
        return frames
    }

    /// A message encoded once and framed for several peers gives each the very frame its own
    /// envelope would have (what `PeerTransport.send` does for an accept to every follower).
    @Test func messageEncodedOnceFramesLikeItsEnvelope() throws {
        var generator = EnvelopeGenerator(seed: 11)
        for kind in 0..<40 {
            let message = generator.message(kind: kind)
            let bytes = FrameEncoder.encoded(message)
            for to: ReplicaID in [1, 3, 300] {
                let envelope = Envelope(from: 2, to: to, message: message)
                let shared = FrameEncoder.message(from: 2, to: to, messageBytes: bytes)
                #expect(Array(shared.readableBytesView) == Array(FrameEncoder.message(envelope).readableBytesView))
                var parser = FrameParser(frameBytesMax: 1 << 20, expectsHello: false)
                var buffer = shared
                let frame = try #require(try parser.next(from: &buffer))
                #expect(frame.kind == .message && frame.sender == 2)
                #expect(try Envelope(decoding: Array(frame.payload.readableBytesView)) == envelope)
            }
        }
    }

    @Test func headerLayoutIsBigEndianLengthVersionKindSender() {
        let frame = FrameEncoder.hello(sender: 0x0102_0304, Hello(clusterID: 0xAABB_CCDD, receiver: 9))
        #expect(
            Array(frame.readableBytesView) == [
                0, 0, 0, 14,  // length: 6 header bytes + 8 payload bytes
                1,  // version
                1,  // kind hello
                1, 2, 3, 4,  // sender
                0xAA, 0xBB, 0xCC, 0xDD,  // cluster id
                0, 0, 0, 9,  // receiver
            ])
    }

    @Test func framesRoundTripWithEveryMessageKind() throws {
        let (frames, envelopes) = sampleFrames(seed: 1, count: 48)
        let parsed = try parse(stream(frames), cuts: [])
        #expect(parsed.count == frames.count)
        #expect(parsed.first?.kind == .hello)
        let decoded = try parsed.dropFirst().map { frame in
            #expect(frame.kind == .message)
            #expect(frame.sender == 2)
            return try Envelope(decoding: Array(frame.payload.readableBytesView))
        }
        #expect(decoded == envelopes)
    }

    @Test func bytesSplitAtEveryPositionReassemble() throws {
        let (frames, _) = sampleFrames(seed: 2, count: 12)
        let bytes = stream(frames)
        let whole = try parse(bytes, cuts: [])
        for cut in 0...bytes.count {
            #expect(try parse(bytes, cuts: [cut]) == whole, "split at \(cut)")
        }
        // And one byte at a time.
        #expect(try parse(bytes, cuts: Array(0...bytes.count)) == whole)
    }

    @Test func headerChecksRejectEarly() {
        func error(_ bytes: [UInt8], frameBytesMax: Int = 1 << 20, expectsHello: Bool = false) -> FrameError? {
            var parser = FrameParser(frameBytesMax: frameBytesMax, expectsHello: expectsHello)
            var buffer = ByteBuffer(bytes: bytes)
            do {
                _ = try parser.next(from: &buffer)
                return nil
            } catch {
                return error
            }
        }
        #expect(error([0, 0, 0, 5]) == .lengthBelowHeader(length: 5))
        // An oversized length is refused from its 4 bytes alone, before any payload.
        #expect(
            error([0, 0x10, 0, 1], frameBytesMax: 1 << 20)
                == .lengthExceedsMax(length: 0x10_0001, frameBytesMax: 1 << 20))
        #expect(error([0xFF, 0xFF, 0xFF, 0xFF]) == .lengthExceedsMax(length: UInt32.max, frameBytesMax: 1 << 20))
        #expect(error([0, 0, 0, 6, 2]) == .unknownVersion(2))
        #expect(error([0, 0, 0, 6, 1, 9]) == .unknownKind(9))
        #expect(error([0, 0, 0, 6, 1, 2], expectsHello: true) == .expectedHello(kind: .message))
        #expect(error([0, 0, 0x10, 0, 1, 1], expectsHello: true) == .helloLength(length: 0x1000))
        // Incomplete but valid so far: no error, nothing consumed.
        #expect(error([0, 0, 0, 100, 1, 2, 0, 0]) == nil)
    }

    @Test func frameAtExactlyTheBoundIsAccepted() throws {
        let frameBytesMax = 70_000
        let payload = [UInt8](repeating: 0xAB, count: frameBytesMax - FrameFormat.headerBytesAfterLength)
        let frame = FrameEncoder.frame(kind: .snapshotChunk, sender: 3, payloadBytes: payload.count) {
            $0.writeBytes(payload)
        }
        var parser = FrameParser(frameBytesMax: frameBytesMax, expectsHello: false)
        var buffer = frame
        let parsed = try parser.next(from: &buffer)
        #expect(parsed?.payload.readableBytes == payload.count)

        var smaller = FrameParser(frameBytesMax: frameBytesMax - 1, expectsHello: false)
        var again = frame
        #expect(throws: FrameError.self) { _ = try smaller.next(from: &again) }
    }

    @Test func randomBytesNeverCrashTheParser() {
        let seed = UInt64.random(in: 0...UInt64.max)
        var random = SeededRandom(seed: seed)
        let (frames, _) = sampleFrames(seed: seed, count: 8)
        let valid = stream(frames)
        for round in 0..<2000 {
            var bytes: [UInt8]
            switch round % 3 {
            case 0:  // pure noise
                bytes = (0..<Int.random(in: 0...64, using: &random)).map { _ in
                    UInt8.random(in: 0...255, using: &random)
                }
            case 1:  // a valid stream with a few bytes flipped
                bytes = valid
                for _ in 0..<Int.random(in: 1...4, using: &random) {
                    bytes[Int.random(in: 0..<bytes.count, using: &random)] = UInt8.random(in: 0...255, using: &random)
                }
            default:  // a valid stream truncated
                bytes = Array(valid.prefix(Int.random(in: 0...valid.count, using: &random)))
            }
            var parser = FrameParser(frameBytesMax: 4096, expectsHello: round % 2 == 0)
            var buffer = ByteBuffer(bytes: bytes)
            var parsedCount = 0
            do {
                while let frame = try parser.next(from: &buffer) {
                    parsedCount += 1
                    #expect(parsedCount <= bytes.count, "seed \(seed)")
                    // Payload decoders must not crash either.
                    switch frame.kind {
                    case .hello:
                        var payload = frame.payload
                        _ = try? Hello.decode(from: &payload)
                    case .message:
                        _ = try? Envelope(decoding: Array(frame.payload.readableBytesView))
                    case .snapshotChunk:
                        var payload = frame.payload
                        _ = try? SnapshotChunk.decode(from: &payload)
                    }
                }
            } catch {
                // Rejected: fine. Not crashing is the property.
            }
        }
        print("randomBytesNeverCrashTheParser seed \(seed)")
    }

    @Test func snapshotChunksRoundTripAndInconsistentOnesAreRefused() throws {
        let chunks = [
            SnapshotChunk(through: 42, offset: 0, totalBytes: 10, bytes: [1, 2, 3], isLast: false),
            SnapshotChunk(through: 42, offset: 3, totalBytes: 10, bytes: Array(4...10), isLast: true),
            SnapshotChunk(through: 0, offset: 0, totalBytes: 0, bytes: [], isLast: true),
        ]
        for chunk in chunks {
            var frame = FrameEncoder.snapshotChunk(chunk, sender: 5)
            var parser = FrameParser(frameBytesMax: 1 << 20, expectsHello: false)
            var parsed = try #require(try parser.next(from: &frame))
            #expect(parsed.kind == .snapshotChunk)
            #expect(parsed.sender == 5)
            #expect(try SnapshotChunk.decode(from: &parsed.payload) == chunk)
        }
        func decode(_ bytes: [UInt8]) throws -> SnapshotChunk {
            var buffer = ByteBuffer(bytes: bytes)
            return try SnapshotChunk.decode(from: &buffer)
        }
        let header: (UInt64, UInt64, UInt64, UInt8) -> [UInt8] = { through, offset, total, last in
            var buffer = ByteBuffer()
            buffer.writeInteger(through, endianness: .big)
            buffer.writeInteger(offset, endianness: .big)
            buffer.writeInteger(total, endianness: .big)
            buffer.writeInteger(last)
            return Array(buffer.readableBytesView)
        }
        #expect(throws: DecodeError.self) { try decode([1, 2, 3]) }  // short header
        #expect(throws: DecodeError.self) { try decode(header(1, 0, 2, 2) + [0, 0]) }  // isLast byte 2
        #expect(throws: DecodeError.self) { try decode(header(1, 9, 10, 1) + [0, 0]) }  // runs past total
        #expect(throws: DecodeError.self) { try decode(header(1, 0, 10, 1) + [0]) }  // "last" but short
        #expect(throws: DecodeError.self) { try decode(header(1, 0, 1, 0) + [0]) }  // complete but not last
        #expect(throws: DecodeError.self) { try decode(header(1, UInt64.max, UInt64.max, 0) + [0]) }  // overflow
    }

    @Test func backoffDoublesFromInitialToMaxWithJitter() {
        let backoff = Backoff(initial: .milliseconds(50), max: .seconds(2))
        #expect(backoff.ceiling(attempt: 0) == .milliseconds(50))
        #expect(backoff.ceiling(attempt: 1) == .milliseconds(100))
        #expect(backoff.ceiling(attempt: 5) == .milliseconds(1600))
        #expect(backoff.ceiling(attempt: 6) == .seconds(2))
        #expect(backoff.ceiling(attempt: 1000) == .seconds(2))
        var random = SeededRandom(seed: 3)
        for attempt in 0..<100 {
            let delay = backoff.delay(attempt: attempt, using: &random)
            let ceiling = backoff.ceiling(attempt: attempt)
            #expect(delay <= ceiling)
            #expect(delay.nanoseconds >= ceiling.nanoseconds / 2)
        }
    }

    @Test func limitsRelate() throws {
        let defaults = PeerTransport.Configuration()
        try defaults.validate()
        #expect(defaults.frameBytesMax == 4 * 1024 * 1024)
        #expect(defaults.pendingFramesMax == 1024)
        // One maximal Paxos command always fits a frame with room to spare.
        let big = Envelope(
            from: 1, to: 2,
            message: .forward(commands: [Command([UInt8](repeating: 7, count: WireLimits.commandBytesMax))]))
        let frame = FrameEncoder.message(big)
        #expect(frame.readableBytes - FrameFormat.lengthFieldBytes <= defaults.frameBytesMax)
        #expect(SnapshotChunk.bytesMax(frameBytesMax: defaults.frameBytesMax) >= 1024 * 1024)

        var tooSmall = defaults
        tooSmall.frameBytesMax = 1000
        #expect(throws: TransportError.self) { try tooSmall.validate() }
        var queueTooSmall = defaults
        queueTooSmall.pendingBytesMax = defaults.frameBytesMax
        #expect(throws: TransportError.self) { try queueTooSmall.validate() }
        var backwards = defaults
        backwards.backoffInitial = .seconds(5)
        #expect(throws: TransportError.self) { try backwards.validate() }
    }
}
