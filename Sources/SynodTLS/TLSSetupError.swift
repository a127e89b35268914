/// Why TLS could not be set up: a missing, unreadable or malformed file, a key that does not
/// belong to its certificate, or flags that do not go together. The description is the whole
/// message, one line naming the flag and the file (`synod serve` prints it and exits non-zero).
public struct TLSSetupError: Error, Hashable, Sendable, CustomStringConvertible {
    public let description: String

    public init(_ description: String) {
        self.description = description
    }
}
