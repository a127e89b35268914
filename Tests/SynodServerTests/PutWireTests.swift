import EtcdAPI
import EtcdKV
import Foundation
import KVStore
import Paxos
import ReplicaRuntime
import SwiftProtobuf
import Testing

@testable import SynodServer

/// The hand-written Put decoder and encoder against the generated protobuf code: the same
/// requests from the same bytes, the same bytes for the same responses.
@Suite("Put wire format")
struct PutWireTests {
    typealias Generator = SplitMix64

    static func bytes(_ random: inout Generator, max: Int) -> [UInt8] {
        (0..<Int.random(in: 0...max, using: &random)).map { _ in UInt8.random(in: 0...255, using: &random) }
    }

    static func int64(_ random: inout Generator) -> Int64 {
        switch Int.random(in: 0..<4, using: &random) {
        case 0: return 0
        case 1: return Int64.random(in: -5...5, using: &random)
        case 2: return Int64.random(in: Int64.min...Int64.max, using: &random)
        default: return Int64.random(in: 0...1_000_000, using: &random)
        }
    }

    @Test("requests decode as the generated code decodes them, unknown fields skipped", arguments: [1, 2, 3, 42] as [UInt64])
    func requests(seed: UInt64) throws {
        var random = Generator(seed: seed)
        for iteration in 0..<300 {
            var message = Etcdserverpb_PutRequest()
            message.key = Data(Self.bytes(&random, max: 40))
            message.value = Data(Self.bytes(&random, max: 300))
            message.lease = Self.int64(&random)
            message.prevKv = Bool.random(using: &random)
            message.ignoreValue = Bool.random(using: &random)
            message.ignoreLease = Bool.random(using: &random)
            var payload: [UInt8] = try message.serializedBytes()
            if Bool.random(using: &random) {
                // A field a newer client might send (number 15, varint), then one of 16 bytes.
                var unknown = ProtobufWriter()
                unknown.writeInt(15, Int64.random(in: 1...1_000, using: &random))
                unknown.writeBytes(16, Self.bytes(&random, max: 20), always: true)
                payload += unknown.bytes
            }
            let decoded = try EtcdFrontEnd.decodePutRequest(payload)
            let expected = PutRequest(try Etcdserverpb_PutRequest(serializedBytes: payload))
            #expect(decoded == expected, "seed \(seed) iteration \(iteration)")
        }
    }

    @Test("a truncated or malformed request is an error, not a request")
    func malformed() {
        var message = Etcdserverpb_PutRequest()
        message.key = Data("key".utf8)
        message.value = Data("value".utf8)
        let payload: [UInt8] = (try? message.serializedBytes()) ?? []
        #expect(throws: ProtobufWireError.self) { try EtcdFrontEnd.decodePutRequest(Array(payload.dropLast())) }
        #expect(throws: ProtobufWireError.self) { try EtcdFrontEnd.decodePutRequest([0x0A, 0x80]) }
        #expect(throws: ProtobufWireError.self) { try EtcdFrontEnd.decodePutRequest([0x0B]) }  // wire type 3
    }

    @Test("responses encode to the generated code's bytes", arguments: [1, 2, 3, 42] as [UInt64])
    func responses(seed: UInt64) throws {
        var random = Generator(seed: seed)
        for iteration in 0..<300 {
            let previous: KeyValue? =
                Bool.random(using: &random)
                ? KeyValue(
                    key: Self.bytes(&random, max: 40), value: Self.bytes(&random, max: 300),
                    createRevision: Self.int64(&random), modRevision: Self.int64(&random), version: Self.int64(&random),
                    lease: Self.int64(&random))
                : nil
            let response = PutResponse(revision: Self.int64(&random), prevKV: previous)
            let position = ReplicaPosition(
                revision: Self.int64(&random), leader: nil, ballotRound: UInt64.random(in: 0...9, using: &random))
            let clusterID = UInt64.random(in: 0...UInt64.max, using: &random)
            let memberID = UInt64.random(in: 1...7, using: &random)
            var header = Etcdserverpb_ResponseHeader()
            header.clusterID = clusterID
            header.memberID = memberID
            header.revision = position.revision
            header.raftTerm = position.ballotRound
            let expected: [UInt8] = try Etcdserverpb_PutResponse(response, header: header).serializedBytes()
            let encoded = EtcdFrontEnd.encodePutResponse(response, clusterID: clusterID, memberID: memberID, position: position)
            #expect(encoded == expected, "seed \(seed) iteration \(iteration)")
        }
    }
}
