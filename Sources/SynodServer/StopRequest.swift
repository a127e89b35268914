import Dispatch
import Foundation
import Synchronization

/// A request to stop the server gracefully, from a signal or from the supervisor watch, that
/// may come at any moment — also before the server is ready to act on it. A request made
/// early is kept and carried out as soon as the server connects its stop action.
///
/// Why not just SIGTERM: the service group installs its signal handlers only once it runs,
/// so a SIGTERM during start-up (a supervisor that died at once) killed the process with the
/// default action instead of stopping it gracefully.
public final class StopRequest: Sendable {
    private struct State {
        var requested = false
        var action: (@Sendable () -> Void)?
    }
    private let state = Mutex(State())
    private let sources = Mutex<[SignalSource]>([])
    /// A dispatch signal source, kept alive here; only resumed once, never touched after.
    private struct SignalSource: @unchecked Sendable { let source: DispatchSourceSignal }

    public init() {}

    public var isRequested: Bool { state.withLock { $0.requested } }

    /// Asks for a graceful stop; later calls do nothing.
    public func request() {
        let action: (@Sendable () -> Void)? = state.withLock { state in
            if state.requested { return nil }
            state.requested = true
            return state.action
        }
        action?()
    }

    /// Connects the action that stops the server; runs it at once if a stop was already asked.
    func connect(_ action: @escaping @Sendable () -> Void) {
        let runNow = state.withLock { state -> Bool in
            state.action = action
            return state.requested
        }
        if runNow { action() }
    }

    /// Turns the given signals into stop requests from now on, instead of their default action.
    public func handleSignals(_ signals: [Int32]) {
        let created = signals.map { number -> SignalSource in
            signal(number, SIG_IGN)
            let source = DispatchSource.makeSignalSource(signal: number, queue: .global())
            source.setEventHandler { [weak self] in self?.request() }
            source.resume()
            return SignalSource(source: source)
        }
        sources.withLock { $0 += created }
    }
}
