import EtcdAPI
import Foundation
import GRPCCore
import KVStore
import Paxos
import Synchronization

/// The etcd v3 API over one replica. Any replica serves any request: writes go through
/// the log (the core forwards them to the leader), linearizable reads through the read
/// index, serializable reads from the local state machine.
final class EtcdFrontEnd: Sendable {
    let loop: ReplicaLoop
    let configuration: ServerConfiguration
    /// Ids for writes that carry no `synod-request-id`: the high bit marks them
    /// untracked (no exactly-once session), the rest only make them unique.
    private let untrackedSession: UInt64
    private let untrackedSequence = Atomic<UInt64>(0)

    /// The metadata header a retrying client uses to make a write exactly-once:
    /// `<client id, 16 hex digits>-<sequence>`.
    static let requestIDHeader = "synod-request-id"

    init(loop: ReplicaLoop, configuration: ServerConfiguration) {
        self.loop = loop
        self.configuration = configuration
        untrackedSession = (UInt64(configuration.replicaID) << 40) ^ (configuration.randomSeed & 0xFF_FFFF_FFFF)
    }

    func header(_ position: LoopSnapshot) -> Etcdserverpb_ResponseHeader {
        var header = Etcdserverpb_ResponseHeader()
        header.clusterID = configuration.clusterID
        header.memberID = UInt64(configuration.replicaID)
        header.revision = position.revision
        header.raftTerm = position.ballotRound
        return header
    }

    func requestID(from metadata: Metadata) throws -> RequestID {
        if let text = metadata[stringValues: Self.requestIDHeader].first(where: { _ in true }) {
            let parts = text.split(separator: "-", omittingEmptySubsequences: false)
            let hexDigits = Set("0123456789abcdef")
            let decimalDigits = Set("0123456789")
            guard parts.count == 2, parts[0].count == 16, parts[0].allSatisfy(hexDigits.contains),
                !parts[1].isEmpty, parts[1].count <= 20, parts[1].allSatisfy(decimalDigits.contains),
                let client = UInt64(parts[0], radix: 16), let sequence = UInt64(parts[1]), sequence >= 1,
                client != 0, client & untrackedBit == 0
            else {
                throw RPCError(
                    code: .invalidArgument,
                    message: "synod: bad \(Self.requestIDHeader) '\(text)'; expected <16 hex digits>-<sequence>")
            }
            return RequestID(clientID: client, sequence: sequence)
        }
        let sequence = untrackedSequence.add(1, ordering: .relaxed).newValue
        return RequestID(clientID: untrackedBit | untrackedSession, sequence: sequence)
    }

    var untrackedBit: UInt64 { RequestID.untrackedBit }

    var deadline: ContinuousClock.Instant {
        ContinuousClock.now.advanced(by: .milliseconds(configuration.requestTimeoutMilliseconds))
    }

    func write(_ operation: WriteOperation, metadata: Metadata) async throws -> (WriteResult, LoopSnapshot) {
        do {
            try KVStore.validate(operation)
        } catch {
            throw EtcdConversions.rpcError(error)
        }
        let command = WriteCommand(requestID: try requestID(from: metadata), operation: operation)
        let encoded = Command(command.encode())
        guard encoded.bytes.count <= min(WireLimits.commandBytesMax, configuration.requestBytesMax + 64 * 1024) else {
            throw RPCError(code: .invalidArgument, message: "etcdserver: request is too large")
        }
        let outcome = await withCheckedContinuation { (continuation: CheckedContinuation<RequestOutcome<WriteResult>, Never>) in
            let accepted = loop.submit(.write(command, encoded, deadline: deadline) { continuation.resume(returning: $0) })
            if !accepted { continuation.resume(returning: .failure(.timedOut)) }
        }
        switch outcome {
        case .success(let result, let position):
            if let error = result.error { throw EtcdConversions.rpcError(error) }
            return (result, position)
        case .failure(let failure):
            throw Self.rpcError(failure)
        }
    }

    func read(_ request: RangeRequest) async throws -> (RangeResponse, LoopSnapshot) {
        if request.key.isEmpty {
            throw RPCError(code: .invalidArgument, message: "etcdserver: key is not provided")
        }
        let serializable = request.serializable || configuration.defaultConsistency == .serializable
        let outcome = await withCheckedContinuation { (continuation: CheckedContinuation<RequestOutcome<RangeResponse>, Never>) in
            let accepted = loop.submit(
                .read(request, serializable: serializable, deadline: deadline) { continuation.resume(returning: $0) })
            if !accepted { continuation.resume(returning: .failure(.timedOut)) }
        }
        switch outcome {
        case .success(let response, let position): return (response, position)
        case .failure(let failure): throw Self.rpcError(failure)
        }
    }

    func status() async -> ReplicaStatus {
        await withCheckedContinuation { continuation in
            let accepted = loop.submit(.status { continuation.resume(returning: $0) })
            if !accepted {
                continuation.resume(
                    returning: ReplicaStatus(
                        revision: 0, leader: nil, ballotRound: 0, chosenThrough: 0, appliedThrough: 0, diskBytes: 0,
                        isDown: true))
            }
        }
    }

    /// etcd's codes and messages (api/v3rpc/rpctypes), so clients retry as with etcd.
    static func rpcError(_ failure: RequestFailure) -> RPCError {
        switch failure {
        case .noLeader: return RPCError(code: .unavailable, message: "etcdserver: no leader")
        case .timedOut: return RPCError(code: .unavailable, message: "etcdserver: request timed out")
        case .recovering:
            return RPCError(code: .unavailable, message: "etcdserver: no leader (replica is recovering from a failure)")
        case .stopping: return RPCError(code: .unavailable, message: "etcdserver: server stopped")
        case .store(let error): return EtcdConversions.rpcError(error)
        }
    }
}

struct KVService: Etcdserverpb_KV.ServiceProtocol {
    let frontEnd: EtcdFrontEnd

    func range(request: ServerRequest<Etcdserverpb_RangeRequest>, context: ServerContext) async throws
        -> ServerResponse<Etcdserverpb_RangeResponse>
    {
        let (response, position) = try await frontEnd.read(EtcdConversions.range(request.message))
        return ServerResponse(message: EtcdConversions.rangeResponse(response, header: frontEnd.header(position)))
    }

    func put(request: ServerRequest<Etcdserverpb_PutRequest>, context: ServerContext) async throws
        -> ServerResponse<Etcdserverpb_PutResponse>
    {
        let put = try EtcdConversions.put(request.message)
        let (result, position) = try await frontEnd.write(.put(put), metadata: request.metadata)
        guard case .put(let response) = result else { throw unexpected(result) }
        return ServerResponse(message: EtcdConversions.putResponse(response, header: frontEnd.header(position)))
    }

    func deleteRange(request: ServerRequest<Etcdserverpb_DeleteRangeRequest>, context: ServerContext) async throws
        -> ServerResponse<Etcdserverpb_DeleteRangeResponse>
    {
        let delete = EtcdConversions.deleteRange(request.message)
        let (result, position) = try await frontEnd.write(.deleteRange(delete), metadata: request.metadata)
        guard case .deleteRange(let response) = result else { throw unexpected(result) }
        return ServerResponse(message: EtcdConversions.deleteResponse(response, header: frontEnd.header(position)))
    }

    func txn(request: ServerRequest<Etcdserverpb_TxnRequest>, context: ServerContext) async throws
        -> ServerResponse<Etcdserverpb_TxnResponse>
    {
        let txn = try EtcdConversions.txn(request.message)
        let (result, position) = try await frontEnd.write(.txn(txn), metadata: request.metadata)
        guard case .txn(let response) = result else { throw unexpected(result) }
        return ServerResponse(message: EtcdConversions.txnResponse(response, header: frontEnd.header(position)))
    }

    func compact(request: ServerRequest<Etcdserverpb_CompactionRequest>, context: ServerContext) async throws
        -> ServerResponse<Etcdserverpb_CompactionResponse>
    {
        // Synod keeps only the latest revision (snapshots bound the disk instead), so every
        // older revision is already compacted.
        throw RPCError(code: .outOfRange, message: "etcdserver: mvcc: required revision has been compacted")
    }

    func unexpected(_ result: WriteResult) -> RPCError {
        RPCError(code: .internalError, message: "synod: unexpected state machine result \(result)")
    }
}

struct MaintenanceService: Etcdserverpb_Maintenance.ServiceProtocol {
    let frontEnd: EtcdFrontEnd

    func status(request: ServerRequest<Etcdserverpb_StatusRequest>, context: ServerContext) async throws
        -> ServerResponse<Etcdserverpb_StatusResponse>
    {
        let status = await frontEnd.status()
        var out = Etcdserverpb_StatusResponse()
        out.header = frontEnd.header(
            LoopSnapshot(revision: status.revision, leader: status.leader, ballotRound: status.ballotRound))
        out.version = SynodVersion.etcdCompatible
        out.dbSize = Int64(status.diskBytes)
        out.dbSizeInUse = Int64(status.diskBytes)
        out.leader = UInt64(status.leader ?? 0)
        out.raftIndex = status.chosenThrough
        out.raftTerm = status.ballotRound
        out.raftAppliedIndex = status.appliedThrough
        if status.isDown { out.errors = ["replica is recovering from a failure"] }
        return ServerResponse(message: out)
    }

    func alarm(request: ServerRequest<Etcdserverpb_AlarmRequest>, context: ServerContext) async throws
        -> ServerResponse<Etcdserverpb_AlarmResponse>
    {
        // Synod bounds its disk by snapshots and compaction: it raises no NOSPACE alarm.
        let status = await frontEnd.status()
        var out = Etcdserverpb_AlarmResponse()
        out.header = frontEnd.header(
            LoopSnapshot(revision: status.revision, leader: status.leader, ballotRound: status.ballotRound))
        return ServerResponse(message: out)
    }
}

struct ClusterService: Etcdserverpb_Cluster.ServiceProtocol {
    let frontEnd: EtcdFrontEnd

    func memberList(request: ServerRequest<Etcdserverpb_MemberListRequest>, context: ServerContext) async throws
        -> ServerResponse<Etcdserverpb_MemberListResponse>
    {
        let configuration = frontEnd.configuration
        let status = await frontEnd.status()
        var out = Etcdserverpb_MemberListResponse()
        out.header = frontEnd.header(
            LoopSnapshot(revision: status.revision, leader: status.leader, ballotRound: status.ballotRound))
        out.members = configuration.peers.keys.sorted().map { id in
            var member = Etcdserverpb_Member()
            member.id = UInt64(id)
            member.name = "synod-\(id)"
            member.peerUrls = ["http://\(configuration.peers[id]!)"]
            if let client = configuration.clientEndpoints[id] ?? (id == configuration.replicaID ? configuration.listenClient : nil) {
                member.clientUrls = ["http://\(client)"]
            }
            return member
        }
        return ServerResponse(message: out)
    }
}

public enum SynodVersion {
    /// What Status reports: etcdctl checks the major.minor of the API it speaks.
    public static let etcdCompatible = "3.4.0"
    public static let synod = "0.1.0"
}
