extension UnaryCall {
    /// The same call, with its answer also handed to `observer` (on the connection's event
    /// loop, when the response is built, before it is written): a method-table wrapper counts
    /// and times calls with it (`grpc_server_handled_total`) without the method knowing.
    /// Observers compose: an already observed call tells both, the earlier one first.
    public func observingAnswer(
        _ observer: @escaping @Sendable (Result<[UInt8], GRPCStatus>) -> Void
    ) -> UnaryCall {
        var responder = self.responder
        if let earlier = responder.observer {
            responder.observer = { result in
                earlier(result)
                observer(result)
            }
        } else {
            responder.observer = observer
        }
        return UnaryCall(
            path: path, metadata: metadata, payload: payload, timeout: timeout, responder: responder,
            clientCertificateCommonName: clientCertificateCommonName)
    }
}
