import Foundation

/// One supervised child process — a `synod serve` replica, or a `synod cluster` run by a
/// test — that can be started, stopped gracefully, killed, paused and started again.
///
/// Supervision: each start gives the child a fresh pipe as standard input and appends
/// `SupervisorWatch.flag`; this object keeps the pipe's write end open until the child
/// exits, so the child sees end of file exactly when its supervisor process dies.
public final class ReplicaProcess: @unchecked Sendable {
    /// Where the child's stdout and stderr go.
    public enum Output: Sendable {
        /// Appended to a file (created if missing); every write lands at the end, so notes
        /// the supervisor appends between runs stay in order.
        case appendToFile(String)
        /// Split into lines, each handed to the closure (without its newline) on a reader
        /// thread; a last line without a newline is handed over when the child exits.
        case lines(@Sendable (String) -> Void)
    }

    /// How a run of the child ended.
    public struct Termination: Sendable, Equatable, CustomStringConvertible {
        public let bySignal: Bool
        /// The exit status, or the signal's number when `bySignal`.
        public let status: Int32

        public init(bySignal: Bool, status: Int32) {
            self.bySignal = bySignal
            self.status = status
        }

        public var description: String { bySignal ? "signal \(status)" : "status \(status)" }
    }

    /// A short name for messages (`r1`).
    public let name: String
    public let executable: String
    /// The arguments of every start; with `SupervisorWatch.flag` appended when supervised.
    public let arguments: [String]
    private let supervised: Bool
    private let output: Output
    private let onExit: (@Sendable (Termination) -> Void)?
    // Guarded by `lock`.
    private let lock = NSLock()
    private var process: Process?
    /// The current run's line splitter when output goes to `.lines`.
    private var splitter: LineSplitter?
    /// The write end of the current run's supervision pipe.
    private var supervisionPipe: SupervisionPipe?
    /// Starts counted, and exits whose `onExit` has returned: equal once the last run is over.
    private var runs = 0
    private var exitsHandled = 0

    /// - Parameters:
    ///   - supervised: give the child the supervision pipe and flag (default); false runs
    ///     it as a plain child (stdin /dev/null), for commands that do not know the flag.
    ///   - onExit: called on a Foundation thread each time the child exits.
    public init(
        name: String, executable: String, arguments: [String], output: Output, supervised: Bool = true,
        onExit: (@Sendable (Termination) -> Void)? = nil
    ) {
        self.name = name
        self.executable = executable
        self.arguments = supervised ? arguments + [SupervisorWatch.flag] : arguments
        self.output = output
        self.onExit = onExit
        self.supervised = supervised
    }

    // MARK: - State

    public var isRunning: Bool { lock.withLock { process?.isRunning ?? false } }

    /// The pid of the current (or last) run; nil before the first start.
    public var processIdentifier: Int32? { lock.withLock { process?.processIdentifier } }

    /// How the last run ended; nil while running or before the first start.
    public var termination: Termination? {
        lock.withLock {
            guard let process, !process.isRunning else { return nil }
            return Self.termination(of: process)
        }
    }

    // MARK: - Start

    /// Starts the child; it must not be running.
    public func start() throws {
        try lock.withLock {
            precondition(process?.isRunning != true, "\(name) is already running")
            let process = Process()
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
            let (outputHandle, splitter) = try attachOutput(to: process)
            var supervision: [Int32] = [-1, -1]
            if supervised {
                // No other child may inherit the write end, or it would keep the pipe open
                // after this process died: Foundation's posix_spawn closes every descriptor
                // above 2 it does not pass on, and FD_CLOEXEC covers any other spawner.
                // (The dup2 onto the child's stdin clears the flag on that copy.)
                guard pipe(&supervision) == 0 else { throw LaunchError.systemCall("pipe", errno: errno) }
                for descriptor in supervision { _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC) }
                process.standardInput = FileHandle(fileDescriptor: supervision[0], closeOnDealloc: false)
            } else {
                process.standardInput = FileHandle.nullDevice
            }
            let supervisionPipe = supervised ? SupervisionPipe(writeEnd: supervision[1]) : nil
            let onExit = onExit
            process.terminationHandler = { [weak self] process in
                // The child is gone: its stdin pipe has served its purpose.
                supervisionPipe?.close()
                onExit?(Self.termination(of: process))
                self?.lock.withLock { self?.exitsHandled += 1 }
            }
            do {
                try process.run()
            } catch {
                for descriptor in supervision where descriptor >= 0 { close(descriptor) }
                try? outputHandle?.close()
                throw LaunchError.cannotRun(executable, "\(error)")
            }
            // The parent keeps only the write end; the read end is the child's stdin now.
            if supervision[0] >= 0 { close(supervision[0]) }
            try? outputHandle?.close()
            self.process = process
            self.splitter = splitter
            self.supervisionPipe = supervisionPipe
            runs += 1
        }
    }

    /// Connects stdout and stderr; returns a handle the parent closes once the child runs, or
    /// the splitter that reads the child's pipe.
    private func attachOutput(to process: Process) throws -> (FileHandle?, LineSplitter?) {
        switch output {
        case .appendToFile(let path):
            let descriptor = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0o644)
            guard descriptor >= 0 else { throw LaunchError.systemCall("open \(path)", errno: errno) }
            let handle = FileHandle(fileDescriptor: descriptor, closeOnDealloc: true)
            process.standardOutput = handle
            process.standardError = handle
            return (handle, nil)
        case .lines(let handler):
            let pipe = Pipe()
            process.standardOutput = pipe
            process.standardError = pipe
            let splitter = LineSplitter(handler)
            pipe.fileHandleForReading.readabilityHandler = { handle in
                let data = handle.availableData
                if data.isEmpty {
                    handle.readabilityHandler = nil
                    splitter.finish()
                } else {
                    splitter.append(data)
                }
            }
            return (nil, splitter)
        }
    }

    /// Closes the supervision pipe as the supervisor's death would: the child (which must
    /// have been started supervised) stops as on SIGTERM. For tests of that path, and for a
    /// supervisor that wants its child to stop without a signal.
    public func closeSupervisionPipe() {
        let pipe = lock.withLock { supervisionPipe }
        precondition(pipe != nil || !supervised, "\(name) has not been started")
        pipe?.close()
    }

    // MARK: - Signals

    /// Sends `signalNumber` to the child if it runs; returns whether it was sent.
    @discardableResult
    public func send(_ signalNumber: Int32) -> Bool {
        lock.withLock {
            guard let process, process.isRunning else { return false }
            return kill(process.processIdentifier, signalNumber) == 0
        }
    }

    /// SIGTERM: the replica drains its client calls and stops.
    public func terminate() { send(SIGTERM) }

    /// SIGKILL (`kill -9`), without waiting.
    public func kill9() { send(SIGKILL) }

    /// SIGSTOP: the child stops running but keeps its sockets and files.
    public func pause() { send(SIGSTOP) }

    /// SIGCONT after `pause()`.
    public func resume() { send(SIGCONT) }

    // MARK: - Waiting

    /// Blocks (polling) until the child has exited or `seconds` passed; returns whether it
    /// exited.
    public func waitForExit(seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while isRunning {
            if Date() >= deadline { return false }
            usleep(Self.pollMicroseconds)
        }
        return true
    }

    /// `waitForExit` for async callers (sleeps instead of blocking a thread).
    public func exited(within limit: Duration) async -> Bool {
        let deadline = ContinuousClock.now.advanced(by: limit)
        while isRunning {
            if ContinuousClock.now >= deadline { return false }
            try? await Task.sleep(for: .microseconds(Self.pollMicroseconds))
        }
        return true
    }

    /// Blocks until the child's current run is over — exited, `onExit` returned, its output
    /// read to end of file and every line handed over — or `seconds` passed; returns
    /// whether it is. For a last look at what an exited child said.
    public func waitForOutput(seconds: Double) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while lock.withLock({ splitter?.isFinished == false || exitsHandled < runs }) {
            if Date() >= deadline { return false }
            usleep(Self.pollMicroseconds)
        }
        return true
    }

    static let pollMicroseconds: UInt32 = 10_000

    // MARK: - Stop and restart

    /// SIGTERM, up to `graceSeconds` for a graceful stop, then SIGKILL; returns whether the
    /// child stopped gracefully (also true when it was not running).
    @discardableResult
    public func stop(graceSeconds: Double) -> Bool {
        Self.stopAll([self], graceSeconds: graceSeconds).isEmpty
    }

    /// Stops the child (as `stop`) if it runs, then starts it again.
    public func restart(graceSeconds: Double) throws {
        stop(graceSeconds: graceSeconds)
        try start()
    }

    /// SIGTERM to every running child at once, one shared grace period, then SIGKILL to
    /// those still running (and a bounded wait for them); returns those that needed SIGKILL.
    @discardableResult
    public static func stopAll(_ children: [ReplicaProcess], graceSeconds: Double) -> [ReplicaProcess] {
        precondition(graceSeconds >= 0, "a grace period cannot be negative")
        for child in children {
            child.terminate()
            child.resume()  // a paused child handles the SIGTERM only once it runs again
        }
        let deadline = Date().addingTimeInterval(graceSeconds)
        for child in children { _ = child.waitForExit(seconds: max(0, deadline.timeIntervalSinceNow)) }
        let killed = children.filter(\.isRunning)
        for child in killed { child.kill9() }
        for child in killed { _ = child.waitForExit(seconds: killWaitSeconds) }
        return killed
    }

    /// The path of the running binary, so that the children a `synod` command starts run
    /// the same build.
    public static func currentExecutablePath() -> String {
        if let path = try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe") { return path }
        return CommandLine.arguments[0]
    }

    /// How long a SIGKILLed child may take to be reaped.
    static let killWaitSeconds: Double = 10

    private static func termination(of process: Process) -> Termination {
        Termination(bySignal: process.terminationReason == .uncaughtSignal, status: process.terminationStatus)
    }
}

/// Why a child could not be started; the description is the whole message.
public enum LaunchError: Error, CustomStringConvertible {
    case systemCall(String, errno: Int32)
    case cannotRun(String, String)

    public var description: String {
        switch self {
        case .systemCall(let call, let code): return "\(call) failed: \(String(cString: strerror(code)))"
        case .cannotRun(let executable, let reason): return "cannot run \(executable): \(reason)"
        }
    }
}

/// The supervisor's end of one run's stdin pipe, closed once: by `closeSupervisionPipe()`
/// or when the child has exited.
final class SupervisionPipe: @unchecked Sendable {
    // Guarded by `lock`; -1 once closed.
    private let lock = NSLock()
    private var writeEnd: Int32

    init(writeEnd: Int32) {
        precondition(writeEnd >= 0, "a supervision pipe needs an open write end")
        self.writeEnd = writeEnd
    }

    func close() {
        lock.withLock {
            guard writeEnd >= 0 else { return }
            _ = Foundation.close(writeEnd)
            writeEnd = -1
        }
    }
}

/// Splits a byte stream into lines for a handler; one per child run.
final class LineSplitter: @unchecked Sendable {
    private let handler: @Sendable (String) -> Void
    // Guarded by `lock`.
    private let lock = NSLock()
    private var partial = Data()
    private var finished = false

    init(_ handler: @escaping @Sendable (String) -> Void) {
        self.handler = handler
    }

    func append(_ data: Data) {
        var lines: [String] = []
        lock.withLock {
            partial.append(data)
            while let newline = partial.firstIndex(of: UInt8(ascii: "\n")) {
                lines.append(String(decoding: partial[partial.startIndex..<newline], as: UTF8.self))
                partial = Data(partial[partial.index(after: newline)...])
            }
        }
        for line in lines { handler(line) }
    }

    /// Whether `finish()` has handed over the last line.
    var isFinished: Bool { lock.withLock { finished } }

    func finish() {
        let rest = lock.withLock {
            defer { partial = Data() }
            return partial
        }
        if !rest.isEmpty { handler(String(decoding: rest, as: UTF8.self)) }
        lock.withLock { finished = true }
    }
}
