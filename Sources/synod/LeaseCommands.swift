import ArgumentParser
import Foundation
import KVStore
import SynodClient

// `synod lock NAME -- command…` (like `etcdctl lock`) and `synod lease grant/revoke/timetolive/keep-alive`.

struct LockCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lock",
        abstract: "Run a command while holding a distributed lock (etcd's lock recipe, like etcdctl lock).",
        discussion: """
            Waits for the lock NAME, then runs the command with SYNOD_LOCK_KEY and \
            SYNOD_LOCK_REV (also ETCD_LOCK_KEY/ETCD_LOCK_REV) in its environment, and releases \
            the lock when it exits. SYNOD_LOCK_REV is the fencing token: every later holder \
            gets a higher one, so a resource that remembers the highest token it accepted can \
            refuse a holder that was paused past its lease. Without a command it prints the \
            lock key and holds the lock until interrupted. Exits with the command's status.
            """
    )

    @OptionGroup var connection: ClientConnectionOptions

    @Option(name: .long, help: "TTL of the lock's lease, in seconds.")
    var ttl: Int64 = 10

    @Argument(help: "The lock's name.")
    var name: String

    @Argument(parsing: .captureForPassthrough, help: "The command to run while holding the lock (after --).")
    var command: [String] = []

    func validate() throws {
        guard ttl >= 1 else { throw ValidationError("--ttl must be at least 1 second") }
    }

    func run() async throws {
        var status: Int32 = 0
        let arguments = command.first == "--" ? Array(command.dropFirst()) : command
        try await connection.withClient { client in
            let lease = try await client.grantLease(ttlSeconds: ttl)
            let keeper = client.keepAlive(lease)
            defer { keeper.cancel() }
            let lock = try await client.lock(name, lease: lease)
            let key = String(decoding: lock.key, as: UTF8.self)
            if arguments.isEmpty {
                print(key)
                // Hold until SIGINT/SIGTERM, or until the lease is lost.
                status = await Self.holdUntilSignal(keeper: keeper)
            } else {
                status = try Self.runCommand(arguments, environment: [
                    "SYNOD_LOCK_KEY": key, "SYNOD_LOCK_REV": "\(lock.fencingToken)",
                    "ETCD_LOCK_KEY": key, "ETCD_LOCK_REV": "\(lock.fencingToken)",
                ])
            }
            try? await client.unlock(lock)
            try? await client.revokeLease(lease)
        }
        if status != 0 { throw ExitCode(status) }
    }

    static func runCommand(_ arguments: [String], environment: [String: String]) throws -> Int32 {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        try process.run()
        process.waitUntilExit()
        return process.terminationStatus
    }

    /// Waits for SIGINT or SIGTERM (0), or for the lease to be lost (1).
    static func holdUntilSignal(keeper: Task<Void, any Error>) async -> Int32 {
        signal(SIGINT, SIG_IGN)
        signal(SIGTERM, SIG_IGN)
        let (stream, continuation) = AsyncStream.makeStream(of: Int32.self)
        let sources = [SIGINT, SIGTERM].map { number in
            let source = DispatchSource.makeSignalSource(signal: number)
            source.setEventHandler { continuation.yield(0) }
            source.resume()
            return source
        }
        let watcher = Task {
            _ = try? await keeper.value
            FileHandle.standardError.write(Data("Error: the lock's lease was lost\n".utf8))
            continuation.yield(1)
        }
        var status: Int32 = 0
        for await value in stream {
            status = value
            break
        }
        watcher.cancel()
        for source in sources { source.cancel() }
        return status
    }
}

struct LeaseCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lease",
        abstract: "Grant, revoke, inspect and keep alive leases.",
        subcommands: [LeaseGrantCommand.self, LeaseRevokeCommand.self, LeaseTimeToLiveCommand.self, LeaseKeepAliveCommand.self]
    )
}

/// A lease id argument in hex, as etcdctl prints and takes them.
struct LeaseIDArgument: ExpressibleByArgument, Sendable {
    var id: Int64

    init?(argument: String) {
        guard let id = Int64(argument, radix: 16), id != 0 else { return nil }
        self.id = id
    }
}

struct LeaseGrantCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "grant", abstract: "Grant a lease of TTL seconds.")
    @OptionGroup var connection: ClientConnectionOptions
    @Argument(help: "TTL in seconds.") var ttl: Int64

    func run() async throws {
        try await connection.withClient { client in
            let lease = try await client.grantLease(ttlSeconds: ttl)
            print("lease \(lease) granted with TTL(\(lease.ttlSeconds)s)")
        }
    }
}

struct LeaseRevokeCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "revoke", abstract: "Revoke a lease and delete its keys.")
    @OptionGroup var connection: ClientConnectionOptions
    @Argument(help: "Lease id (hex).") var lease: LeaseIDArgument

    func run() async throws {
        try await connection.withClient { client in
            try await client.revokeLease(SynodLease(id: lease.id, ttlSeconds: 0))
            print("lease \(String(lease.id, radix: 16)) revoked")
        }
    }
}

struct LeaseTimeToLiveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "timetolive", abstract: "Show a lease's remaining TTL.")
    @OptionGroup var connection: ClientConnectionOptions
    @Argument(help: "Lease id (hex).") var lease: LeaseIDArgument
    @Flag(name: .long, help: "Also list the attached keys.") var keys = false

    func run() async throws {
        try await connection.withClient { client in
            let ttl = try await client.leaseTimeToLive(SynodLease(id: lease.id, ttlSeconds: 0), keys: keys)
            let id = String(lease.id, radix: 16)
            guard let remaining = ttl.remainingSeconds else { return print("lease \(id) already expired") }
            var line = "lease \(id) granted with TTL(\(ttl.grantedTTLSeconds)s), remaining(\(remaining)s)"
            if keys { line += ", attached keys(\(ttl.keys.map { String(decoding: $0, as: UTF8.self) }))" }
            print(line)
        }
    }
}

struct LeaseKeepAliveCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keep-alive", abstract: "Keep a lease alive until interrupted or the lease is gone.")
    @OptionGroup var connection: ClientConnectionOptions
    @Argument(help: "Lease id (hex).") var lease: LeaseIDArgument
    @Option(name: .long, help: "The lease's TTL in seconds (sets the keep-alive interval, a third of it).")
    var ttl: Int64 = 3

    func run() async throws {
        try await connection.withClient { client in
            let keeper = client.keepAlive(SynodLease(id: lease.id, ttlSeconds: ttl))
            let status = await LockCommand.holdUntilSignal(keeper: keeper)
            keeper.cancel()
            if status != 0 { throw CommandFailure.report("lease \(String(lease.id, radix: 16)) expired or was revoked") }
        }
    }
}
