import EtcdAPI
import EtcdKV
import GRPCCore
import KVStore

extension SynodClient {
    /// Watches `key` (or `[key, rangeEnd)`; `rangeEnd == [0]`: every key `>= key`) through
    /// etcd's `Watch/Watch` on the preferred endpoint: every change from `startRevision`
    /// (0: from now; older revisions are replayed from the server's history) in revision
    /// order. The sequence ends with `SynodClientError.rejected(code: .outOfRange, …)` if the
    /// start revision was compacted (watch again from a newer one), and with the call's
    /// error if the connection fails: it does not reconnect or fail over by itself (resume
    /// with `startRevision` = last event's revision + 1). Cancel the consuming task to stop.
    public func watch(
        key: some SynodBytes, rangeEnd: [UInt8] = [], startRevision: Int64 = 0, prevKV: Bool = false
    ) -> AsyncThrowingStream<WatchEvent, any Error> {
        let request = WatchWire.createRequest(key: key.synodBytes, rangeEnd: rangeEnd, start: startRevision, prevKV: prevKV)
        let (events, continuation) = AsyncThrowingStream.makeStream(of: WatchEvent.self, throwing: (any Error).self)
        let index = preferredIndex
        let endpoint = endpoints[index]
        let connection: SynodConnection
        do {
            connection = try self.connection(at: index)
        } catch {
            continuation.finish(throwing: error)
            return events
        }
        let (requests, requestSink) = AsyncStream.makeStream(of: [UInt8].self)
        requestSink.yield(request)
        let task = Task {
            do {
                var metadata: Metadata = [:]
                try await self.addAuthToken(to: &metadata)  // SynodClient+Auth.swift
                try await connection.rawBidirectional(
                    service: "etcdserverpb.Watch", method: "Watch", requests: requests, metadata: metadata
                ) { bytes in
                    let response = try WatchWire.decodeResponse(bytes)
                    if response.canceled {
                        let code: RPCError.Code = response.compactRevision != 0 ? .outOfRange : .cancelled
                        throw SynodClientError.rejected(
                            code: code,
                            message: response.cancelReason.isEmpty
                                ? "watch cancelled by the server (compact revision \(response.compactRevision))"
                                : response.cancelReason,
                            endpoint: endpoint)
                    }
                    for event in response.events { continuation.yield(event) }
                }
                continuation.finish()
            } catch is CancellationError {
                continuation.finish()
            } catch {
                continuation.finish(throwing: error)
            }
            requestSink.finish()
        }
        continuation.onTermination = { _ in
            requestSink.finish()
            task.cancel()
        }
        return events
    }

    /// `watch` of every key starting with `prefix`.
    public func watchPrefix(
        _ prefix: some SynodBytes, startRevision: Int64 = 0, prevKV: Bool = false
    ) -> AsyncThrowingStream<WatchEvent, any Error> {
        let prefixBytes = prefix.synodBytes
        return watch(
            key: prefixBytes.isEmpty ? [0] : prefixBytes, rangeEnd: KVBytes.prefixRangeEnd(prefixBytes),
            startRevision: startRevision, prevKV: prevKV)
    }
}

/// etcd's WatchRequest (create only) and WatchResponse, coded by hand (field numbers as in
/// the server's `WatchWire.swift`; `EtcdAPI` has no generated Watch messages).
enum WatchWire {
    struct Response {
        var canceled = false
        var compactRevision: Int64 = 0
        var cancelReason = ""
        var events: [WatchEvent] = []
    }

    static func createRequest(key: [UInt8], rangeEnd: [UInt8], start: Int64, prevKV: Bool) -> [UInt8] {
        var create = HistoryWire.Writer()
        create.bytesField(1, key)
        create.bytesField(2, rangeEnd)
        create.intField(3, start)
        create.intField(6, prevKV ? 1 : 0)
        var request = HistoryWire.Writer()
        request.varint(1 << 3 | 2)
        request.varint(UInt64(create.bytes.count))
        request.bytes.append(contentsOf: create.bytes)
        return request.bytes
    }

    static func decodeResponse(_ bytes: [UInt8]) throws -> Response {
        var reader = HistoryWire.Reader(bytes: bytes, position: 0, end: bytes.count)
        var response = Response()
        while !reader.isAtEnd {
            let tag = try reader.varint()
            switch (tag >> 3, tag & 7) {
            case (4, 0): response.canceled = try reader.varint() != 0
            case (5, 0): response.compactRevision = Int64(bitPattern: try reader.varint())
            case (6, 2): response.cancelReason = String(decoding: bytes[try reader.lengthDelimited()], as: UTF8.self)
            case (11, 2):
                let range = try reader.lengthDelimited()
                response.events.append(try decodeEvent(HistoryWire.Reader(bytes: bytes, position: range.lowerBound, end: range.upperBound)))
            default: try reader.skip(tag & 7)
            }
        }
        return response
    }

    static func decodeEvent(_ embedded: HistoryWire.Reader) throws -> WatchEvent {
        var reader = embedded
        var type = WatchEventType.put
        var kv = KeyValue(key: [], value: [], createRevision: 0, modRevision: 0, version: 0)
        var prevKV: KeyValue?
        while !reader.isAtEnd {
            let tag = try reader.varint()
            switch (tag >> 3, tag & 7) {
            case (1, 0): type = try reader.varint() == 1 ? .delete : .put
            case (2, 2): kv = KeyValue(try Etcdserverpb_KeyValue(serializedBytes: Array(reader.bytes[try reader.lengthDelimited()])))
            case (3, 2):
                prevKV = KeyValue(try Etcdserverpb_KeyValue(serializedBytes: Array(reader.bytes[try reader.lengthDelimited()])))
            default: try reader.skip(tag & 7)
            }
        }
        return WatchEvent(type: type, kv: kv, prevKV: prevKV)
    }
}
