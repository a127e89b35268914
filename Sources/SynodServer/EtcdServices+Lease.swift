import EtcdAPI
import Foundation
import GRPCCore
import KVStore
import ReplicaRuntime
import Synchronization
import UnaryGRPC

/// etcd's Lease service. Grant and revoke are writes through the log (so is the leader's
/// expiry, `ReplicaRuntime+Leases.swift`); keep-alives and time-to-live go to the leader
/// without the log; `LeaseLeases` and the keys of `LeaseTimeToLive` come from the contacted
/// replica's store, as etcd serves them from its local lessor.
///
/// With auth enabled every call needs a user (a token or a client certificate); a revoke, and
/// a put that attaches a key, also need write permission on every key the lease holds,
/// checked when applied (`KVStore.admit`, etcd's `checkLeasePuts`).
extension EtcdFrontEnd {
    static let leaseKeepAlivePath = "/etcdserverpb.Lease/LeaseKeepAlive"
    /// Keep-alives one stream may have waiting for the leader, at most; a client that sends
    /// more without reading answers is cut off with "too many requests".
    static let keepAlivesPerStreamMax = 1_024

    /// etcd's minimum TTL: 1.5 election timeouts, rounded up to whole seconds (etcd's
    /// `minLeaseTTL`), so that a leader change cannot expire a lease before a client had
    /// the chance to reach the new leader. A grant asking for less gets this.
    var leaseTTLSecondsMin: Int64 {
        let electionMilliseconds = Int64(configuration.electionTimeoutTicks * configuration.tickMilliseconds)
        return max(1, (3 * electionMilliseconds / 2 + 999) / 1_000)
    }

    var leaseMethods: [String: UnaryMethod] {
        [
            "/etcdserverpb.Lease/LeaseGrant": Self.method(Etcdserverpb_LeaseGrantRequest.self) { [self] request, call, respond in
                let ttlSeconds = max(request.ttl, leaseTTLSecondsMin)
                try write(.lease(.grant(id: request.id, ttlSeconds: ttlSeconds)), call: call) { outcome in
                    respond {
                        let (result, position) = try Self.unwrap(outcome)
                        guard case .lease(let response) = result else { throw Self.unexpected(result) }
                        var out = Etcdserverpb_LeaseGrantResponse()
                        out.header = self.header(position)
                        out.id = response.id
                        out.ttl = response.ttlSeconds
                        return out
                    }
                }
            },
            "/etcdserverpb.Lease/LeaseRevoke": Self.method(Etcdserverpb_LeaseRevokeRequest.self) { [self] request, call, respond in
                try write(.lease(.revoke(id: request.id)), call: call) { outcome in
                    respond {
                        let (result, position) = try Self.unwrap(outcome)
                        guard case .lease = result else { throw Self.unexpected(result) }
                        var out = Etcdserverpb_LeaseRevokeResponse()
                        out.header = self.header(position)
                        return out
                    }
                }
            },
            "/etcdserverpb.Lease/LeaseTimeToLive": Self.method(Etcdserverpb_LeaseTimeToLiveRequest.self) {
                [self] request, call, respond in
                _ = try caller(call.metadata, certificateCommonName: call.clientCertificateCommonName)
                let reply: LeaseReply = { outcome in
                    respond {
                        switch outcome {
                        case .success(let state, let position):
                            return self.timeToLiveResponse(state, withKeys: request.keys, header: self.header(position))
                        case .failure(let failure):
                            throw Self.rpcError(failure)
                        }
                    }
                }
                let event = RuntimeEvent.leaseKeepAlive(lease: request.id, renew: false, deadline: deadline(call), reply: reply)
                if !loop.submit(event) { throw Self.rpcError(.tooManyRequests) }
            },
            "/etcdserverpb.Lease/LeaseLeases": Self.method(Etcdserverpb_LeaseLeasesRequest.self) { [self] _, call, respond in
                _ = try caller(call.metadata, certificateCommonName: call.clientCertificateCommonName)
                let submitted = loop.perform { [self] runtime in
                    let ids = runtime.kv.leaseIDs()
                    let header = header(
                        ReplicaPosition(
                            revision: runtime.kv.revision, leader: runtime.replica?.leader, ballotRound: runtime.headerRound))
                    respond {
                        var out = Etcdserverpb_LeaseLeasesResponse()
                        out.header = header
                        out.leases = ids.map { id in
                            var status = Etcdserverpb_LeaseStatus()
                            status.id = id
                            return status
                        }
                        return out
                    }
                }
                if !submitted { throw Self.rpcError(.tooManyRequests) }
            },
        ]
    }

    /// etcd answers a lease that does not exist with TTL -1 (not an error).
    func timeToLiveResponse(_ state: LeaseState, withKeys: Bool, header: Etcdserverpb_ResponseHeader)
        -> Etcdserverpb_LeaseTimeToLiveResponse
    {
        var out = Etcdserverpb_LeaseTimeToLiveResponse()
        out.header = header
        out.id = state.id
        if let remaining = state.remainingMilliseconds {
            out.ttl = remaining / 1_000
            out.grantedTtl = state.grantedTTLSeconds
            if withKeys { out.keys = state.keys.map { Data($0) } }
        } else {
            out.ttl = -1
        }
        return out
    }

    /// etcd's `Lease/LeaseKeepAlive` (bidirectional): every request renews one lease at the
    /// leader and is answered with its TTL (0: the lease does not exist or ran out). Answers
    /// may come in another order than the requests when several leases share the stream. A
    /// failure (no leader, timeout) ends the stream with etcd's status (UNAVAILABLE), as etcd
    /// does; clientv3 then opens a new one and sends its keep-alives again.
    var leaseKeepAliveMethod: StreamingMethod {
        { [self] call in
            let responder = call.responder
            // The caller is resolved once, when the stream opens (etcd checks the stream's token).
            let refusal: GRPCStatus?
            do {
                _ = try caller(call.metadata, certificateCommonName: call.clientCertificateCommonName)
                refusal = nil
            } catch {
                refusal = Self.grpcStatus(error)
            }
            let waiting = KeepAliveStreamCount()
            let timeout = Duration.milliseconds(configuration.requestTimeoutMilliseconds)
            return StreamingObserver(
                onMessage: { [self] bytes in
                    if let refusal { return responder.finish(refusal) }
                    let request: Etcdserverpb_LeaseKeepAliveRequest
                    do {
                        request = try Etcdserverpb_LeaseKeepAliveRequest(serializedBytes: bytes)
                    } catch {
                        return responder.finish(Self.undecodable("etcdserverpb.LeaseKeepAliveRequest", error))
                    }
                    guard waiting.count.add(1, ordering: .relaxed).newValue <= Self.keepAlivesPerStreamMax else {
                        waiting.count.subtract(1, ordering: .relaxed)
                        return responder.finish(Self.grpcStatus(Self.rpcError(.tooManyRequests)))
                    }
                    let reply: LeaseReply = { [self] outcome in
                        waiting.count.subtract(1, ordering: .relaxed)
                        switch outcome {
                        case .success(let state, let position):
                            var out = Etcdserverpb_LeaseKeepAliveResponse()
                            out.header = header(position)
                            out.id = state.id
                            out.ttl = (state.remainingMilliseconds ?? 0) / 1_000
                            // A full queue drops the answer: the client keeps sending keep-alives.
                            if let encoded: [UInt8] = try? out.serializedBytes() { responder.send(encoded) }
                        case .failure(.tooManyRequests):
                            // clientv3 gives a lease up for good on RESOURCE_EXHAUSTED: drop this
                            // answer instead; its next keep-alive tries again.
                            break
                        case .failure(let failure):
                            responder.finish(Self.grpcStatus(Self.rpcError(failure)))
                        }
                    }
                    let event = RuntimeEvent.leaseKeepAlive(
                        lease: request.id, renew: true, deadline: loop.deadline(after: timeout), reply: reply)
                    if !loop.submit(event) {
                        waiting.count.subtract(1, ordering: .relaxed)
                        responder.finish(Self.grpcStatus(Self.rpcError(.tooManyRequests)))
                    }
                })
        }
    }
}

/// Keep-alives of one stream waiting for an answer.
final class KeepAliveStreamCount: Sendable {
    let count = Atomic<Int>(0)
}
