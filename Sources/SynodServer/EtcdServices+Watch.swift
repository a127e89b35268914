import NIOHPACK
import ReplicaRuntime
import UnaryGRPC

/// etcd's `Watch/Watch` (bidirectional): each inbound WatchRequest is decoded on the
/// connection's event loop and handed to the replica loop's thread, where the `WatchHub`
/// (ReplicaRuntime, shared with the simulator) creates, cancels and feeds watchers from the
/// store; `ServerWatchSink` encodes its responses onto the gRPC stream. `fragment` is accepted and ignored:
/// responses are never fragmented; large batches are split at revision boundaries instead.
extension EtcdFrontEnd {
    static let watchPath = "/etcdserverpb.Watch/Watch"

    var streamingMethods: [String: StreamingMethod] {
        [Self.watchPath: watchMethod, Self.leaseKeepAlivePath: leaseKeepAliveMethod]
    }

    var watchMethod: StreamingMethod {
        { [loop, configuration] call in
            let stream = WatchStream(
                sink: ServerWatchSink(
                    responder: call.responder, clusterID: configuration.clusterID,
                    memberID: UInt64(configuration.replicaID)))
            let token = call.metadata.first(name: Self.tokenHeader)
            let commonName = call.clientCertificateCommonName
            let overloaded = GRPCStatus(code: GRPCStatus.resourceExhausted, message: "etcdserver: too many requests")
            return StreamingObserver(
                onMessage: { bytes in
                    let request: WatchRequest
                    do {
                        request = try WatchRequest.decode(bytes)
                    } catch {
                        call.responder.finish(Self.undecodable("etcdserverpb.WatchRequest", error))
                        loop.perform { _ in loop.watchHub.remove(stream) }
                        return
                    }
                    let submitted = loop.perform { runtime in
                        // etcd checks read permission on the watched range at create (EtcdServices+Auth.swift).
                        if case .create(let create) = request,
                            let reason = Self.watchRefusal(
                                create, token: token, certificateCommonName: commonName, auth: runtime.kv.authState)
                        {
                            loop.watchHub.refuse(create, reason: reason, on: stream, runtime: runtime)
                        } else {
                            loop.watchHub.handle(request, on: stream, runtime: runtime)
                        }
                    }
                    if !submitted {
                        call.responder.finish(overloaded)
                        loop.perform { _ in loop.watchHub.remove(stream) }
                    }
                },
                // etcd keeps the watchers of a half-closed stream running.
                onHalfClose: {},
                onCancel: { _ in
                    // If the loop cannot take it (stopping, or its task queue full) the stream
                    // stays registered, but its responder refuses every send, so the hub
                    // marks it blocked and never feeds it again.
                    loop.perform { _ in loop.watchHub.remove(stream) }
                },
                onWritable: {
                    loop.perform { runtime in loop.watchHub.resume(stream, runtime: runtime) }
                })
        }
    }
}

/// The hub's sink for one gRPC Watch stream: adds this replica's header, encodes, and hands
/// the bytes to the stream's bounded queue.
final class ServerWatchSink: WatchSink, @unchecked Sendable {
    let responder: StreamingResponder
    let clusterID: UInt64
    let memberID: UInt64

    init(responder: StreamingResponder, clusterID: UInt64, memberID: UInt64) {
        self.responder = responder
        self.clusterID = clusterID
        self.memberID = memberID
    }

    func send(_ response: WatchResponse) -> Bool {
        responder.send(WatchResponseMessage(response, clusterID: clusterID, memberID: memberID).encode())
    }

    func close(reason: String) {
        responder.finish(GRPCStatus(code: GRPCStatus.resourceExhausted, message: reason))
    }
}
