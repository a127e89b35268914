import EtcdAPI
import EtcdKV
import Foundation
import GRPCCore
import KVStore
import NIOHPACK
import Paxos
import ReplicaRuntime
import SwiftProtobuf
import Synchronization
import UnaryGRPC

/// The etcd v3 API over one replica. Any replica serves any request: writes go through
/// the log (the core forwards them to the leader), linearizable reads through the read
/// index, serializable reads from the local state machine.
final class EtcdFrontEnd: Sendable {
    let loop: ReplicaLoop
    let configuration: ServerConfiguration
    /// Ids for writes that carry no `synod-request-id`: the high bit marks them
    /// untracked (no exactly-once session), the rest only make them unique — also against
    /// a former process of this replica, whose commands may still be chosen after it died:
    /// so a fresh random number per process, never the configured `--seed`.
    private let untrackedSession: UInt64
    /// `configuration.clusterID`, computed once (it hashes the membership).
    let clusterID: UInt64
    private let untrackedSequence = Atomic<UInt64>(0)

    /// The metadata header a retrying client uses to make a write exactly-once:
    /// `<client id, 16 hex digits>-<sequence>`.
    static let requestIDHeader = "synod-request-id"

    init(loop: ReplicaLoop, configuration: ServerConfiguration) {
        self.loop = loop
        self.configuration = configuration
        clusterID = configuration.clusterID
        untrackedSession = (UInt64(configuration.replicaID) << 40) ^ UInt64.random(in: 0...0xFF_FFFF_FFFF)
    }

    func header(_ position: ReplicaPosition) -> Etcdserverpb_ResponseHeader {
        var header = Etcdserverpb_ResponseHeader()
        header.clusterID = clusterID
        header.memberID = UInt64(configuration.replicaID)
        header.revision = position.revision
        header.raftTerm = position.ballotRound
        return header
    }

    func requestID(from metadata: HPACKHeaders) throws -> RequestID {
        if let text = metadata.first(name: Self.requestIDHeader) {
            guard let requestID = Self.parseRequestID(text.utf8), requestID.clientID & untrackedBit == 0 else {
                throw RPCError(
                    code: .invalidArgument,
                    message: "synod: bad \(Self.requestIDHeader) '\(text)'; expected <16 hex digits>-<sequence>")
            }
            return requestID
        }
        let sequence = untrackedSequence.add(1, ordering: .relaxed).newValue
        return RequestID(clientID: untrackedBit | untrackedSession, sequence: sequence)
    }

    /// `<16 lower-case hex digits>-<decimal sequence ≥ 1>` with a client id other than 0,
    /// parsed byte by byte (it is on every write's path).
    static func parseRequestID(_ utf8: String.UTF8View) -> RequestID? {
        var client: UInt64 = 0
        var sequence: UInt64 = 0
        var position = 0
        var sequenceDigits = 0
        for byte in utf8 {
            if position < 16 {
                switch byte {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): client = client << 4 | UInt64(byte - UInt8(ascii: "0"))
                case UInt8(ascii: "a")...UInt8(ascii: "f"): client = client << 4 | UInt64(byte - UInt8(ascii: "a") + 10)
                default: return nil
                }
            } else if position == 16 {
                guard byte == UInt8(ascii: "-") else { return nil }
            } else {
                guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9"), sequenceDigits < 20 else { return nil }
                let (times10, overflow1) = sequence.multipliedReportingOverflow(by: 10)
                let (sum, overflow2) = times10.addingReportingOverflow(UInt64(byte - UInt8(ascii: "0")))
                guard !overflow1, !overflow2 else { return nil }
                sequence = sum
                sequenceDigits += 1
            }
            position += 1
        }
        guard sequenceDigits > 0, sequence >= 1, client != 0 else { return nil }
        return RequestID(clientID: client, sequence: sequence)
    }

    var untrackedBit: UInt64 { RequestID.untrackedBit }

    /// The server's request timeout, shortened to the client's `grpc-timeout` if that is
    /// sooner: nobody waits for an answer after it.
    func deadline(_ call: UnaryCall) -> RuntimeInstant {
        var timeout = Duration.milliseconds(configuration.requestTimeoutMilliseconds)
        if let clientTimeout = call.timeout, clientTimeout < timeout { timeout = clientTimeout }
        return loop.deadline(after: timeout)
    }

    /// Hands a write to the loop; `reply` runs on the loop thread.
    func write(
        _ operation: WriteOperation, call: UnaryCall,
        reply: @escaping @Sendable (RequestOutcome<WriteResult>) -> Void
    ) throws {
        let operation = try authorize(operation, call: call)  // EtcdServices+Auth.swift
        do {
            try KVStore.validate(operation)
        } catch {
            throw EtcdConversions.rpcError(error)
        }
        // The proposing replica's wall clock, stored with the command: every replica applies
        // the same value (`synod history` shows it).
        let command = WriteCommand(
            requestID: try requestID(from: call.metadata), operation: operation,
            proposedAtMilliseconds: Self.wallClockMilliseconds())
        let encoded = Command(command.encode())
        guard encoded.bytes.count <= min(WireLimits.commandBytesMax, configuration.requestBytesMax + 64 * 1024) else {
            throw RPCError(code: .invalidArgument, message: "etcdserver: request is too large")
        }
        if !loop.submit(.write(command, encoded, deadline: deadline(call), reply: reply)) {
            reply(.failure(.tooManyRequests))
        }
    }

    static func wallClockMilliseconds() -> Int64 {
        Int64((Date().timeIntervalSince1970 * 1_000).rounded(.down))
    }

    /// Hands a read to the loop (or serves it there at once if serializable).
    func read(
        _ request: RangeRequest, call: UnaryCall,
        reply: @escaping @Sendable (RequestOutcome<RangeResponse>) -> Void
    ) throws {
        if request.key.isEmpty {
            throw RPCError(code: .invalidArgument, message: "etcdserver: key is not provided")
        }
        let serializable = request.serializable || configuration.defaultConsistency == .serializable
        if !loop.submit(.read(request, serializable: serializable, deadline: deadline(call), reply: reply)) {
            reply(.failure(.tooManyRequests))
        }
    }

    func status(reply: @escaping @Sendable (ReplicaStatus) -> Void) {
        if !loop.submit(.status(reply)) {
            reply(.unreachable)
        }
    }

    /// The write's result, or the etcd error it maps to.
    static func unwrap(_ outcome: RequestOutcome<WriteResult>) throws -> (WriteResult, ReplicaPosition) {
        switch outcome {
        case .success(let result, let position):
            if let error = result.error { throw EtcdConversions.rpcError(error) }
            return (result, position)
        case .failure(let failure):
            throw rpcError(failure)
        }
    }

    /// etcd's codes and messages (api/v3rpc/rpctypes), so clients retry as with etcd.
    static func rpcError(_ failure: RequestFailure) -> RPCError {
        switch failure {
        case .noLeader: return RPCError(code: .unavailable, message: "etcdserver: no leader")
        case .timedOut: return RPCError(code: .unavailable, message: "etcdserver: request timed out")
        case .leaderChanged: return RPCError(code: .unavailable, message: "etcdserver: leader changed")
        case .tooManyRequests: return RPCError(code: .resourceExhausted, message: "etcdserver: too many requests")
        case .recovering:
            return RPCError(code: .unavailable, message: "etcdserver: no leader (replica is recovering from a failure)")
        case .stopping: return RPCError(code: .unavailable, message: "etcdserver: server stopped")
        case .store(let error): return EtcdConversions.rpcError(error)
        }
    }

    static func unexpected(_ result: WriteResult) -> RPCError {
        RPCError(code: .internalError, message: "synod: unexpected state machine result \(result)")
    }

    // MARK: - The etcd v3 methods

    /// Every unary method Synod serves, by gRPC path (Watch and LeaseKeepAlive are in
    /// `streamingMethods`; Auth's methods in `authMethods`, Lease's unary ones in
    /// `leaseMethods`). Others are answered UNIMPLEMENTED as soon as their headers arrive, as
    /// etcd answers a method it does not know.
    var methods: [String: UnaryMethod] {
        authMethods.merging(leaseMethods) { auth, _ in auth }.merging([
            "/etcdserverpb.KV/Range": Self.method(Etcdserverpb_RangeRequest.self) { [self] request, call, respond in
                try read(authorized(RangeRequest(request), call: call), call: call) { outcome in
                    respond {
                        switch outcome {
                        case .success(let response, let position):
                            return Etcdserverpb_RangeResponse(response, header: self.header(position))
                        case .failure(let failure):
                            throw Self.rpcError(failure)
                        }
                    }
                }
            },
            Self.putPath: putMethod,
            "/etcdserverpb.KV/DeleteRange": Self.method(Etcdserverpb_DeleteRangeRequest.self) { [self] request, call, respond in
                try write(.deleteRange(DeleteRangeRequest(request)), call: call) { outcome in
                    respond {
                        let (result, position) = try Self.unwrap(outcome)
                        guard case .deleteRange(let response) = result else { throw Self.unexpected(result) }
                        return Etcdserverpb_DeleteRangeResponse(response, header: self.header(position))
                    }
                }
            },
            "/etcdserverpb.KV/Txn": Self.method(Etcdserverpb_TxnRequest.self) { [self] request, call, respond in
                try write(.txn(try EtcdConversions.txn(request)), call: call) { outcome in
                    respond {
                        let (result, position) = try Self.unwrap(outcome)
                        guard case .txn(let response) = result else { throw Self.unexpected(result) }
                        return Etcdserverpb_TxnResponse(response, header: self.header(position))
                    }
                }
            },
            "/etcdserverpb.KV/Compact": Self.method(Etcdserverpb_CompactionRequest.self) { [self] request, call, respond in
                // Through the log like any write, so every replica forgets the same history
                // at the same point of its command sequence. `physical` changes nothing:
                // compaction is done when the command is applied.
                let compaction = CompactionRequest(revision: request.revision, physical: request.physical)
                try write(.compact(compaction), call: call) { outcome in
                    respond {
                        let (result, position) = try Self.unwrap(outcome)
                        guard case .compact(let response) = result else { throw Self.unexpected(result) }
                        var out = Etcdserverpb_CompactionResponse()
                        var answered = position
                        answered.revision = response.revision
                        out.header = self.header(answered)
                        return out
                    }
                }
            },
            Self.hashKVPath: hashKVMethod,
            Self.historyPath: historyMethod,
            "/etcdserverpb.Maintenance/Status": Self.method(Etcdserverpb_StatusRequest.self) { [self] _, _, respond in
                status { status in respond { self.statusResponse(status) } }
            },
            Self.alarmPath: alarmMethod,
            "/etcdserverpb.Cluster/MemberList": Self.method(Etcdserverpb_MemberListRequest.self) { [self] _, _, respond in
                status { status in respond { self.memberListResponse(status) } }
            },
        ]) { _, own in own }
    }

    func header(_ status: ReplicaStatus) -> Etcdserverpb_ResponseHeader {
        header(ReplicaPosition(revision: status.revision, leader: status.leader, ballotRound: status.ballotRound))
    }

    func statusResponse(_ status: ReplicaStatus) -> Etcdserverpb_StatusResponse {
        var out = Etcdserverpb_StatusResponse()
        out.header = header(status)
        out.version = SynodVersion.etcdCompatible
        // What the space quota measures (`ReplicaRuntime+Quota.swift`): the store's logical
        // size with its retained history, which compaction reduces at once.
        out.dbSize = Int64(status.storeBytes)
        out.dbSizeInUse = Int64(status.storeBytes)
        out.leader = UInt64(status.leader ?? 0)
        out.raftIndex = status.chosenThrough
        out.raftTerm = status.ballotRound
        out.raftAppliedIndex = status.appliedThrough
        if status.isDown { out.errors = ["replica is recovering from a failure"] }
        // etcd lists every active alarm in the text form of its AlarmMember message.
        out.errors += status.alarms.map(\.description)
        return out
    }

    func memberListResponse(_ status: ReplicaStatus) -> Etcdserverpb_MemberListResponse {
        var out = Etcdserverpb_MemberListResponse()
        out.header = header(status)
        out.members = configuration.peers.keys.sorted().map { id in
            var member = Etcdserverpb_Member()
            member.id = UInt64(id)
            member.name = "synod-\(id)"
            member.peerUrls = ["\(configuration.peerTLS == nil ? "http" : "https")://\(configuration.peers[id]!)"]
            if let client = configuration.clientEndpoints[id] ?? (id == configuration.replicaID ? configuration.listenClient : nil) {
                member.clientUrls = ["\(configuration.clientTLS == nil ? "http" : "https")://\(client)"]
            }
            return member
        }
        return out
    }

    /// A gRPC method from a typed body: decodes the request (a bad message is INTERNAL, as
    /// in grpc-go), runs `body`, and encodes whatever `respond` builds. The response is
    /// built on the connection's event loop, not on the caller's (the replica loop's) thread.
    /// grpc-go's answer to a request message that does not unmarshal.
    static func undecodable(_ messageName: String, _ error: any Error) -> GRPCStatus {
        GRPCStatus(
            code: GRPCStatus.internalError,
            message: "grpc: error unmarshalling request: cannot decode \(messageName): \(error)")
    }

    /// The request `decode` reads from the call's payload; nil after failing the call with
    /// `undecodable` when it does not decode.
    static func decoded<Request>(
        _ call: UnaryCall, _ messageName: String, _ decode: ([UInt8]) throws -> Request
    ) -> Request? {
        do {
            return try decode(call.payload)
        } catch {
            call.responder.fail(undecodable(messageName, error))
            return nil
        }
    }

    static func method<Request: SwiftProtobuf.Message, Response: SwiftProtobuf.Message>(
        _ requestType: Request.Type,
        _ body: @escaping @Sendable (
            Request, UnaryCall, _ respond: @escaping @Sendable (@escaping @Sendable () throws -> Response) -> Void
        ) throws -> Void
    ) -> UnaryMethod {
        { call in
            guard let request = decoded(call, Request.protoMessageName, { try Request(serializedBytes: $0) }) else { return }
            let respond: @Sendable (@escaping @Sendable () throws -> Response) -> Void = { build in
                call.responder.respond {
                    do {
                        return .success(try build().serializedBytes())
                    } catch {
                        return .failure(grpcStatus(error))
                    }
                }
            }
            do {
                try body(request, call, respond)
            } catch {
                call.responder.fail(grpcStatus(error))
            }
        }
    }

    static func grpcStatus(_ error: any Error) -> GRPCStatus {
        if let error = error as? RPCError { return GRPCStatus(code: error.code.rawValue, message: error.message) }
        return GRPCStatus(code: GRPCStatus.internalError, message: "synod: \(error)")
    }
}

public enum SynodVersion {
    /// What Status reports: etcdctl checks the major.minor of the API it speaks.
    public static let etcdCompatible = "3.4.0"
    public static let synod = "0.1.0"
}
