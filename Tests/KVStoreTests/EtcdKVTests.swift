import EtcdAPI
import EtcdKV
import Foundation
import KVStore
import SwiftProtobuf
import Testing

/// The shared etcd ⇄ KVStore conversions (EtcdKV): every request and response survives the
/// trip to etcd's message, through its wire bytes, and back — the path a request takes from
/// the Swift client to the server and a response back.
@Suite("etcd conversions")
struct EtcdKVTests {
    /// Through protobuf's bytes, as on the wire.
    static func wire<M: SwiftProtobuf.Message>(_ message: M) throws -> M {
        try M(serializedBytes: try message.serializedBytes() as [UInt8])
    }

    @Test("requests: KVStore → etcd message → bytes → KVStore is the identity")
    func requests() throws {
        for seed in testSeeds {
            var random = RandomRequests(seed: seed)
            for iteration in 0..<300 {
                let range = random.range()
                #expect(RangeRequest(try Self.wire(Etcdserverpb_RangeRequest(range))) == range, "seed \(seed) #\(iteration)")
                var put = random.put()
                put.lease = random.int64()
                put.ignoreLease = random.bool()
                #expect(PutRequest(try Self.wire(Etcdserverpb_PutRequest(put))) == put, "seed \(seed) #\(iteration)")
                let delete = random.deleteRange()
                #expect(
                    DeleteRangeRequest(try Self.wire(Etcdserverpb_DeleteRangeRequest(delete))) == delete,
                    "seed \(seed) #\(iteration)")
                let txn = random.txn(depth: 1)
                #expect(try TxnRequest(try Self.wire(Etcdserverpb_TxnRequest(txn))) == txn, "seed \(seed) #\(iteration)")
            }
        }
    }

    @Test("responses: KVStore → etcd message (with the server's header) → bytes → KVStore is the identity")
    func responses() throws {
        for seed in testSeeds {
            var random = RandomRequests(seed: seed)
            func keyValue() -> KeyValue {
                KeyValue(
                    key: random.key(), value: random.bytes(maxCount: 20), createRevision: random.int64(),
                    modRevision: random.int64(), version: random.int64(), lease: random.int64())
            }
            func operation(depth: Int) -> ResponseOp {
                let revision = Int64(random.int(1...1_000))
                switch random.int(0...(depth > 0 ? 3 : 2)) {
                case 0:
                    return .range(
                        RangeResponse(
                            revision: revision, kvs: (0..<random.int(0...3)).map { _ in keyValue() }, more: random.bool(),
                            count: Int64(random.int(0...10))))
                case 1: return .put(PutResponse(revision: revision, prevKV: random.bool() ? keyValue() : nil))
                case 2:
                    return .deleteRange(
                        DeleteRangeResponse(
                            revision: revision, deleted: Int64(random.int(0...3)), prevKVs: (0..<random.int(0...2)).map { _ in keyValue() }))
                default:
                    return .txn(
                        TxnResponse(
                            revision: revision, succeeded: random.bool(),
                            responses: (0..<random.int(0...3)).map { _ in operation(depth: depth - 1) }))
                }
            }
            for iteration in 0..<300 {
                let response = TxnResponse(
                    revision: Int64(random.int(1...1_000)), succeeded: random.bool(),
                    responses: (0..<random.int(0...4)).map { _ in operation(depth: 2) })
                var header = Etcdserverpb_ResponseHeader()
                header.revision = response.revision
                let back = try TxnResponse(try Self.wire(Etcdserverpb_TxnResponse(response, header: header)))
                // Nested responses carry the txn's header, so their revision is the txn's.
                #expect(back == Self.withRevision(response, response.revision), "seed \(seed) #\(iteration)")
            }
        }
    }

    static func withRevision(_ txn: TxnResponse, _ revision: Int64) -> TxnResponse {
        TxnResponse(
            revision: revision, succeeded: txn.succeeded,
            responses: txn.responses.map { operation in
                switch operation {
                case .range(let range): return .range(RangeResponse(revision: revision, kvs: range.kvs, more: range.more, count: range.count))
                case .put(let put): return .put(PutResponse(revision: revision, prevKV: put.prevKV))
                case .deleteRange(let delete):
                    return .deleteRange(DeleteRangeResponse(revision: revision, deleted: delete.deleted, prevKVs: delete.prevKVs))
                case .txn(let nested): return .txn(withRevision(nested, revision))
                }
            })
    }

    @Test("what etcd would refuse is refused with etcd's message")
    func refusals() {
        var compare = Etcdserverpb_Compare()
        compare.key = Data("k".utf8)
        compare.result = .UNRECOGNIZED(9)
        var txn = Etcdserverpb_TxnRequest()
        txn.compare = [compare]
        #expect(throws: EtcdConversionError("etcdserver: unknown compare result")) { try TxnRequest(txn) }
        compare.result = .equal
        compare.target = .UNRECOGNIZED(7)
        txn.compare = [compare]
        #expect(throws: EtcdConversionError("etcdserver: unknown compare target")) { try TxnRequest(txn) }
        txn.compare = []
        txn.success = [Etcdserverpb_RequestOp()]
        #expect(throws: EtcdConversionError("etcdserver: a txn operation is empty")) { try TxnRequest(txn) }
    }
}
