import Crypto
import Foundation
import Paxos
import ReplicaRuntime
import Storage
import UnaryGRPC

/// A Synod backup file, what `Maintenance.Snapshot` streams (`etcdctl snapshot save`) and
/// `synod snapshot restore` reads:
///
///     "SYNODBK1" | u64 appliedThrough | i64 revision | u64 bodyBytes | body | zeros | sha256(all before)
///
/// (big-endian integers). The body is the state machine (`KVStore.snapshot()`, with its own
/// checksum). As etcd's snapshot stream, the content is padded with zeros to a multiple of
/// 512 bytes and followed by its SHA-256 — `etcdctl snapshot save` checks exactly that
/// shape ("sha256 checksum not found" otherwise) — and `synod snapshot restore` checks the hash.
public struct BackupFile: Sendable {
    public static let magic = Array("SYNODBK1".utf8)
    public static let headerBytes = 8 + 8 + 8 + 8
    public static let hashBytes = 32

    /// What the file holds: the runtime's image of the state machine.
    public var image: BackupImage
    public var appliedThrough: Slot { image.appliedThrough }
    public var revision: Int64 { image.revision }
    public var stateMachine: [UInt8] { image.stateMachine }

    public init(_ image: BackupImage) {
        self.image = image
    }

    public func encoded() -> [UInt8] {
        var bytes = Self.magic
        for value in [appliedThrough, UInt64(bitPattern: revision), UInt64(stateMachine.count)] {
            withUnsafeBytes(of: value.bigEndian) { bytes.append(contentsOf: $0) }
        }
        bytes += stateMachine
        bytes += [UInt8](repeating: 0, count: (512 - bytes.count % 512) % 512)
        bytes += Array(SHA256.hash(data: bytes))
        return bytes
    }

    /// Decodes and verifies a backup; every failure names what is wrong.
    public static func decode(_ bytes: [UInt8]) throws(BackupError) -> BackupFile {
        guard bytes.count >= headerBytes + hashBytes, Array(bytes[0..<8]) == magic else {
            throw .invalid("not a Synod backup (no SYNODBK1 header); was it saved from a Synod cluster?")
        }
        let content = bytes[0..<(bytes.count - hashBytes)]
        guard Array(SHA256.hash(data: content)) == Array(bytes[(bytes.count - hashBytes)...]) else {
            throw .invalid("the SHA-256 at the end does not match the content: the file is damaged or truncated")
        }
        func integer(at offset: Int) -> UInt64 {
            bytes[offset..<offset + 8].reduce(0) { $0 << 8 | UInt64($1) }
        }
        let bodyBytes = integer(at: 24)
        let room = UInt64(content.count - headerBytes)
        guard bodyBytes <= room, room - bodyBytes < 512,
            content[(headerBytes + Int(bodyBytes))...].allSatisfy({ $0 == 0 })
        else {
            throw .invalid("the header says \(bodyBytes) state-machine bytes, the file holds \(room) after its header")
        }
        return BackupFile(
            BackupImage(
                appliedThrough: integer(at: 8), revision: Int64(bitPattern: integer(at: 16)),
                stateMachine: Array(bytes[headerBytes..<(headerBytes + Int(bodyBytes))])))
    }

    /// Makes `directory` a new replica's data directory holding this backup: a snapshot
    /// through `appliedThrough` and an empty log after it (a new cluster of replicas so
    /// made starts from the backed-up state). Refuses a directory that holds anything.
    public func restore(into directory: String) throws {
        if let existing = try? FileManager.default.contentsOfDirectory(atPath: directory), !existing.isEmpty {
            throw BackupError.invalid("\(directory) is not empty; restore into new directories only")
        }
        let (storage, _) = try ReplicaStorage.open(directory: directory, fileSystem: PosixFileSystem())
        try storage.saveSnapshot(through: max(appliedThrough, 1), stateMachine: stateMachine)
        try storage.close()
    }
}

public enum BackupError: Error, CustomStringConvertible {
    case invalid(String)

    public var description: String {
        switch self {
        case .invalid(let reason): return reason
        }
    }
}

/// `Maintenance.Snapshot`, a server-streaming call: the replica's state machine as of its
/// last applied slot, as a `BackupFile`, in `SnapshotResponse` messages of 64 KiB
/// (`header` = 1, `remaining_bytes` = 2, `blob` = 3; on `ProtobufWire`, as the generated
/// code predates them), sent as fast as the client reads (the call's bounded queue).
extension EtcdFrontEnd {
    static let snapshotPath = "/etcdserverpb.Maintenance/Snapshot"
    static let snapshotChunkBytes = 64 * 1024

    var snapshotMethod: StreamingMethod {
        { [self] call in
            if let refusal = adminRefusal(call.metadata, certificateCommonName: call.clientCertificateCommonName) {  // auth: a backup holds password hashes
                call.responder.finish(refusal)
                return StreamingObserver(onMessage: { _ in }, onCancel: { _ in }, onWritable: {})
            }
            let sender = BackupSender(responder: call.responder)
            Thread.detachNewThread { [self] in
                guard let image = loop.ask({ reply in .backup(reply) }) ?? nil else {
                    return call.responder.finish(
                        GRPCStatus(code: 14, message: "etcdserver: replica is recovering; try another endpoint"))
                }
                let status = loop.ask { reply in .status(reply) } ?? .unreachable
                let file = BackupFile(image).encoded()
                let headerBytes: [UInt8] = (try? header(status).serializedBytes()) ?? []
                sender.start(file: file, header: headerBytes)
            }
            return StreamingObserver(onMessage: { _ in }, onCancel: { _ in sender.cancel() }, onWritable: { sender.resume() })
        }
    }
}

/// Sends one backup file in chunks, pausing while the call's queue is full.
final class BackupSender: @unchecked Sendable {
    private let lock = NSLock()
    private let responder: StreamingResponder
    private var file: [UInt8] = []
    private var header: [UInt8] = []
    private var offset = 0
    private var cancelled = false
    private var started = false

    init(responder: StreamingResponder) {
        self.responder = responder
    }

    func start(file: [UInt8], header: [UInt8]) {
        lock.withLock {
            self.file = file
            self.header = header
            started = true
        }
        resume()
    }

    func cancel() {
        lock.withLock { cancelled = true }
    }

    /// Sends chunks until the queue refuses one (then `onWritable` calls this again) or
    /// the file is done.
    func resume() {
        lock.lock()
        defer { lock.unlock() }
        guard started, !cancelled else { return }
        while offset < file.count {
            let end = min(file.count, offset + EtcdFrontEnd.snapshotChunkBytes)
            var message = ProtobufWriter(capacity: end - offset + header.count + 16)
            if offset == 0 { message.writeBytes(1, header) }
            message.writeUInt(2, UInt64(file.count - end))
            message.writeBytes(3, file[offset..<end])
            guard responder.send(message.bytes) else { return }
            offset = end
        }
        cancelled = true
        responder.finish()
    }
}
