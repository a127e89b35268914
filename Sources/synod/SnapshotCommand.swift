import ArgumentParser
import Foundation
import SynodServer

/// `synod snapshot restore`: builds a new cluster's data directories from a backup that
/// `etcdctl snapshot save` (or any client of `Maintenance.Snapshot`) took from a replica.
struct SnapshotCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "snapshot",
        abstract: "Backups: restore a snapshot saved with `etcdctl snapshot save`.",
        subcommands: [SnapshotRestoreCommand.self]
    )
}

struct SnapshotRestoreCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore",
        abstract: "Build a new cluster's data directories from a snapshot file.",
        discussion: """
            Writes <data-dir>/r1 … r<N> (the layout `synod cluster --data-dir` uses), each holding \
            the snapshot's state machine; the directories must not exist or be empty. Then start \
            the new cluster: `synod cluster --data-dir <data-dir> --replicas <N>` (or `synod serve` \
            per replica with --data-dir <data-dir>/r<i>). The file's SHA-256 is checked first.
            """
    )

    @Argument(help: "The snapshot file (from `etcdctl snapshot save`).")
    var file: String

    @Option(help: "Where the new cluster's data directories go.")
    var dataDir: String

    @Option(help: "Number of replicas of the new cluster.")
    var replicas: Int = 5

    func validate() throws {
        guard (1...15).contains(replicas) else { throw ValidationError("--replicas must be between 1 and 15") }
    }

    func run() throws {
        do {
            guard let data = FileManager.default.contents(atPath: file) else {
                throw BackupError.invalid("cannot read \(file)")
            }
            let backup = try BackupFile.decode(Array(data))
            for id in 1...replicas {
                try backup.restore(into: (dataDir as NSString).appendingPathComponent("r\(id)"))
            }
            print(
                "restored revision \(backup.revision) (slot \(backup.appliedThrough), \(backup.stateMachine.count) bytes) "
                    + "into \(replicas) data directories under \(dataDir); start with: "
                    + "synod cluster --data-dir \(dataDir) --replicas \(replicas)")
        } catch {
            FileHandle.standardError.write(Data("synod snapshot restore: \(file): \(error)\n".utf8))
            throw ExitCode(1)
        }
    }
}
