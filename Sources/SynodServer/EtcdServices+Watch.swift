import ReplicaRuntime
import UnaryGRPC

/// etcd's `Watch/Watch` (bidirectional): each inbound WatchRequest is decoded on the
/// connection's event loop and handed to the replica loop's thread, where the `WatchHub`
/// creates, cancels and feeds watchers from the store. `fragment` is accepted and ignored:
/// responses are never fragmented; large batches are split at revision boundaries instead.
extension EtcdFrontEnd {
    static let watchPath = "/etcdserverpb.Watch/Watch"

    var streamingMethods: [String: StreamingMethod] {
        [Self.watchPath: watchMethod, Self.leaseKeepAlivePath: leaseKeepAliveMethod]
    }

    var watchMethod: StreamingMethod {
        { [loop] call in
            let stream = WatchStream(responder: call.responder)
            let overloaded = GRPCStatus(code: GRPCStatus.resourceExhausted, message: "etcdserver: too many requests")
            return StreamingObserver(
                onMessage: { bytes in
                    let request: WatchRequestMessage
                    do {
                        request = try WatchRequestMessage.decode(bytes)
                    } catch {
                        call.responder.finish(
                            GRPCStatus(
                                code: GRPCStatus.internalError,
                                message: "grpc: error unmarshalling request: cannot decode etcdserverpb.WatchRequest: \(error)"))
                        loop.perform { _ in loop.watchHub.remove(stream) }
                        return
                    }
                    let submitted = loop.perform { runtime in loop.watchHub.handle(request, on: stream, runtime: runtime) }
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
