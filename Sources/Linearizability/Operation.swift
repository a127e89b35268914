/// One client operation as observed from outside the system: when it was called, when (and
/// with what) it returned.
///
/// Times are in any monotonic unit shared by all clients of one history (simulator ticks,
/// nanoseconds). Two operations are concurrent unless one returned strictly before the other
/// was called; equal times count as concurrent (Porcupine orders calls before returns).
///
/// Invariant: `returned == nil` exactly when `output == nil`. Such an operation timed out or
/// its outcome is unknown: it may have taken effect at any moment after `call`, or never.
/// The checker treats it as returning at +∞ and never requires it to be linearized.
public struct Operation<Input, Output> {
    /// Which client issued the operation; used only in reports.
    public var clientID: Int
    public var input: Input
    /// When the client sent the request.
    public var call: UInt64
    /// When the client received the response; `nil` if it never did.
    public var returned: UInt64?
    /// The response; `nil` exactly when `returned` is `nil`.
    public var output: Output?

    public init(clientID: Int, input: Input, call: UInt64, returned: UInt64?, output: Output?) {
        self.clientID = clientID
        self.input = input
        self.call = call
        self.returned = returned
        self.output = output
        validate()
    }

    /// Whether the client saw a response (and so the operation must be linearized).
    public var isObserved: Bool { returned != nil }

    /// Stops on a malformed operation: a history that breaks these rules is a bug in the
    /// recorder, not a linearizability violation.
    func validate() {
        precondition(
            (returned == nil) == (output == nil),
            "Operation of client \(clientID) called at \(call): returned and output must both be set or both be nil"
        )
        if let returned {
            precondition(returned >= call, "Operation of client \(clientID) returned at \(returned) before its call at \(call)")
        }
    }
}

extension Operation: Sendable where Input: Sendable, Output: Sendable {}
extension Operation: Equatable where Input: Equatable, Output: Equatable {}
extension Operation: Hashable where Input: Hashable, Output: Hashable {}
