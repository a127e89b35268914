import EtcdAPI
import KVStore
import ReplicaRuntime
import UnaryGRPC

/// One etcd Watch stream (a bidirectional call): its responder and its watchers. Created on
/// the connection's event loop; everything but `responder` is touched only on the replica
/// loop's thread (through `WatchHub`).
final class WatchStream: @unchecked Sendable {
    let responder: StreamingResponder
    /// Watchers by id (ids are per stream, as in etcd).
    var watchers: [Int64: Watcher] = [:]
    /// The next id `create` hands out when the client chose none.
    var nextWatchID: Int64 = 0
    /// `send` refused a message: nothing more is sent until `onWritable` (each watcher's
    /// `nextRevision` says where it resumes, from the store's history).
    var isBlocked = false
    /// Control responses (created, canceled, progress) refused while blocked, sent first on
    /// resume. Invariant: count <= `WatchHub.controlPendingMax`.
    var controlPending: [[UInt8]] = []
    var isClosed = false

    init(responder: StreamingResponder) {
        self.responder = responder
    }
}

/// One watcher: a key range and the next revision whose events it has not been sent.
struct Watcher {
    let id: Int64
    let key: [UInt8]
    let rangeEnd: [UInt8]
    let filterPuts: Bool
    let filterDeletes: Bool
    let prevKV: Bool
    let progressNotify: Bool
    /// Invariant: every event of revisions below `nextRevision` in the range was sent (or
    /// filtered out); none at or above it was.
    var nextRevision: Int64
}

/// The replica's watchers, on the replica loop's thread only. It pulls from the store's
/// history rather than having events pushed: after every turn (`afterTurn`) each watcher
/// behind the store's revision is sent `kv.events(from: nextRevision, …)`. So catch-up from
/// history and live events are one code path, run on the thread that applies commands:
/// nothing applied in between can be missed or sent twice, events leave in revision order,
/// and a snapshot install or a replay after recovery needs nothing special.
///
/// Bounded: a stream whose `send` is refused (its client reads too slowly) is blocked, and
/// the hub holds nothing for it but each watcher's `nextRevision`; it resumes from history
/// on `onWritable`, or gets etcd's compacted cancel if its revision was compacted meanwhile.
final class WatchHub {
    /// Events per response, at most (whole revisions; a revision with more goes alone).
    static let eventsPerResponseMax = 256
    /// Bytes of events per response, about (whole revisions; a larger one goes alone).
    static let responseBytesMax = 1 << 20
    /// Watchers on one stream, at most.
    static let watchersPerStreamMax = 4_096
    /// Control responses held for a blocked stream; over it the stream is reset.
    static let controlPendingMax = 256
    /// How often a `progress_notify` watcher that is in sync hears the current revision
    /// (etcd's default is 10 minutes).
    static let progressInterval = Duration.seconds(600)

    let clusterID: UInt64
    let memberID: UInt64
    private var streams: [ObjectIdentifier: WatchStream] = [:]
    private let clock = ContinuousClock()
    private var lastProgress: ContinuousClock.Instant
    private let progressInterval: Duration

    init(clusterID: UInt64, memberID: UInt64, progressInterval: Duration = WatchHub.progressInterval) {
        self.clusterID = clusterID
        self.memberID = memberID
        self.progressInterval = progressInterval
        lastProgress = clock.now
    }

    /// Watchers in all streams (for tests, logs and metrics).
    var watcherCount: Int { streams.values.reduce(0) { $0 + $1.watchers.count } }
    /// Open Watch streams.
    var streamCount: Int { streams.count }

    // MARK: - Requests (loop thread)

    func handle(_ request: WatchRequestMessage, on stream: WatchStream, runtime: ReplicaRuntime) {
        guard !stream.isClosed else { return }
        streams[ObjectIdentifier(stream)] = stream
        switch request {
        case .create(let create): self.create(create, on: stream, runtime: runtime)
        case .cancel(let watchID): cancel(watchID, on: stream, runtime: runtime)
        case .progress: requestProgress(on: stream, runtime: runtime)
        case .empty: break
        }
    }

    /// The client went away: forget the stream.
    func remove(_ stream: WatchStream) {
        stream.isClosed = true
        stream.watchers.removeAll()
        stream.controlPending.removeAll()
        streams.removeValue(forKey: ObjectIdentifier(stream))
    }

    /// The stream's queue drained after a refusal: send what was held back, then catch
    /// every watcher up from history.
    func resume(_ stream: WatchStream, runtime: ReplicaRuntime) {
        guard !stream.isClosed, stream.isBlocked else { return }
        stream.isBlocked = false
        while !stream.controlPending.isEmpty {
            guard stream.responder.send(stream.controlPending[0]) else {
                stream.isBlocked = true
                return
            }
            stream.controlPending.removeFirst()
        }
        let kv = runtime.kv
        pump(stream, kv: kv, round: runtime.headerRound)
    }

    func create(_ create: WatchCreate, on stream: WatchStream, runtime: ReplicaRuntime) {
        let kv = runtime.kv
        let round = runtime.headerRound
        var watchID = create.watchID
        if watchID == 0 {
            while stream.watchers[stream.nextWatchID] != nil { stream.nextWatchID += 1 }
            watchID = stream.nextWatchID
            stream.nextWatchID += 1
        }
        var response = WatchResponseMessage(header: header(kv.revision, round: round), watchID: watchID, created: true)
        if stream.watchers[watchID] != nil || watchID < 0 {
            response.canceled = true
            response.cancelReason = "mvcc: watcher ID already in use"
            sendControl(response.encode(), on: stream)
            return
        }
        if stream.watchers.count >= Self.watchersPerStreamMax {
            response.canceled = true
            response.cancelReason = "synod: too many watchers on one stream (limit \(Self.watchersPerStreamMax))"
            sendControl(response.encode(), on: stream)
            return
        }
        // etcd: start_revision 0 is "from now", i.e. the next revision.
        let start = create.startRevision > 0 ? create.startRevision : kv.revision + 1
        stream.watchers[watchID] = Watcher(
            id: watchID, key: create.key, rangeEnd: create.rangeEnd, filterPuts: create.filterPuts,
            filterDeletes: create.filterDeletes, prevKV: create.prevKV, progressNotify: create.progressNotify,
            nextRevision: start)
        sendControl(response.encode(), on: stream)
        // History catch-up now, on this thread: the next turn's commands come after it.
        pump(stream, kv: kv, round: round)
    }

    func cancel(_ watchID: Int64, on stream: WatchStream, runtime: ReplicaRuntime) {
        guard stream.watchers.removeValue(forKey: watchID) != nil else { return }
        let response = WatchResponseMessage(
            header: header(runtime.kv.revision, round: runtime.headerRound), watchID: watchID, canceled: true)
        sendControl(response.encode(), on: stream)
    }

    /// etcd 3.4's RequestProgress: the current revision, with watch id -1, only when every
    /// watcher of the stream has been sent everything through it (otherwise nothing, as
    /// etcd does), so it never claims a revision whose events are still to come.
    func requestProgress(on stream: WatchStream, runtime: ReplicaRuntime) {
        let kv = runtime.kv
        let round = runtime.headerRound
        pump(stream, kv: kv, round: round)
        guard !stream.isBlocked, stream.watchers.values.allSatisfy({ $0.nextRevision > kv.revision }) else { return }
        sendControl(WatchResponseMessage(header: header(kv.revision, round: round), watchID: -1).encode(), on: stream)
    }

    // MARK: - After every turn (loop thread)

    /// Sends every watcher what the store applied since its `nextRevision`.
    func afterTurn(_ runtime: ReplicaRuntime) {
        guard !streams.isEmpty else { return }
        let kv = runtime.kv
        let round = runtime.headerRound
        // Streams are independent: the order among them reaches no output.
        for stream in streams.values {
            guard !stream.isBlocked else { continue }
            pump(stream, kv: kv, round: round)
        }
        if lastProgress.duration(to: clock.now) >= progressInterval {
            lastProgress = clock.now
            sendProgressNotifications(kv: kv, round: round)
        }
    }

    /// etcd's periodic progress notification to `progress_notify` watchers that are in sync:
    /// the revision through which they were sent everything.
    func sendProgressNotifications(kv: KVStore, round: UInt64) {
        for stream in streams.values where !stream.isBlocked {
            for watcher in stream.watchers.values.sorted(by: { $0.id < $1.id }) where watcher.progressNotify {
                guard watcher.nextRevision > kv.revision else { continue }
                let response = WatchResponseMessage(header: header(kv.revision, round: round), watchID: watcher.id)
                guard send(response.encode(), on: stream) else { return }
            }
        }
    }

    /// Brings each watcher of `stream` up to the store's revision, response by response,
    /// until done or the stream refuses one.
    func pump(_ stream: WatchStream, kv: KVStore, round: UInt64) {
        for watchID in stream.watchers.keys.sorted() {
            guard !stream.isBlocked else { return }
            guard var watcher = stream.watchers[watchID] else { continue }
            while watcher.nextRevision <= kv.revision && !stream.isBlocked {
                let events: [WatchEvent]
                do {
                    events = try kv.events(
                        from: watcher.nextRevision, key: watcher.key, rangeEnd: watcher.rangeEnd,
                        limit: Self.eventsPerResponseMax)
                } catch {
                    sendCompacted(watcher, error: error, on: stream, kv: kv, round: round)
                    break
                }
                let (batch, through) = Self.responseBatch(events, storeRevision: kv.revision)
                precondition(through >= watcher.nextRevision - 1, "a watcher went back")
                let delivered = batch.filter { event in
                    switch event.type {
                    case .put: return !watcher.filterPuts
                    case .delete: return !watcher.filterDeletes
                    }
                }
                if !delivered.isEmpty {
                    let response = WatchResponseMessage(
                        header: header(kv.revision, round: round), watchID: watcher.id, events: delivered,
                        includePrevKV: watcher.prevKV)
                    guard send(response.encode(), on: stream) else { break }
                }
                watcher.nextRevision = through + 1
            }
            if stream.watchers[watchID] != nil { stream.watchers[watchID] = watcher }
        }
    }

    /// The events of one response (whole revisions, within `eventsPerResponseMax` and about
    /// `responseBytesMax`, at least one revision) and the revision through which the
    /// watcher is then in sync.
    static func responseBatch(_ events: [WatchEvent], storeRevision: Int64) -> ([WatchEvent], through: Int64) {
        guard !events.isEmpty else { return ([], storeRevision) }
        // `events` stopped at `eventsPerResponseMax` (whole revisions): sync only through its last.
        var through = events.count >= eventsPerResponseMax ? events.last!.revision : storeRevision
        var bytes = 0
        var end = 0
        var index = 0
        while index < events.count {
            // One revision's events go together.
            let revision = events[index].revision
            var next = index
            var revisionBytes = 0
            while next < events.count && events[next].revision == revision {
                revisionBytes += WatchResponseMessage.approximateBytes(events[next])
                next += 1
            }
            if end > 0 && bytes + revisionBytes > responseBytesMax {
                through = events[end - 1].revision
                break
            }
            bytes += revisionBytes
            end = next
            index = next
        }
        return (Array(events[..<end]), through)
    }

    /// etcd's answer to a watcher whose next revision was compacted: `compact_revision` set
    /// and the watcher cancelled (clients then watch again from it).
    func sendCompacted(_ watcher: Watcher, error: KVError, on stream: WatchStream, kv: KVStore, round: UInt64) {
        var response = WatchResponseMessage(header: header(kv.revision, round: round), watchID: watcher.id, canceled: true)
        response.compactRevision = kv.compactedRevision
        if case .compacted(let revision) = error { response.compactRevision = revision }
        response.cancelReason = error.message
        guard send(response.encode(), on: stream) else { return }
        stream.watchers.removeValue(forKey: watcher.id)
    }

    // MARK: - Sending

    /// Sends, or blocks the stream on a refusal (the message is dropped; the caller keeps
    /// its watcher's `nextRevision` where it was).
    func send(_ bytes: [UInt8], on stream: WatchStream) -> Bool {
        guard !stream.isBlocked else { return false }
        if stream.responder.send(bytes) { return true }
        stream.isBlocked = true
        return false
    }

    /// A control response must not be lost: held (boundedly) while the stream is blocked.
    func sendControl(_ bytes: [UInt8], on stream: WatchStream) {
        if send(bytes, on: stream) { return }
        guard stream.controlPending.count < Self.controlPendingMax else {
            stream.responder.finish(
                GRPCStatus(code: GRPCStatus.resourceExhausted, message: "synod: watch stream too far behind"))
            remove(stream)
            return
        }
        stream.controlPending.append(bytes)
    }

    func header(_ revision: Int64, round: UInt64) -> Etcdserverpb_ResponseHeader {
        var header = Etcdserverpb_ResponseHeader()
        header.clusterID = clusterID
        header.memberID = memberID
        header.revision = revision
        header.raftTerm = round
        return header
    }
}

extension ReplicaRuntime {
    /// The ballot round for response headers, as `status` reports it but without `status`'s
    /// disk listing (the hub asks after every turn).
    var headerRound: UInt64 { replica?.ballot?.round ?? replica?.acceptor.promised.round ?? 0 }
}
