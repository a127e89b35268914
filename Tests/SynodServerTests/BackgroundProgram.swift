import Foundation

/// A program running in the background in its own process group (Foundation's default), with
/// its output in files: paused and resumed with SIGSTOP/SIGCONT (the group leader only, so
/// a child it runs keeps running), and always killed with its whole group at the end.
final class BackgroundProgram: @unchecked Sendable {
    let name: String
    private let process = Process()
    private let directory: URL
    private let outURL: URL
    private let errURL: URL

    init(name: String, _ executable: String, _ arguments: [String], environment: [String: String] = [:]) throws {
        self.name = name
        directory = FileManager.default.temporaryDirectory.appendingPathComponent("synod-bg-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        outURL = directory.appendingPathComponent("stdout")
        errURL = directory.appendingPathComponent("stderr")
        _ = FileManager.default.createFile(atPath: outURL.path, contents: nil)
        _ = FileManager.default.createFile(atPath: errURL.path, contents: nil)
        // Foundation's Process starts the child as the leader of a process group of its own
        // (pgid = pid), so `kill(-pid)` reaches it and whatever it starts. (Wrapping it in
        // setsid(1) would make setsid fork, and the signals would reach only setsid's zombie.)
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardOutput = try FileHandle(forWritingTo: outURL)
        process.standardError = try FileHandle(forWritingTo: errURL)
        process.standardInput = FileHandle.nullDevice
        try process.run()
    }

    var stdout: String { (try? String(contentsOf: outURL, encoding: .utf8)) ?? "" }
    var stderr: String { (try? String(contentsOf: errURL, encoding: .utf8)) ?? "" }
    var isRunning: Bool { process.isRunning }
    var exitStatus: Int32? { process.isRunning ? nil : process.terminationStatus }

    func signal(_ signal: Int32) {
        guard process.isRunning else { return }
        kill(process.processIdentifier, signal)
    }

    /// Waits (bounded) until stdout contains `text`.
    func awaitOutput(_ text: String, timeout: Duration) async -> Bool {
        await eventually(timeout: timeout, interval: .milliseconds(50)) { stdout.contains(text) }
    }

    func awaitExit(timeout: Duration) async -> Bool {
        await ProgramRun.waitForExit(process, timeout: timeout)
    }

    /// SIGKILL to the whole process group (the program and whatever it started), then
    /// removes the output files.
    func killAll() async {
        let pid = process.processIdentifier
        if pid > 0 {
            kill(-pid, SIGCONT)
            kill(-pid, SIGKILL)
            kill(pid, SIGKILL)
        }
        _ = await awaitExit(timeout: .seconds(5))
        try? FileManager.default.removeItem(at: directory)
    }

    var report: String { "\(name): stdout \(stdout.debugDescription) stderr \(stderr.debugDescription)" }

    /// SIGSTOP / SIGCONT to the program (the group leader only).
    func pause() { signal(SIGSTOP) }
    func resume() { signal(SIGCONT) }

    /// Everything it printed so far, stdout then stderr.
    func output() -> String { stdout + stderr }

    /// Waits (bounded) until its output contains every string of `texts`.
    func awaitOutput(containing texts: [String], timeout: Duration = .seconds(15)) async -> Bool {
        await eventually(timeout: timeout) { texts.allSatisfy { output().contains($0) } }
    }

    /// Runs `body` with the program in the background; the program is killed (with its group)
    /// when `body` ends, however it ends.
    static func with<Result>(
        _ executable: String, _ arguments: [String], environment: [String: String] = [:],
        _ body: (BackgroundProgram) async throws -> Result
    ) async throws -> Result {
        let program = try BackgroundProgram(
            name: (executable as NSString).lastPathComponent, executable, arguments, environment: environment)
        do {
            let result = try await body(program)
            await program.killAll()
            return result
        } catch {
            await program.killAll()
            throw error
        }
    }
}

