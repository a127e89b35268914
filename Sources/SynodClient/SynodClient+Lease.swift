import EtcdAPI
import EtcdKV
import Foundation
import GRPCCore
import KVStore

/// A lease granted by the cluster (etcd `LeaseGrant`).
public struct SynodLease: Sendable, Hashable, CustomStringConvertible {
    public var id: Int64
    /// The TTL the cluster granted (it raises a smaller request to its minimum).
    public var ttlSeconds: Int64

    public init(id: Int64, ttlSeconds: Int64) {
        self.id = id
        self.ttlSeconds = ttlSeconds
    }

    /// The id in hex, as etcdctl prints it.
    public var description: String { String(id, radix: 16) }
}

/// etcd `LeaseTimeToLive`: nil `remainingSeconds` when the lease does not exist (expired or revoked).
public struct SynodLeaseTimeToLive: Sendable, Hashable {
    public var id: Int64
    public var remainingSeconds: Int64?
    public var grantedTTLSeconds: Int64
    public var keys: [[UInt8]]
}

/// A held lock (`SynodClient.lock`): its key and fencing token.
public struct SynodLock: Sendable, Hashable {
    /// `<name>/<lease id in hex>`, as etcd's `concurrency.Mutex` names it.
    public var key: [UInt8]
    /// The lock key's create revision: every later holder of the same lock gets a higher
    /// one, so a resource that remembers the highest token it saw can refuse a stale holder
    /// (one paused past its lease's TTL). Pass it with every write the lock protects.
    public var fencingToken: Int64
    public var lease: SynodLease
}

extension SynodClient {
    /// Grants a lease of `ttlSeconds` (etcd `LeaseGrant`); `id` 0 lets the cluster pick one.
    public func grantLease(ttlSeconds: Int64, id: Int64 = 0) async throws(SynodClientError) -> SynodLease {
        var message = Etcdserverpb_LeaseGrantRequest()
        message.ttl = ttlSeconds
        message.id = id
        let request = message
        let response = try await performWrite { connection, metadata, callOptions in
            let bytes = try await connection.rawUnary(
                service: "etcdserverpb.Lease", method: "LeaseGrant", request: try request.serializedBytes(),
                metadata: metadata, options: callOptions)
            let message = try Etcdserverpb_LeaseGrantResponse(serializedBytes: bytes)
            return (SynodLease(id: message.id, ttlSeconds: message.ttl), SynodResponseHeader(message.header))
        }
        return response.body
    }

    /// Revokes a lease, deleting every key attached to it (etcd `LeaseRevoke`).
    public func revokeLease(_ lease: SynodLease) async throws(SynodClientError) {
        var message = Etcdserverpb_LeaseRevokeRequest()
        message.id = lease.id
        let request = message
        _ = try await performWrite { connection, metadata, callOptions in
            let bytes = try await connection.rawUnary(
                service: "etcdserverpb.Lease", method: "LeaseRevoke", request: try request.serializedBytes(),
                metadata: metadata, options: callOptions)
            let message = try Etcdserverpb_LeaseRevokeResponse(serializedBytes: bytes)
            return ((), SynodResponseHeader(message.header))
        }
    }

    /// The lease's remaining TTL, as the leader sees it, and its keys (etcd `LeaseTimeToLive`).
    public func leaseTimeToLive(_ lease: SynodLease, keys: Bool = false) async throws(SynodClientError)
        -> SynodLeaseTimeToLive
    {
        var message = Etcdserverpb_LeaseTimeToLiveRequest()
        message.id = lease.id
        message.keys = keys
        let request = message
        let response = try await perform { connection, _, callOptions in
            let bytes = try await connection.rawUnary(
                service: "etcdserverpb.Lease", method: "LeaseTimeToLive", request: try request.serializedBytes(),
                options: callOptions)
            let message = try Etcdserverpb_LeaseTimeToLiveResponse(serializedBytes: bytes)
            let body = SynodLeaseTimeToLive(
                id: message.id, remainingSeconds: message.ttl < 0 ? nil : message.ttl,
                grantedTTLSeconds: message.grantedTtl, keys: message.keys.map { Array($0) })
            return (body, SynodResponseHeader(message.header))
        }
        return response.body
    }

    /// Keeps `lease` alive until the task is cancelled: a keep-alive every third of the TTL over
    /// etcd's `LeaseKeepAlive` stream, reopened on another endpoint when the connection fails.
    /// The task ends with `SynodClientError.rejected(code: .notFound, …)` once the lease is gone
    /// (expired or revoked): whatever it protected is lost, as with etcd's session `Done()`.
    public func keepAlive(_ lease: SynodLease) -> Task<Void, any Error> {
        Task {
            var request = Etcdserverpb_LeaseKeepAliveRequest()
            request.id = lease.id
            let encoded: [UInt8] = try request.serializedBytes()
            let interval = Duration.milliseconds(max(100, lease.ttlSeconds * 1_000 / 3))
            var index = preferredIndex
            while !Task.isCancelled {
                let endpoint = endpoints[index]
                let connection = try self.connection(at: index)
                let (requests, sink) = AsyncStream.makeStream(of: [UInt8].self, bufferingPolicy: .bufferingNewest(4))
                let sender = Task {
                    while !Task.isCancelled {
                        sink.yield(encoded)
                        try? await Task.sleep(for: interval)
                    }
                    sink.finish()
                }
                do {
                    try await withTaskCancellationHandler {
                        try await connection.rawBidirectional(
                            service: "etcdserverpb.Lease", method: "LeaseKeepAlive", requests: requests
                        ) { bytes in
                            let response = try Etcdserverpb_LeaseKeepAliveResponse(serializedBytes: bytes)
                            if response.ttl <= 0 {
                                throw SynodClientError.rejected(
                                    code: .notFound, message: "lease \(lease) expired or was revoked", endpoint: endpoint)
                            }
                        }
                    } onCancel: {
                        sender.cancel()
                        sink.finish()
                    }
                } catch let error as SynodClientError {
                    sender.cancel()
                    throw error
                } catch {
                    // The stream broke (no leader, a replica down): try the next endpoint soon.
                    sender.cancel()
                    if Task.isCancelled { return }
                    index = (index + 1) % endpoints.count
                    try? await Task.sleep(for: .milliseconds(200))
                    continue
                }
                sender.cancel()
                if Task.isCancelled { return }
                index = (index + 1) % endpoints.count
            }
        }
    }

    /// Puts `key` attached to `lease`: it is deleted when the lease expires or is revoked.
    @discardableResult
    public func put(
        key: some SynodBytes, value: some SynodBytes, lease: SynodLease, prevKV: Bool = false
    ) async throws(SynodClientError) -> SynodResponse<PutResponse> {
        let request = Etcdserverpb_PutRequest(
            PutRequest(key: key.synodBytes, value: value.synodBytes, prevKV: prevKV, lease: lease.id))
        return try await performWrite { connection, metadata, callOptions in
            let message = try await connection.kv.put(request, metadata: metadata, options: callOptions)
            return (PutResponse(message), SynodResponseHeader(message.header))
        }
    }

    /// Acquires the lock `name` with `lease` (etcd's `concurrency.Mutex` recipe, so etcd
    /// clients and `etcdctl lock` contend for the same lock): waits until every earlier
    /// contender's key is gone. Keep the lease alive while holding the lock (`keepAlive`),
    /// and fence every protected write with `fencingToken`: a lease lock alone is not mutual
    /// exclusion, since a holder paused past its TTL still believes it holds the lock.
    public func lock(_ name: String, lease: SynodLease) async throws(SynodClientError) -> SynodLock {
        let prefix = Array((name + "/").utf8)
        let key = prefix + Array(String(lease.id, radix: 16).utf8)
        let ownersFirst = RequestOp.range(
            RangeRequest(key: prefix, rangeEnd: KVBytes.prefixRangeEnd(prefix), limit: 1, sortOrder: .ascend, sortTarget: .create))
        let response = try await txn(
            compare: [Compare(key: key, result: .equal, target: .createRevision(0))],
            success: [.put(PutRequest(key: key, value: [], lease: lease.id)), ownersFirst],
            failure: [.range(RangeRequest(key: key)), ownersFirst])
        var token = response.header.revision
        if !response.succeeded {
            guard case .range(let mine)? = response.responses.first, let existing = mine.kvs.first else {
                throw .unexpectedResponse("lock key \(KVBytes.describe(key)) vanished")
            }
            token = existing.createRevision
        }
        // Wait until no key of the lock was created before ours (etcd's `waitDeletes`).
        while true {
            let older = try await range(
                RangeRequest(
                    key: prefix, rangeEnd: KVBytes.prefixRangeEnd(prefix), limit: 1, sortOrder: .descend,
                    sortTarget: .create, maxCreateRevision: token - 1))
            guard let blocker = older.kvs.first else { break }
            do {
                for try await event in watch(key: blocker.key, startRevision: older.header.revision + 1)
                where event.type == .delete {
                    break
                }
            } catch {
                // The watch broke: look again.
                try? await Task.sleep(for: .milliseconds(100))
            }
        }
        return SynodLock(key: key, fencingToken: token, lease: lease)
    }

    /// Releases a lock (deletes its key).
    public func unlock(_ lock: SynodLock) async throws(SynodClientError) {
        _ = try await delete(key: lock.key)
    }
}
