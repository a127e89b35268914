import Foundation

/// Probes of TCP ports on 127.0.0.1.
public enum LoopbackPort {
    /// Whether a listener could bind 127.0.0.1:`port` now, with SO_REUSEADDR as the servers
    /// bind (so a port held only by connections in TIME_WAIT counts as free, while a port
    /// with a listener — even one that also set SO_REUSEADDR — does not). The probe socket
    /// is closed before returning.
    public static func isFree(_ port: Int) -> Bool {
        precondition((1...65_535).contains(port), "port \(port) is out of range")
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { return false }
        defer { close(descriptor) }
        var one: Int32 = 1
        setsockopt(descriptor, SOL_SOCKET, SO_REUSEADDR, &one, socklen_t(MemoryLayout<Int32>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let bound = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                bind(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        return bound == 0
    }
}
