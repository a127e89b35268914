import EtcdAPI
import EtcdKV
import ReplicaRuntime
import KVStore

/// etcd's Watch messages, coded by hand (`EtcdAPI` has no generated WatchRequest,
/// WatchResponse or mvccpb.Event). Field numbers from etcd 3.4's rpc.proto and kv.proto:
///
///     WatchRequest       { oneof { WatchCreateRequest create_request = 1;
///                                  WatchCancelRequest cancel_request = 2;
///                                  WatchProgressRequest progress_request = 3; } }
///     WatchCreateRequest { bytes key = 1; bytes range_end = 2; int64 start_revision = 3;
///                          bool progress_notify = 4; repeated FilterType filters = 5;
///                          bool prev_kv = 6; int64 watch_id = 7; bool fragment = 8; }
///                          FilterType { NOPUT = 0; NODELETE = 1; }
///     WatchCancelRequest { int64 watch_id = 1; }
///     WatchResponse      { ResponseHeader header = 1; int64 watch_id = 2; bool created = 3;
///                          bool canceled = 4; int64 compact_revision = 5; string cancel_reason = 6;
///                          bool fragment = 7; repeated mvccpb.Event events = 11; }
///     mvccpb.Event       { EventType type = 1 (PUT = 0, DELETE = 1); KeyValue kv = 2; KeyValue prev_kv = 3; }
extension WatchRequest {
    static func decode(_ payload: [UInt8]) throws(ProtobufWireError) -> WatchRequest {
        var reader = ProtobufReader(payload)
        var message = WatchRequest.empty
        while !reader.isAtEnd {
            let (field, wireType) = try reader.readTag()
            switch (field, wireType) {
            case (1, 2): message = .create(try WatchCreate.decode(try reader.readEmbedded()))
            case (2, 2):
                var cancel = try reader.readEmbedded()
                var watchID: Int64 = 0
                while !cancel.isAtEnd {
                    let (field, wireType) = try cancel.readTag()
                    if field == 1 && wireType == 0 {
                        watchID = Int64(bitPattern: try cancel.readVarint())
                    } else {
                        try cancel.skip(wireType: wireType)
                    }
                }
                message = .cancel(watchID: watchID)
            case (3, 2):
                _ = try reader.readEmbedded()
                message = .progress
            default: try reader.skip(wireType: wireType)
            }
        }
        return message
    }
}

extension WatchCreate {
    static func decode(_ embedded: ProtobufReader) throws(ProtobufWireError) -> WatchCreate {
        var reader = embedded
        var create = WatchCreate()
        while !reader.isAtEnd {
            let (field, wireType) = try reader.readTag()
            switch (field, wireType) {
            case (1, 2): create.key = try reader.readLengthDelimited()
            case (2, 2): create.rangeEnd = try reader.readLengthDelimited()
            case (3, 0): create.startRevision = Int64(bitPattern: try reader.readVarint())
            case (4, 0): create.progressNotify = try reader.readVarint() != 0
            case (5, 0): create.noteFilter(try reader.readVarint())
            case (5, 2):
                // Packed (proto3's default for repeated enums).
                var packed = try reader.readEmbedded()
                while !packed.isAtEnd { create.noteFilter(try packed.readVarint()) }
            case (6, 0): create.prevKV = try reader.readVarint() != 0
            case (7, 0): create.watchID = Int64(bitPattern: try reader.readVarint())
            case (8, 0): create.fragment = try reader.readVarint() != 0
            default: try reader.skip(wireType: wireType)
            }
        }
        return create
    }

    private mutating func noteFilter(_ value: UInt64) {
        switch value {
        case 0: filterPuts = true
        case 1: filterDeletes = true
        default: break  // An unknown filter filters nothing, as in etcd.
        }
    }
}

/// One WatchResponse to encode.
struct WatchResponseMessage {
    /// The hub's response with this replica's header.
    init(_ response: WatchResponse, clusterID: UInt64, memberID: UInt64) {
        var header = Etcdserverpb_ResponseHeader()
        header.clusterID = clusterID
        header.memberID = memberID
        header.revision = response.revision
        header.raftTerm = response.round
        self.header = header
        watchID = response.watchID
        created = response.created
        canceled = response.canceled
        compactRevision = response.compactRevision
        cancelReason = response.cancelReason
        events = response.events
        includePrevKV = response.includePrevKV
    }

    var header: Etcdserverpb_ResponseHeader
    var watchID: Int64
    var created = false
    var canceled = false
    var compactRevision: Int64 = 0
    var cancelReason = ""
    var events: [WatchEvent] = []
    /// Whether the events keep their `prevKV` (the watcher asked for `prev_kv`).
    var includePrevKV = false

    func encode() -> [UInt8] {
        var writer = ProtobufWriter(capacity: 128 + events.reduce(0) { $0 + Self.approximateBytes($1) })
        writer.writeBytes(1, (try? header.serializedBytes() as [UInt8]) ?? [], always: true)
        writer.writeInt(2, watchID)
        writer.writeBool(3, created)
        writer.writeBool(4, canceled)
        writer.writeInt(5, compactRevision)
        writer.writeBytes(6, Array(cancelReason.utf8))
        for event in events {
            writer.writeBytes(11, Self.encode(event, includePrevKV: includePrevKV), always: true)
        }
        return writer.bytes
    }

    static func encode(_ event: WatchEvent, includePrevKV: Bool) -> [UInt8] {
        var writer = ProtobufWriter(capacity: approximateBytes(event))
        writer.writeUInt(1, UInt64(event.type.rawValue))
        writer.writeBytes(2, (try? Etcdserverpb_KeyValue(event.kv).serializedBytes() as [UInt8]) ?? [], always: true)
        if includePrevKV, let prev = event.prevKV {
            writer.writeBytes(3, (try? Etcdserverpb_KeyValue(prev).serializedBytes() as [UInt8]) ?? [], always: true)
        }
        return writer.bytes
    }

    /// The encoded size, near enough to bound a response.
    static func approximateBytes(_ event: WatchEvent) -> Int {
        WatchHub.approximateBytes(event)
    }
}
