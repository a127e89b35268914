import Foundation

/// The child's half of supervision: a replica started by a supervisor (`synod cluster`,
/// `synod demo`, the process tests) stops when that supervisor is gone, however it went.
///
/// The supervisor gives each child a pipe as standard input and never writes to it. When
/// the supervisor dies — exit, crash, SIGKILL, SIGHUP from a closed terminal — the kernel
/// closes its end and the child reads end of file. This is robust where Linux's
/// `PR_SET_PDEATHSIG` is not: that fires when the parent *thread* that spawned the child
/// exits, and Foundation's `Process` spawns from whatever thread calls `run()`. As a
/// fallback (should the pipe's write end ever leak into another process) the watcher also
/// notices that its parent process changed, i.e. that it was re-parented.
///
/// On either, the child stops itself as on SIGTERM (graceful), and exits hard if that has
/// not finished within `stopGraceMilliseconds`, so it is gone — ports and data directory
/// lock released — within `lossDetectionMilliseconds + stopGraceMilliseconds`.
public enum SupervisorWatch {
    /// The flag of `synod serve` and `synod cluster` that turns the watch on. Without it
    /// standard input is left alone, so a command run by hand behaves as always.
    public static let flag = "--exit-on-stdin-eof"

    /// The help text of `flag`.
    public static let help =
        "Stop (as on SIGTERM) when standard input reaches end of file or the parent process exits. "
        + "Set by `synod cluster`, `synod demo` and the tests, which keep a pipe open on the child's stdin, "
        + "so a child never outlives its supervisor."

    /// Bound on how late the parent check notices a re-parenting (the pipe is immediate).
    public static let lossDetectionMilliseconds: Int32 = 250
    /// How long the graceful stop may take before the process exits hard (status 1).
    public static let stopGraceMilliseconds: UInt32 = 2_000

    /// Starts the watcher thread. On loss it prints one line `<name>: <why>: stopping` to
    /// stderr and calls `stop` (by default: sends the process SIGTERM).
    public static func start(
        name: String, onLoss: @escaping @Sendable () -> Void = {},
        stop: @escaping @Sendable () -> Void = { kill(getpid(), SIGTERM) }
    ) {
        let parent = getppid()
        let thread = Thread {
            let reason = waitForLoss(parent: parent)
            onLoss()
            // Stderr is most likely a pipe to the dead supervisor: a write must fail with
            // EPIPE rather than kill the process with SIGPIPE in the middle of its stop.
            signal(SIGPIPE, SIG_IGN)
            say("\(name): \(reason): stopping")
            stop()
            usleep(stopGraceMilliseconds * 1_000)
            say("\(name): still running \(stopGraceMilliseconds) ms after SIGTERM: exiting")
            _exit(1)
        }
        thread.name = "synod-supervisor-watch"
        thread.start()
    }

    /// One line to stderr through write(2), whose failure is ignored (FileHandle's would trap).
    private static func say(_ line: String) {
        let bytes = Array((line + "\n").utf8)
        _ = bytes.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
    }

    /// Blocks until standard input reaches end of file (or fails) or the parent process is
    /// no longer `parent`; returns which, as a phrase.
    static func waitForLoss(parent: pid_t) -> String {
        var buffer = [UInt8](repeating: 0, count: 512)
        while true {
            if getppid() != parent { return "parent process \(parent) exited" }
            var descriptor = pollfd(fd: STDIN_FILENO, events: Int16(POLLIN), revents: 0)
            let ready = poll(&descriptor, 1, lossDetectionMilliseconds)
            if ready < 0 {
                if errno == EINTR { continue }
                return "cannot watch standard input (poll: \(String(cString: strerror(errno))))"
            }
            guard ready > 0 else { continue }
            if descriptor.revents & Int16(POLLNVAL) != 0 { return "standard input is closed" }
            let count = buffer.withUnsafeMutableBytes { read(STDIN_FILENO, $0.baseAddress, $0.count) }
            if count == 0 { return "standard input reached end of file (the supervisor is gone)" }
            if count < 0 && errno != EINTR && errno != EAGAIN {
                return "cannot read standard input (\(String(cString: strerror(errno))))"
            }
            // Bytes written by the supervisor mean nothing; they are read and dropped.
        }
    }
}
