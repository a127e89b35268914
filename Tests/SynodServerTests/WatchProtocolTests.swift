import EtcdAPI
import Foundation
import GRPCCore
import Linearizability
import Synchronization
import Testing

@testable import SynodServer

/// The Watch wire protocol over a raw gRPC bidirectional call (requests coded with the
/// server's own `ProtobufWriter`, responses decoded here): what etcdctl cannot reach —
/// client-chosen ids, a duplicate id, filters, a future start, RequestProgress, cancel.

struct RawBytesSerializer: MessageSerializer {
    func serialize<Bytes: GRPCContiguousBytes>(_ message: [UInt8]) throws -> Bytes { Bytes(message) }
}

struct RawBytesDeserializer: MessageDeserializer {
    func deserialize<Bytes: GRPCContiguousBytes>(_ serializedMessageBytes: Bytes) throws -> [UInt8] {
        serializedMessageBytes.withUnsafeBytes { Array($0) }
    }
}

/// A decoded WatchResponse (etcd 3.4 field numbers, as in `WatchWire.swift`).
struct DecodedWatchResponse: Sendable, CustomStringConvertible {
    var revision: Int64 = 0
    var watchID: Int64 = 0
    var created = false
    var canceled = false
    var compactRevision: Int64 = 0
    var cancelReason = ""
    /// "PUT key=value" or "DELETE key", with "@revision".
    var events: [String] = []
    /// The same events for `WatchChecker`.
    var checkerEvents: [WatchChecker.Event] = []

    var description: String {
        "{id=\(watchID) rev=\(revision)\(created ? " created" : "")\(canceled ? " canceled(\(cancelReason))" : "")"
            + "\(compactRevision != 0 ? " compact=\(compactRevision)" : "") \(events)}"
    }

    init(_ bytes: [UInt8]) throws {
        var reader = ProtobufReader(bytes)
        while !reader.isAtEnd {
            let (field, wireType) = try reader.readTag()
            switch (field, wireType) {
            case (1, 2): revision = try Etcdserverpb_ResponseHeader(serializedBytes: try reader.readLengthDelimited()).revision
            case (2, 0): watchID = Int64(bitPattern: try reader.readVarint())
            case (3, 0): created = try reader.readVarint() != 0
            case (4, 0): canceled = try reader.readVarint() != 0
            case (5, 0): compactRevision = Int64(bitPattern: try reader.readVarint())
            case (6, 2): cancelReason = String(decoding: try reader.readLengthDelimited(), as: UTF8.self)
            case (11, 2):
                var event = try reader.readEmbedded()
                var type: UInt64 = 0
                var kv = Etcdserverpb_KeyValue()
                while !event.isAtEnd {
                    let (field, wireType) = try event.readTag()
                    switch (field, wireType) {
                    case (1, 0): type = try event.readVarint()
                    case (2, 2): kv = try Etcdserverpb_KeyValue(serializedBytes: try event.readLengthDelimited())
                    default: try event.skip(wireType: wireType)
                    }
                }
                checkerEvents.append(
                    WatchChecker.Event(
                        revision: kv.modRevision, isDelete: type == 1, key: Array(kv.key), value: Array(kv.value)))
                let key = String(decoding: kv.key, as: UTF8.self)
                events.append(
                    type == 0
                        ? "PUT \(key)=\(String(decoding: kv.value, as: UTF8.self))@\(kv.modRevision)"
                        : "DELETE \(key)@\(kv.modRevision)")
            default: try reader.skip(wireType: wireType)
            }
        }
    }
}

final class ResponseLog: Sendable {
    private let responses = Mutex<[DecodedWatchResponse]>([])
    var all: [DecodedWatchResponse] { responses.withLock { $0 } }
    func append(_ response: DecodedWatchResponse) { responses.withLock { $0.append(response) } }
}

enum WatchRequestCoding {
    static func create(
        key: String, rangeEnd: String = "", start: Int64 = 0, filters: [UInt64] = [], watchID: Int64 = 0
    ) -> [UInt8] {
        var create = ProtobufWriter()
        create.writeBytes(1, Array(key.utf8))
        create.writeBytes(2, Array(rangeEnd.utf8))
        create.writeInt(3, start)
        if !filters.isEmpty {
            var packed = ProtobufWriter()
            for filter in filters { packed.writeVarint(filter) }
            create.writeBytes(5, packed.bytes)
        }
        create.writeInt(7, watchID)
        var request = ProtobufWriter()
        request.writeBytes(1, create.bytes, always: true)
        return request.bytes
    }

    static func cancel(_ watchID: Int64) -> [UInt8] {
        var cancel = ProtobufWriter()
        cancel.writeInt(1, watchID)
        var request = ProtobufWriter()
        request.writeBytes(2, cancel.bytes, always: true)
        return request.bytes
    }

    static var progress: [UInt8] {
        var request = ProtobufWriter()
        request.writeBytes(3, [UInt8](), always: true)
        return request.bytes
    }
}

extension SynodProcessTests {
    @Test("Watch over raw gRPC: ids, duplicate id, NOPUT filter, future start, RequestProgress, cancel", .timeLimit(.minutes(5)))
    func watchProtocol() async throws {
        try await Self.withWritableCluster(name: "watch-protocol", replicas: 3) { cluster, connections in
            let writer = connections.replica(1)
            let now = try await writer.put("w/now", "0").header.revision
            let (outbound, requests) = AsyncStream.makeStream(of: [UInt8].self)
            let received = ResponseLog()
            func responses() -> [DecodedWatchResponse] { received.all }
            func awaitResponse(_ what: String, _ matches: @escaping (DecodedWatchResponse) -> Bool) async -> Bool {
                let seen = await eventually(timeout: .seconds(10), interval: .milliseconds(50)) {
                    responses().contains(where: matches)
                }
                if !seen { Issue.record("no response \(what); got \(responses())") }
                return seen
            }
            let call = Task {
                try await connections.replica(2).grpc.bidirectionalStreaming(
                    request: StreamingClientRequest(of: [UInt8].self) { sink in
                        for await request in outbound { try await sink.write(request) }
                    },
                    descriptor: MethodDescriptor(fullyQualifiedService: "etcdserverpb.Watch", method: "Watch"),
                    serializer: RawBytesSerializer(), deserializer: RawBytesDeserializer(), options: .defaults
                ) { response in
                    for try await message in response.messages {
                        let decoded = try DecodedWatchResponse(message)
                        received.append(decoded)
                    }
                }
            }
            defer {
                requests.finish()
                call.cancel()
            }
            // Server-chosen id 0; client-chosen 7 with NOPUT over a prefix; a future start; a duplicate 7.
            requests.yield(WatchRequestCoding.create(key: "w/a"))
            _ = await awaitResponse("created 0") { $0.created && $0.watchID == 0 && !$0.canceled && $0.revision == now }
            requests.yield(WatchRequestCoding.create(key: "w/f/", rangeEnd: "w/f0", filters: [0], watchID: 7))
            _ = await awaitResponse("created 7") { $0.created && $0.watchID == 7 && !$0.canceled }
            requests.yield(WatchRequestCoding.create(key: "w/later", start: now + 6))
            _ = await awaitResponse("created 1") { $0.created && $0.watchID == 1 }
            requests.yield(WatchRequestCoding.create(key: "w/x", watchID: 7))
            _ = await awaitResponse("duplicate 7 refused") {
                $0.created && $0.canceled && $0.watchID == 7 && $0.cancelReason.contains("already in use")
            }

            let putA = try await writer.put("w/a", "1").header.revision  // now+1
            let putF = try await writer.put("w/f/x", "1").header.revision  // now+2
            let deleteF = try await writer.delete("w/f/x").header.revision  // now+3
            _ = await awaitResponse("w/a's put to watch 0") { $0.watchID == 0 && $0.events == ["PUT w/a=1@\(putA)"] }
            _ = await awaitResponse("w/f/x's delete to watch 7") {
                $0.watchID == 7 && $0.events == ["DELETE w/f/x@\(deleteF)"]
            }
            #expect(
                !responses().contains { $0.events.contains("PUT w/f/x=1@\(putF)") },
                "NOPUT let a put through: \(responses())")

            // RequestProgress: the current revision, watch id -1, once every watcher is in sync.
            requests.yield(WatchRequestCoding.progress)
            _ = await awaitResponse("progress at \(deleteF)") {
                $0.watchID == -1 && $0.revision >= deleteF && $0.events.isEmpty
            }

            // Cancel watch 0: later puts of w/a reach nobody.
            requests.yield(WatchRequestCoding.cancel(0))
            _ = await awaitResponse("cancel 0") { $0.canceled && $0.watchID == 0 && !$0.created }
            _ = try await writer.put("w/a", "2")  // now+4
            _ = try await writer.put("w/f/y", "1")  // now+5
            let early = try await writer.put("w/later", "early").header.revision
            #expect(early == now + 6, "another write ran meanwhile: the future start is off")
            let later = try await writer.put("w/later", "on time").header.revision  // now+7
            let deleteY = try await writer.delete("w/f/y").header.revision
            _ = await awaitResponse("w/f/y's delete") { $0.watchID == 7 && $0.events == ["DELETE w/f/y@\(deleteY)"] }
            _ = await awaitResponse("w/later's second put") {
                $0.watchID == 1 && $0.events.contains("PUT w/later=on time@\(later)")
            }
            let all = responses()
            #expect(!all.contains { $0.events.contains { $0.hasPrefix("PUT w/a=2") } }, "a cancelled watch fired: \(all)")
            let laterEvents = all.filter { $0.watchID == 1 }.flatMap(\.events)
            #expect(
                laterEvents == ["PUT w/later=early@\(early)", "PUT w/later=on time@\(later)"],
                "watch from a future revision got \(laterEvents)")
            // Every watcher's events arrived in revision order.
            let revisions = all.flatMap(\.events).compactMap { Int64($0.split(separator: "@").last ?? "") }
            let perWatch = Dictionary(grouping: all, by: \.watchID).mapValues {
                $0.flatMap(\.events).compactMap { Int64($0.split(separator: "@").last ?? "") }
            }
            for (id, order) in perWatch { #expect(order == order.sorted(), "watch \(id) out of order: \(order)") }
            #expect(!revisions.isEmpty)
        }
    }
}
