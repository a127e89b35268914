import KVStore
import Linearizability
import Paxos
import ReplicaRuntime

/// Simulated watch clients on the shipped `WatchHub` (the server's, in ReplicaRuntime): each
/// replica process has a hub fed after every turn, as the server's loop does; a watcher
/// holds one stream on one replica, asks for progress now and then, reads slowly at random
/// (its sink refuses a response, so the hub blocks the stream and resumes it from history
/// later), and when its replica crashes resumes from its last delivered revision + 1 on a
/// random live replica. At the end every watcher is checked by `WatchChecker` against a
/// reference built from the chosen commands (a ghost store that never compacts, read at
/// every revision): ordered, unique, no gaps, atomic revisions, exact events, progress never
/// ahead of delivery, resumes from the right revision, and complete up to the final revision.
struct SimWatchState {
    /// Logical watchers (a compacted cancel ends one and starts another from the compacted
    /// revision, as an etcd client would).
    var watchers: [SimWatcher] = []
    /// Each live replica process's hub (a crash discards it with the process).
    var hubs: [ReplicaID: WatchHub] = [:]
    /// Watchers started at first.
    static let initialWatchers = 3
    /// Watchers over the whole run, at most.
    static let watchersMax = 12
    /// Per 100 responses, how many a sink refuses (the client reads slowly).
    static let refusePercent: UInt64 = 8
}

struct SimWatcher {
    let id: Int
    let startRevision: Int64
    var items: [WatchChecker.Item] = []
    var lastDelivered: Int64
    /// The stream it holds now, if any.
    var stream: WatchStream?
    var sink: SimWatchSink?
    var node: ReplicaID?
    var incarnation = 0
    /// Bumped per stream, so a writable event for an old stream is ignored.
    var generation = 0
    /// Why it ended (a compacted cancel); nil while it runs.
    var ended: String?

    init(id: Int, startRevision: Int64) {
        self.id = id
        self.startRevision = startRevision
        lastDelivered = startRevision - 1
    }
}

/// A watch stream's client end: records what arrives; refuses at random, from its own seeded
/// generator (so the hub's order among streams never reaches the run).
final class SimWatchSink: WatchSink {
    var received: [WatchResponse] = []
    var random: SplitMix64
    var refused = false
    /// A writable event is on its way for the current refusal.
    var writableScheduled = false
    var closed: String?
    let refusePercent: UInt64

    init(seed: UInt64, refusePercent: UInt64) {
        random = SplitMix64(seed: seed)
        self.refusePercent = refusePercent
    }

    func send(_ response: WatchResponse) -> Bool {
        guard closed == nil, !refused else { return false }
        if random.next() % 100 < refusePercent {
            refused = true
            return false
        }
        received.append(response)
        return true
    }

    func close(reason: String) {
        closed = reason
    }
}

extension Simulation {
    /// The key range every simulated watcher watches: every key.
    static let watchKey: [UInt8] = [0]
    static let watchRangeEnd: [UInt8] = [0]

    func startWatchers() {
        for _ in 0..<SimWatchState.initialWatchers {
            addWatcher(startRevision: 1)
        }
    }

    func addWatcher(startRevision: Int64) {
        guard watch.watchers.count < SimWatchState.watchersMax else { return }
        let id = watch.watchers.count
        watch.watchers.append(SimWatcher(id: id, startRevision: startRevision))
        schedule(.watchNext(watcher: id), after: 1 + random.next() % 30)
    }

    /// A replica process started: its hub is new.
    func watchProcessStarted(_ node: SimNode) {
        watch.hubs[node.id] = WatchHub(progressIntervalMilliseconds: 50 * Self.tickUnits)
    }

    /// A replica process died: its hub and every stream on it are gone.
    func watchProcessCrashed(_ node: SimNode) {
        watch.hubs[node.id] = nil
        for index in watch.watchers.indices where watch.watchers[index].node == node.id {
            collect(index)
            dropStream(index)
        }
    }

    /// After a replica's turn, as the server's loop: the hub sends what the turn applied.
    func watchAfterTurn(_ node: SimNode) {
        guard let runtime = node.runtime, let hub = watch.hubs[node.id] else { return }
        hub.afterTurn(runtime)
        collectAll()
    }

    /// A watcher's periodic step: (re)connect if it holds no stream, else ask for progress.
    func watchNext(_ id: Int) {
        guard watch.watchers[id].ended == nil else { return }
        defer { schedule(.watchNext(watcher: id), after: (5 + random.next() % 25) * Self.tickUnits) }
        if let stream = watch.watchers[id].stream, let nodeID = watch.watchers[id].node {
            guard let runtime = node(nodeID).runtime, let hub = watch.hubs[nodeID] else { return }
            if random.next() % 3 == 0 {
                hub.handle(.progress, on: stream, runtime: runtime)
                collectAll()
            }
            return
        }
        let live = nodes.filter { $0.runtime != nil && watch.hubs[$0.id] != nil }
        guard !live.isEmpty else { return }
        let target = live[Int(random.next() % UInt64(live.count))]
        let from = watch.watchers[id].lastDelivered + 1
        watch.watchers[id].generation += 1
        let sink = SimWatchSink(
            seed: options.seed &* 0x9E37_79B9 &+ UInt64(id) &* 7_919 &+ UInt64(watch.watchers[id].generation),
            refusePercent: inLivenessPhase ? 0 : SimWatchState.refusePercent)
        let stream = WatchStream(sink: sink)
        watch.watchers[id].stream = stream
        watch.watchers[id].sink = sink
        watch.watchers[id].node = target.id
        watch.watchers[id].incarnation = target.incarnation
        watch.watchers[id].items.append(.opened(startRevision: from))
        trace.note(time, "watcher w\(id) opens a stream on r\(target.id) from revision \(from)")
        watch.hubs[target.id]!.handle(
            .create(WatchCreate(key: Self.watchKey, rangeEnd: Self.watchRangeEnd, startRevision: from)), on: stream,
            runtime: target.runtime!)
        collectAll()
    }

    /// The client reads again: the hub resumes the stream.
    func watchWritable(_ id: Int, generation: Int) {
        guard watch.watchers[id].generation == generation, let stream = watch.watchers[id].stream,
            let nodeID = watch.watchers[id].node, let runtime = node(nodeID).runtime, let hub = watch.hubs[nodeID],
            let sink = watch.watchers[id].sink
        else { return }
        sink.refused = false
        sink.writableScheduled = false
        hub.resume(stream, runtime: runtime)
        collectAll()
    }

    /// Moves what every sink received into its watcher's items (in watcher order), and
    /// schedules a writable event for each sink that refused.
    func collectAll() {
        for index in watch.watchers.indices { collect(index) }
    }

    func collect(_ index: Int) {
        guard let sink = watch.watchers[index].sink else { return }
        let received = sink.received
        sink.received.removeAll()
        for response in received {
            if response.canceled {
                endWatcher(index, response)
                return
            }
            if response.created { continue }
            if response.events.isEmpty {
                if response.watchID == -1 { watch.watchers[index].items.append(.progress(revision: response.revision)) }
                continue
            }
            watch.watchers[index].items.append(
                .events(
                    response.events.map {
                        WatchChecker.Event(
                            revision: $0.revision, isDelete: $0.type == .delete, key: $0.kv.key, value: $0.kv.value)
                    }))
            watch.watchers[index].lastDelivered = max(watch.watchers[index].lastDelivered, response.events.last!.revision)
        }
        if let reason = sink.closed {
            trace.note(time, "watcher w\(index)'s stream closed: \(reason)")
            dropStream(index)
            return
        }
        if sink.refused && !sink.writableScheduled {
            sink.writableScheduled = true
            schedule(
                .watchWritable(watcher: index, generation: watch.watchers[index].generation),
                after: 1 + sink.random.next() % (10 * Self.tickUnits))
        }
    }

    func dropStream(_ index: Int) {
        watch.watchers[index].stream = nil
        watch.watchers[index].sink = nil
        watch.watchers[index].node = nil
        watch.watchers[index].generation += 1
    }

    /// etcd's compacted cancel (a watcher that was away while history it needed was
    /// compacted): the watcher ends; another starts from the compacted revision, as a
    /// client would. Any other cancel is a violation.
    func endWatcher(_ index: Int, _ response: WatchResponse) {
        let from = watch.watchers[index].lastDelivered + 1
        if response.compactRevision > 0 && response.compactRevision >= from {
            watch.watchers[index].ended = "compacted at \(response.compactRevision) (from \(from))"
            trace.note(time, "watcher w\(index) cancelled: revision \(from) compacted at \(response.compactRevision)")
            dropStream(index)
            addWatcher(startRevision: response.compactRevision)
        } else {
            violation(
                "watch: w\(index)'s watch from revision \(from) was cancelled: \(response.cancelReason) "
                    + "(compact revision \(response.compactRevision))")
            watch.watchers[index].ended = "cancelled"
            dropStream(index)
        }
    }

    /// Every running watcher holds a stream on a live replica and has been sent everything
    /// that replica applied (revision 1, the empty store, has no events).
    var watchersCaughtUp: Bool {
        watch.watchers.allSatisfy { watcher in
            guard watcher.ended == nil else { return true }
            guard let nodeID = watcher.node, let runtime = node(nodeID).runtime, watcher.sink?.refused == false else {
                return false
            }
            return runtime.kv.revision <= 1 || watcher.lastDelivered >= runtime.kv.revision
        }
    }

    /// Event responses received by all watchers.
    var watchResponsesReceived: Int {
        watch.watchers.reduce(0) { total, watcher in
            total + watcher.items.filter { if case .events = $0 { true } else { false } }.count
        }
    }

    /// Checks every watcher against the reference from the chosen commands. Runs whenever
    /// the replicas converged, even after a liveness failure (a watcher that never caught
    /// up fails liveness first; the checker then says which events it missed).
    func checkWatches() {
        let finals = Set(nodes.compactMap { $0.runtime?.kv.stateDigest() })
        guard finals.count == 1, nodes.allSatisfy({ $0.runtime != nil }),
            let final = nodes.first?.runtime?.kv.revision
        else { return }
        guard let reference = watchReference(through: final) else { return }
        let checker = WatchChecker(reference: reference)
        for watcher in watch.watchers {
            let found = checker.check(
                watcher: "w\(watcher.id)", startRevision: watcher.startRevision, items: watcher.items,
                finalRevision: watcher.ended == nil ? final : nil)
            for text in found { violation("watch: \(text)") }
        }
    }

    /// Each revision's changes (every key), from a ghost store that applies every chosen
    /// command in slot order but never compacts, read at each revision — not from the
    /// change log the hub sends from.
    func watchReference(through final: Int64) -> [Int64: [WatchChecker.Event]]? {
        var ghost = KVStore()
        let lastSlot = appliedValues.keys.max() ?? 0
        guard lastSlot >= 1 else { return [:] }
        for slot in 1...lastSlot {
            guard let value = appliedValues[slot] else {
                violation("watch reference: slot \(slot) was never applied by any replica")
                return nil
            }
            for command in value.commands {
                if let decoded = try? WriteCommand.decode(command.bytes), case .compact = decoded.operation { continue }
                _ = ghost.apply(encoded: command.bytes)
            }
        }
        // The chosen history may run ahead of the converged replicas (a slot applied by a
        // replica in an earlier life, chosen but not yet learned by the current ones: seed
        // 741), never behind them. A watcher may have seen those revisions already.
        guard ghost.revision >= final else {
            violation("watch reference: the chosen commands reach revision \(ghost.revision), the replicas \(final)")
            return nil
        }
        var states: [Int64: [[UInt8]: (value: [UInt8], modRevision: Int64)]] = [:]
        for revision in 1...ghost.revision {
            guard let response = try? ghost.range(RangeRequest(key: Self.watchKey, rangeEnd: Self.watchRangeEnd, revision: revision))
            else {
                violation("watch reference: the ghost store cannot read revision \(revision)")
                return nil
            }
            var state: [[UInt8]: (value: [UInt8], modRevision: Int64)] = [:]
            for kv in response.kvs { state[kv.key] = (kv.value, kv.modRevision) }
            states[revision] = state
        }
        return WatchChecker.reference(fromStates: states, first: 2, last: ghost.revision)
    }
}
