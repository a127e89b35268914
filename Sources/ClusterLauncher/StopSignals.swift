import Foundation
import Synchronization

/// The first stop signal that arrived (0: none yet). Written by `stopSignalHandler` — an
/// atomic store is all a signal handler may safely do — and polled by the supervisor.
private let stopSignalReceived = Atomic<Int32>(0)

private func stopSignalHandler(_ signalNumber: Int32) {
    _ = stopSignalReceived.compareExchange(expected: 0, desired: signalNumber, ordering: .relaxed)
}

/// The signals that stop a supervisor gracefully: Ctrl-C (SIGINT), SIGTERM, and SIGHUP
/// (its terminal closed). A plain handler polled by the supervisor's loop rather than a
/// Dispatch signal source, which on Linux did not always fire with child processes running.
public enum StopSignals {
    public static let all: [Int32] = [SIGINT, SIGTERM, SIGHUP]

    /// Installs the handler for `all`; call before starting any child so that no signal is
    /// lost between the start and the first poll.
    public static func install() {
        for signalNumber in all { signal(signalNumber, stopSignalHandler) }
    }

    /// The first stop signal received since `install()`, if any.
    public static var received: Int32? {
        let signalNumber = stopSignalReceived.load(ordering: .relaxed)
        return signalNumber == 0 ? nil : signalNumber
    }

    /// `SIGINT`, `SIGTERM`, `SIGHUP`, or the number.
    public static func name(_ signalNumber: Int32) -> String {
        switch signalNumber {
        case SIGINT: return "SIGINT"
        case SIGTERM: return "SIGTERM"
        case SIGHUP: return "SIGHUP"
        case SIGKILL: return "SIGKILL"
        default: return "signal \(signalNumber)"
        }
    }
}
