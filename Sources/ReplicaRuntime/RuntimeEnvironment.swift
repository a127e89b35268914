import Paxos
import Storage

/// The narrow seams through which a `ReplicaRuntime` reaches the world. The server
/// implements them with SwiftNIO and the real disk; the simulator with its seeded
/// network, simulated file system and trace. Everything else — what to persist, when to
/// send, what to apply, whom to answer, when to snapshot, compact or fail — is the
/// runtime's own code, the same in both.
public protocol RuntimeEnvironment: AnyObject {
    /// Sends Paxos messages; the network may lose them (Paxos retransmits).
    func send(_ envelopes: [Envelope])
    /// Sends one piece of a snapshot to a peer, in order after the previous pieces.
    func sendSnapshotChunk(_ chunk: SnapshotChunk, to peer: ReplicaID)
    /// Reports what happened.
    func log(_ level: RuntimeLogLevel, _ message: String)
    /// The replica cannot go on (a failed fsync, a broken disk): stop it.
    func fatal(_ message: String) -> Never
    /// A chosen slot was applied to the state machine (the simulator checks agreement).
    func didApply(_ item: SlotEntry)
    /// Whether the process dies right here (the simulator's crash points; never in the
    /// server). After a yes the runtime does nothing more: it is halted, as a killed
    /// process, and its driver discards it.
    func crashes(at point: CrashPoint) -> Bool
    /// Runs `work` away from the driver's thread — the server on a background thread, the
    /// simulator at a later simulated moment — and hands the event it returns to the runtime
    /// in a later turn, unless the process died meanwhile. Work too slow for a turn (writing a
    /// snapshot of a large store) goes here, so heartbeats and client calls keep flowing.
    func runInBackground(_ work: @escaping @Sendable () -> RuntimeEvent)
    /// Runs `sync` — the fdatasync of the records the runtime appended to its write-ahead log
    /// — away from the driver's thread (the server: its fsync thread; the simulator: a later
    /// simulated moment), then hands `.synced(sync)` to the runtime in a later turn, unless
    /// the process died meanwhile. Its failure travels inside `sync` (`PendingSync.failure`).
    /// Meanwhile the runtime steps the next events; it keeps at most one sync in flight and
    /// releases what waits for it (messages, answers) only when `.synced` comes back.
    func syncInBackground(_ sync: PendingSync)
    /// Frees what the runtime no longer needs (`Discarded.drop()`), possibly on another
    /// thread: freeing a large structure takes the driver's thread long enough to hold
    /// heartbeats and clients up. The default drops it here.
    func discard(_ garbage: Discarded)
}

/// A value the runtime no longer needs, handed to `RuntimeEnvironment.discard` so that its
/// last reference goes on the thread that calls `drop()`. The runtime keeps no other
/// reference to the value once it handed the box over, and touches the box no more.
public final class Discarded: @unchecked Sendable {
    /// The value until `drop()` (for tests: what the runtime let go of).
    public private(set) var contents: Any?

    init(_ value: Any) {
        contents = value
    }

    /// Releases the value (freeing it here if this was its last reference).
    public func drop() {
        contents = nil
    }
}

/// Places in the runtime where the simulator may kill the process.
public enum CrashPoint: Sendable {
    /// A leader's `accept` requests have left, its own records are not yet durable.
    case afterEarlySend
}

extension PendingSync {
    /// Runs the sync and says so, as `syncInBackground` hands it back (a failure is kept in
    /// the sync, and the runtime stops on it).
    public func runForRuntime() -> RuntimeEvent {
        do {
            try run()
        } catch {
            // Kept in `failure`; the runtime reads it when the event arrives.
        }
        return .synced(self)
    }
}

extension RuntimeEnvironment {
    public func discard(_ garbage: Discarded) { garbage.drop() }
    public func didApply(_ item: SlotEntry) {}
    public func crashes(at point: CrashPoint) -> Bool { false }
}
