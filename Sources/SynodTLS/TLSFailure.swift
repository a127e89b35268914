import NIOSSL

/// TLS errors in words: BoringSSL's reason codes say what failed, not what to do about it.
public enum TLSFailure {
    /// What BoringSSL's reason means at a handshake, with the reason kept in parentheses.
    static let meanings: [(reason: String, meaning: String)] = [
        ("CERTIFICATE_VERIFY_FAILED", "the other side's certificate is not signed by a trusted CA or has expired"),
        ("PEER_DID_NOT_RETURN_A_CERTIFICATE", "the other side sent no certificate, and one is required"),
        ("CERTIFICATE_REQUIRED", "this side sent no certificate, and the other side requires one"),
        ("UNKNOWN_CA", "the other side does not trust the CA of this side's certificate"),
        ("BAD_CERTIFICATE", "the other side refused this side's certificate"),
        ("DECRYPT_ERROR", "the other side could not verify this side's certificate with its CA"),
        ("CERTIFICATE_EXPIRED", "the other side says this side's certificate has expired"),
        ("WRONG_VERSION_NUMBER", "the other side does not speak TLS (is it running without TLS?)"),
        ("HTTP_REQUEST", "the other side sent plaintext, not TLS"),
        ("KEY_VALUES_MISMATCH", "the private key does not belong to the certificate"),
        ("failedToValidateHostname", "the other side's certificate does not name the host dialled"),
        ("NO_APPLICATION_PROTOCOL", "no common application protocol (ALPN)"),
    ]

    /// One line for a TLS error, e.g. `the other side's certificate is not signed by a trusted
    /// CA or has expired (CERTIFICATE_VERIFY_FAILED)`; other errors as they describe themselves.
    public static func describe(_ error: any Error) -> String {
        let text = "\(error)"
        for (reason, meaning) in meanings where text.contains(reason) {
            return "\(meaning) (\(reason))"
        }
        return text
    }

    /// Whether `error` is the TLS layer refusing the connection (a failed handshake or a TLS
    /// alert), as opposed to the socket going away.
    public static func isRefusal(_ error: any Error) -> Bool {
        if let error = error as? NIOSSLError {
            switch error {
            case .handshakeFailed: return true
            default: return false
            }
        }
        if error is BoringSSLError { return true }
        if error is NIOSSLExtraError { return true }
        return false
    }
}
