import ArgumentParser
import Foundation
import Storage
import StorageTools

/// `synod bench-storage`: how fast this disk makes records durable, raw and through the
/// write-ahead log's group commit.
struct BenchStorageCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench-storage",
        abstract: "Measure write+fdatasync and the write-ahead log's group commit on a directory's disk."
    )

    @Option(name: .long, help: "Directory to measure (its disk is what counts); created and cleaned up.")
    var dir: String?

    @Option(name: .long, help: "Seconds per case.")
    var seconds: Double = 3

    @Flag(name: .long, help: "Print the report as JSON instead of a Markdown table.")
    var json = false

    func validate() throws {
        guard seconds > 0, seconds <= 600 else {
            throw ValidationError("--seconds must be in (0, 600], got \(seconds)")
        }
    }

    func run() throws {
        let directory = dir ?? "/tmp/synod-bench-storage-\(getpid())"
        let report = try StorageBenchmark.run(directory: directory, secondsPerCase: seconds)
        if dir == nil { rmdir(directory) }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(report), as: UTF8.self))
        } else {
            print(report.markdownTable)
        }
    }
}
