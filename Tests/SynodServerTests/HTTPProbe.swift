import Foundation

/// A minimal HTTP/1.1 client for the monitoring endpoints: one GET per connection
/// (`Connection: close`), read to the end, on a thread of its own so a slow server never
/// holds a test's cooperative thread. Every socket operation is bounded by `timeout`.
struct HTTPProbe: Sendable {
    struct Response: Sendable, CustomStringConvertible {
        var status: Int
        var headers: [String: String]
        var body: String

        var description: String { "HTTP \(status): \(body.prefix(300))" }
    }

    struct ProbeError: Error, CustomStringConvertible {
        let description: String
    }

    static func get(port: Int, path: String, timeout: Duration = .seconds(5)) async throws -> Response {
        try await withCheckedThrowingContinuation { continuation in
            let thread = Thread {
                continuation.resume(with: Result { try getBlocking(port: port, path: path, timeout: timeout) })
            }
            thread.start()
        }
    }

    /// For a response that does not end (server-sent events): reads until the bytes so far
    /// contain `marker`, then hangs up.
    static func get(port: Int, path: String, until marker: String, timeout: Duration = .seconds(5)) async throws
        -> Response
    {
        try await withCheckedThrowingContinuation { continuation in
            let thread = Thread {
                continuation.resume(
                    with: Result { try getBlocking(port: port, path: path, timeout: timeout, until: marker) })
            }
            thread.start()
        }
    }

    private static func getBlocking(port: Int, path: String, timeout: Duration, until marker: String? = nil) throws
        -> Response
    {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw ProbeError(description: "socket() failed: errno \(errno)") }
        defer { close(descriptor) }
        var limit = timeval(tv_sec: Int(timeout.components.seconds), tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(descriptor, SOL_SOCKET, SO_SNDTIMEO, &limit, socklen_t(MemoryLayout<timeval>.size))
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else { throw ProbeError(description: "connect to 127.0.0.1:\(port) failed: errno \(errno)") }
        let request = Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1:\(port)\r\nConnection: close\r\n\r\n".utf8)
        let sent = request.withUnsafeBytes { send(descriptor, $0.baseAddress, $0.count, 0) }
        guard sent == request.count else { throw ProbeError(description: "send to port \(port) failed: errno \(errno)") }
        var received: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 64 << 10)
        let deadline = ContinuousClock.now.advanced(by: timeout)
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
            if count == 0 { break }
            guard count > 0 else {
                throw ProbeError(description: "GET \(path) on port \(port): no complete answer within \(timeout) (errno \(errno))")
            }
            received += buffer[0..<count]
            if let marker, String(decoding: received, as: UTF8.self).contains(marker) { break }
            guard received.count <= 16 << 20 else { throw ProbeError(description: "GET \(path): answer over 16 MiB") }
            guard ContinuousClock.now < deadline else {
                throw ProbeError(description: "GET \(path) on port \(port): answer not finished within \(timeout)")
            }
        }
        return try parse(received, path: path)
    }

    static func parse(_ bytes: [UInt8], path: String) throws -> Response {
        let text = String(decoding: bytes, as: UTF8.self)
        guard let split = text.range(of: "\r\n\r\n") else {
            throw ProbeError(description: "GET \(path): no header end in \(text.prefix(200))")
        }
        let lines = text[..<split.lowerBound].components(separatedBy: "\r\n")
        let statusParts = lines[0].split(separator: " ")
        guard statusParts.count >= 2, let status = Int(statusParts[1]) else {
            throw ProbeError(description: "GET \(path): bad status line '\(lines[0])'")
        }
        var headers: [String: String] = [:]
        for line in lines.dropFirst() {
            guard let colon = line.firstIndex(of: ":") else { continue }
            headers[line[..<colon].lowercased()] = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
        }
        var body = String(text[split.upperBound...])
        if headers["transfer-encoding"] == "chunked" { body = dechunk(body) }
        return Response(status: status, headers: headers, body: body)
    }

    static func dechunk(_ text: String) -> String {
        var rest = Substring(text)
        var out = ""
        while let lineEnd = rest.range(of: "\r\n"), let size = Int(rest[..<lineEnd.lowerBound], radix: 16), size > 0 {
            let start = lineEnd.upperBound
            let utf8 = rest.utf8
            guard let end = utf8.index(start, offsetBy: size, limitedBy: utf8.endIndex) else { break }
            out += String(rest[start..<end])
            rest = rest[end...].dropFirst(2)
        }
        return out
    }
}

/// Checks Prometheus text format 0.0.4 line by line: every line is empty, a comment, or
/// `name{label="value",…} value`. Returns the samples and the lines that broke the format.
enum PrometheusText {
    struct Sample: Sendable {
        var name: String
        var labels: [String: String]
        var value: Double
    }

    static func parse(_ text: String) -> (samples: [Sample], bad: [String]) {
        var samples: [Sample] = []
        var bad: [String] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: true) {
            if line.hasPrefix("#") { continue }
            if let sample = parseSample(Substring(line)) { samples.append(sample) } else { bad.append(String(line)) }
        }
        return (samples, bad)
    }

    static func parseSample(_ line: Substring) -> Sample? {
        var index = line.startIndex
        func isNameCharacter(_ c: Character, first: Bool) -> Bool {
            c == "_" || c == ":" || (c.isASCII && c.isLetter) || (!first && c.isASCII && c.isNumber)
        }
        while index < line.endIndex, isNameCharacter(line[index], first: index == line.startIndex) {
            index = line.index(after: index)
        }
        let name = String(line[line.startIndex..<index])
        guard !name.isEmpty, index < line.endIndex else { return nil }
        var labels: [String: String] = [:]
        if line[index] == "{" {
            index = line.index(after: index)
            while index < line.endIndex, line[index] != "}" {
                let keyStart = index
                while index < line.endIndex, isNameCharacter(line[index], first: index == keyStart) {
                    index = line.index(after: index)
                }
                let key = String(line[keyStart..<index])
                guard !key.isEmpty, index < line.endIndex, line[index] == "=" else { return nil }
                index = line.index(after: index)
                guard index < line.endIndex, line[index] == "\"" else { return nil }
                index = line.index(after: index)
                var value = ""
                while index < line.endIndex, line[index] != "\"" {
                    if line[index] == "\\" { index = line.index(after: index) }
                    guard index < line.endIndex else { return nil }
                    value.append(line[index])
                    index = line.index(after: index)
                }
                guard index < line.endIndex else { return nil }
                index = line.index(after: index)
                labels[key] = value
                if index < line.endIndex, line[index] == "," { index = line.index(after: index) }
            }
            guard index < line.endIndex else { return nil }
            index = line.index(after: index)
        }
        guard index < line.endIndex, line[index] == " " else { return nil }
        let fields = line[line.index(after: index)...].split(separator: " ")
        guard fields.count == 1 || fields.count == 2, let value = Double(String(fields[0])) else { return nil }
        return Sample(name: name, labels: labels, value: value)
    }

    /// The sum of every sample named `name` whose labels include `labels`.
    static func total(_ samples: [Sample], _ name: String, labels: [String: String] = [:]) -> Double {
        samples.filter { sample in
            sample.name == name && labels.allSatisfy { sample.labels[$0.key] == $0.value }
        }.reduce(0) { $0 + $1.value }
    }
}
