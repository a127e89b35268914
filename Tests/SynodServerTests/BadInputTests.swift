import EtcdAPI
import Foundation
import GRPCCore
import Testing

extension SynodProcessTests {
    /// Runs `body` against a fresh cluster (started with `extraArguments`) once a write
    /// through r1 succeeds and every replica answers a read.
    static func withWritableCluster(
        name: String, replicas: Int, extraArguments: [String] = [],
        _ body: (LocalCluster, ClusterConnections) async throws -> Void
    ) async throws {
        try await LocalCluster.with(name: name, replicas: replicas, extraArguments: extraArguments) { cluster in
            try await ClusterConnections.with(ports: cluster.replicas.map(\.clientPort)) { connections in
                guard await connections.awaitWritable(timeout: .seconds(30)) else {
                    cluster.fail("no write succeeded within 30 s of starting \(replicas) replicas")
                    return
                }
                try await body(cluster, connections)
            }
        }
    }

    @Test("a value over 1.5 MiB and an empty key get etcd's InvalidArgument errors", .timeLimit(.minutes(10)))
    func oversizedValuesAndEmptyKeys() async throws {
        try await Self.withWritableCluster(name: "bad-values", replicas: 1) { cluster, connections in
            await Self.checkOversizedValues(connections.replica(1), cluster: cluster)
            await Self.checkEmptyKeys(connections.replica(1), cluster: cluster)
        }
    }

    @Test("a 3 MiB request gets InvalidArgument 'request is too large', not a reset stream", .timeLimit(.minutes(10)))
    func requestOverTheMessageLimit() async throws {
        try await Self.withWritableCluster(name: "bad-message", replicas: 1) { cluster, connections in
            let connection = connections.replica(1)
            // Over etcd's 1.5 MiB limit but under the gRPC transport's own bound, so Synod's
            // check answers (the transport resets the stream instead, which clients would
            // read as UNAVAILABLE and retry elsewhere).
            let farOver = String(repeating: "y", count: 3 * 1024 * 1024)
            for attempt in 1...3 {
                await Self.expectRPCError("a put of a 3 MiB value (attempt \(attempt))", code: .invalidArgument, cluster: cluster) {
                    try await connection.put("bad/huge", farOver, timeout: .seconds(10))
                }
            }
            do {
                let huge = try await connection.value("bad/huge")
                cluster.expect(huge == nil, "the refused 3 MiB put left bad/huge with \(huge?.count ?? 0) bytes")
            } catch {
                cluster.fail("get bad/huge failed after the refused puts: \(describe(error))")
            }
        }
    }

    @Test("a malformed synod-request-id header gets InvalidArgument and the write is not applied", .timeLimit(.minutes(10)))
    func malformedRequestIDs() async throws {
        try await Self.withWritableCluster(name: "bad-request-id", replicas: 1) { cluster, connections in
            await Self.checkMalformedRequestIDs(connections.replica(1), cluster: cluster)
        }
    }

    @Test("a retried request id is applied once; an older sequence is refused as stale", .timeLimit(.minutes(10)))
    func retriedRequestIDs() async throws {
        try await Self.withWritableCluster(name: "request-id", replicas: 1) { cluster, connections in
            await Self.checkExactlyOnce(connections.replica(1), cluster: cluster)
        }
    }

    @Test("garbage on a peer port closes that connection only: the replica keeps serving", .timeLimit(.minutes(10)))
    func garbageOnThePeerPort() async throws {
        try await Self.withWritableCluster(name: "peer-garbage", replicas: 3) { cluster, connections in
            let r1 = connections.replica(1)
            try await Self.sendGarbageToPeerPort(cluster.replica(1), cluster: cluster)
            // r1 keeps serving: its process lives, and writes through it commit.
            cluster.expect(
                cluster.replica(1).isRunning,
                "r1 exited after garbage on its peer port: \(cluster.replica(1).terminationDescription ?? "?")")
            var lastError = "none"
            let written = await eventually(timeout: .seconds(10), interval: .milliseconds(100)) {
                do {
                    _ = try await r1.put("bad/after-garbage", "ok", timeout: .seconds(2))
                    return true
                } catch {
                    lastError = describe(error)
                    return false
                }
            }
            cluster.expect(written, "r1 takes no writes after garbage on its peer port: \(lastError)")
            let read = await readWithRetries(connections.replica(2), "bad/after-garbage")
            cluster.expect(read.isValue("ok"), "r2 reads bad/after-garbage = \(read.shown)")
            let log = cluster.replica(1).log()
            let rejected = log.components(separatedBy: "rejected").count - 1
            cluster.expect(rejected >= 20, "r1 logged \(rejected) rejected peer connections")
            // The envelopes got past a good hello, so the Paxos decoder itself refused them.
            let decodeRejections = log.components(separatedBy: "does not decode").count - 1
            cluster.expect(decodeRejections >= 9, "r1 logged \(decodeRejections) undecodable messages, expected at least 9")
        }
    }

    @Test("synod serve with a bad flag exits non-zero with one line naming the problem", .timeLimit(.minutes(10)))
    func badFlags() async throws {
        try await Self.checkBadFlags()
    }

    /// Expects `body` to fail with `code` and, if given, exactly `message`.
    static func expectRPCError<T>(
        _ what: String, code: RPCError.Code, message: String? = nil, cluster: LocalCluster,
        _ body: () async throws -> T
    ) async {
        do {
            _ = try await body()
            cluster.fail("\(what) succeeded; expected \(code)")
        } catch let error as RPCError {
            cluster.expect(error.code == code, "\(what) failed with \(error.code) (\(error.message)); expected \(code)")
            if let message {
                cluster.expect(error.message == message, "\(what) failed with message \"\(error.message)\"; expected \"\(message)\"")
            }
        } catch {
            cluster.fail("\(what) failed with \(error); expected an RPCError \(code)")
        }
    }

    static func checkOversizedValues(_ connection: ReplicaConnection, cluster: LocalCluster) async {
        // Just over etcd's 1.5 MiB: the state machine's limit, etcd's code and message.
        let overLimit = String(repeating: "x", count: 1_572_864 + 1)
        await expectRPCError(
            "a put of a 1.5 MiB + 1 byte value", code: .invalidArgument, message: "etcdserver: request is too large",
            cluster: cluster
        ) {
            try await connection.put("bad/large", overLimit, timeout: .seconds(10))
        }
        // A large value within the limit is fine, and the refused one took no effect.
        do {
            let refused = try await connection.value("bad/large")
            cluster.expect(refused == nil, "the refused put left bad/large with \(refused?.count ?? 0) bytes")
            let large = String(repeating: "z", count: 1024 * 1024)
            _ = try await connection.put("bad/large", large, timeout: .seconds(10))
            let read = try await connection.value("bad/large", timeout: .seconds(10))
            cluster.expect(read == large, "a 1 MiB value reads back as \(read?.count ?? 0) bytes")
        } catch {
            cluster.fail("a put or get of a 1 MiB value failed: \(describe(error))")
        }
    }

    static func checkEmptyKeys(_ connection: ReplicaConnection, cluster: LocalCluster) async {
        await expectRPCError(
            "a put with an empty key", code: .invalidArgument, message: "etcdserver: key is not provided",
            cluster: cluster
        ) {
            try await connection.put("", "value")
        }
        await expectRPCError(
            "a get with an empty key", code: .invalidArgument, message: "etcdserver: key is not provided",
            cluster: cluster
        ) {
            try await connection.get("")
        }
    }

    static func checkMalformedRequestIDs(_ connection: ReplicaConnection, cluster: LocalCluster) async {
        let malformed = [
            "nonsense", "0123456789abcdef", "0123456789abcdef-", "0123456789abcdef-x", "0123456789abcde-1",
            "0123456789abcdefa-1", "0000000000000000-1", "8000000000000001-1", "0123456789abcdeg-1", "-1",
            "0123456789abcdef-1-2", "0123456789abcdef--1", "0123456789abcdef-1-", "0123456789abcdef-+1",
            "+123456789abcdef-1",
        ]
        for header in malformed {
            await expectRPCError("a put with synod-request-id '\(header)'", code: .invalidArgument, cluster: cluster) {
                try await connection.put("bad/request-id", header, requestID: header)
            }
        }
        do {
            let value = try await connection.value("bad/request-id")
            cluster.expect(value == nil, "a put with a malformed request id was applied: bad/request-id = \(value ?? "")")
        } catch {
            cluster.fail("get bad/request-id failed: \(describe(error))")
        }
    }

    static func checkExactlyOnce(_ connection: ReplicaConnection, cluster: LocalCluster) async {
        // A well-formed id: a retry is applied once; an older sequence is refused as stale.
        let clientID = UInt64.random(in: 1...(UInt64.max >> 1))
        let second = RequestIDGenerator.format(clientID: clientID, sequence: 2)
        do {
            _ = try await connection.put("bad/once", "first", requestID: second)
            _ = try await connection.put("bad/once", "retry", requestID: second)
            let response = try await connection.get("bad/once")
            let value = response.kvs.first.map { String(decoding: $0.value, as: UTF8.self) }
            cluster.expect(
                value == "first" && response.kvs.first?.version == 1,
                "a retried put was applied again: bad/once = \(value ?? "absent"), version \(response.kvs.first?.version ?? 0)")
        } catch {
            cluster.fail("exactly-once puts failed: \(describe(error))")
        }
        let first = RequestIDGenerator.format(clientID: clientID, sequence: 1)
        await expectRPCError("a put with a stale sequence", code: .failedPrecondition, cluster: cluster) {
            try await connection.put("bad/once", "stale", requestID: first)
        }
    }

    /// Connections that send garbage to a replica's peer port: random bytes, bad frame
    /// headers, and after a well-formed hello, message frames whose payload does not decode
    /// (unknown tags, truncations, absurd counts and lengths).
    static func sendGarbageToPeerPort(_ replica: ReplicaProcess, cluster: LocalCluster) async throws {
        let clusterID = try cluster.peerClusterID()
        let hello = { (sender: UInt32, receiver: UInt32) in Self.hello(sender: sender, receiver: receiver, clusterID: clusterID) }
        var payloads: [[UInt8]] = []
        var generator = SystemRandomNumberGenerator()
        for size in [1, 3, 7, 64, 4096] {
            payloads.append((0..<size).map { _ in UInt8.random(in: 0...255, using: &generator) })
        }
        // Frame headers: length below the header, over the bound, unknown version, unknown kind,
        // a message before any hello, a hello of the wrong length.
        payloads.append(frame(length: 2, version: 1, kind: 1, sender: 2, payload: []))
        payloads.append(frame(length: 0xFFFF_FFFF, version: 1, kind: 2, sender: 2, payload: []))
        payloads.append(frame(version: 9, kind: 1, sender: 2, payload: bigEndian(clusterID) + bigEndian(1)))
        payloads.append(frame(version: 1, kind: 77, sender: 2, payload: bigEndian(clusterID) + bigEndian(1)))
        payloads.append(frame(version: 1, kind: 2, sender: 2, payload: [1, 2, 1]))
        payloads.append(frame(version: 1, kind: 1, sender: 2, payload: bigEndian(clusterID) + bigEndian(1) + [5]))
        // Hellos that are refused: unknown replica, wrong receiver, another cluster.
        payloads.append(hello(99, 1))
        payloads.append(hello(2, 3))
        payloads.append(Self.hello(sender: 2, receiver: 1, clusterID: clusterID &+ 1))
        // After a good hello from r2: envelopes that must not decode.
        let envelopes: [[UInt8]] = [
            [],
            [9, 2, 1, 6],  // envelope version 9
            [1, 2, 1, 0xEE],  // unknown message tag
            [1, 2, 1, 1],  // prepare without a ballot
            [1, 2, 1, 2, 1, 2] + varint(1 << 62),  // promise with an absurd entry count
            [1, 2, 1, 3, 1, 2, 5, 1] + varint(1 << 40),  // accept: a batch of 2^40 commands
            [1, 2, 1, 3, 1, 2, 5, 1, 1] + varint(1 << 40),  // accept: a command of 2^40 bytes
            [1, 2, 1, 3, 1, 2, 5, 9],  // accept with an unknown value tag
            [1, 2, 1] + [UInt8](repeating: 0xFF, count: 12),  // overlong varints
            [1, 3, 1, 6, 1, 3, 0, 0],  // an envelope from r3 on r2's connection
            [1, 2, 7, 6, 1, 2, 0, 0],  // an envelope for r7
        ]
        for envelope in envelopes {
            payloads.append(hello(2, 1) + frame(version: 1, kind: 2, sender: 2, payload: envelope))
        }
        payloads.append(hello(2, 1) + frame(version: 1, kind: 3, sender: 2, payload: [1, 2, 3]))
        payloads.append(hello(2, 1) + hello(2, 1))
        for (index, bytes) in payloads.enumerated() {
            do {
                try sendAndClose(bytes, port: replica.peerPort)
            } catch {
                cluster.fail("garbage connection #\(index) to r\(replica.id)'s peer port: \(error)")
            }
        }
        // A connection that says nothing, left open past the hello timeout would take long;
        // one that connects and closes at once is enough here.
        try sendAndClose([], port: replica.peerPort)
        try await Task.sleep(for: .milliseconds(500))
    }

    static func frame(length: UInt32? = nil, version: UInt8, kind: UInt8, sender: UInt32, payload: [UInt8]) -> [UInt8] {
        let length = length ?? UInt32(6 + payload.count)
        return bigEndian(length) + [version, kind] + bigEndian(sender) + payload
    }

    static func hello(sender: UInt32, receiver: UInt32, clusterID: UInt32) -> [UInt8] {
        frame(version: 1, kind: 1, sender: sender, payload: bigEndian(clusterID) + bigEndian(receiver))
    }

    static func bigEndian(_ value: UInt32) -> [UInt8] {
        [UInt8(value >> 24), UInt8((value >> 16) & 0xFF), UInt8((value >> 8) & 0xFF), UInt8(value & 0xFF)]
    }

    static func varint(_ value: UInt64) -> [UInt8] {
        var value = value
        var bytes: [UInt8] = []
        while value >= 0x80 {
            bytes.append(UInt8(value & 0x7F) | 0x80)
            value >>= 7
        }
        bytes.append(UInt8(value))
        return bytes
    }

    /// Connects to 127.0.0.1:port, writes `bytes`, waits briefly for the peer to react, closes.
    static func sendAndClose(_ bytes: [UInt8], port: Int) throws {
        let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard descriptor >= 0 else { throw ProcessTestError("socket() failed: errno \(errno)") }
        defer { close(descriptor) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = in_port_t(UInt16(port).bigEndian)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
            }
        }
        guard connected == 0 else { throw ProcessTestError("connect to 127.0.0.1:\(port) failed: errno \(errno)") }
        var timeout = timeval(tv_sec: 0, tv_usec: 200_000)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        if !bytes.isEmpty {
            _ = bytes.withUnsafeBytes { send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        }
        // Wait for the replica to close its end (or 200 ms), so the next connection is separate.
        var buffer = [UInt8](repeating: 0, count: 256)
        _ = buffer.withUnsafeMutableBytes { recv(descriptor, $0.baseAddress, $0.count, 0) }
    }

    /// `synod serve` with a bad flag exits non-zero with one line naming the problem.
    static func checkBadFlags() async throws {
        let binary = try SynodBinary.locate()
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("synod-flags-\(UUID().uuidString.prefix(8))").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let good = ["--id", "1", "--peers", "1=127.0.0.1:20999", "--data-dir", directory, "--listen-client", "127.0.0.1:20998"]
        let cases: [(arguments: [String], names: String)] = [
            (["--id", "1", "--peers", "nonsense", "--data-dir", directory], "--peers"),
            (good + ["--fail-mode", "sometimes"], "--fail-mode"),
            (good + ["--auto-compaction-mode", "weekly", "--auto-compaction-retention", "3"], "--auto-compaction-mode"),
            (good + ["--auto-compaction-mode", "revision", "--auto-compaction-retention", "1h"], "--auto-compaction-retention"),
            (good + ["--fail-downtime=-5"], "--fail-downtime"),
            (["--id", "2", "--peers", "1=127.0.0.1:20999", "--data-dir", directory], "--peers"),
            (["--id", "1", "--peers", "1=127.0.0.1:99999", "--data-dir", directory], "--peers"),
            (good + ["--listen-client", "localhost"], "--listen-client"),
            (good + ["--consistency", "sometimes"], "--consistency"),
            (good + ["--client-event-loops", "0"], "--client-event-loops"),
            (good + ["--snapshot-log-share", "2000"], "--snapshot-log-share"),
            (good + ["--max-waiting-requests", "0"], "--max-waiting-requests"),
        ]
        for (arguments, names) in cases {
            let run = try await ProgramRun.run(binary, ["serve"] + arguments, timeout: .seconds(20))
            let shown = "synod serve \(arguments.joined(separator: " "))"
            let lines = run.stderr.split(separator: "\n").filter { !$0.trimmingCharacters(in: .whitespaces).isEmpty }
            #expect(!run.timedOut, "\(shown) did not exit within 20 s")
            #expect(run.status != 0, "\(shown) exited 0")
            #expect(lines.count == 1, "\(shown) printed \(lines.count) lines on stderr, expected one:\n\(run.stderr)")
            #expect(run.stderr.contains(names), "\(shown) does not name \(names) on stderr:\n\(run.stderr)")
            #expect(!run.stderr.contains("Fatal error") && !run.stderr.contains("Stack dump"), "\(shown) crashed:\n\(run.stderr)")
        }
    }
}
