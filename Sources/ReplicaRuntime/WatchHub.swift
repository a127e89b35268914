import KVStore

/// etcd's WatchCreateRequest, decoded.
public struct WatchCreate: Sendable, Equatable {
    public var key: [UInt8] = []
    public var rangeEnd: [UInt8] = []
    public var startRevision: Int64 = 0
    public var progressNotify = false
    public var filterPuts = false
    public var filterDeletes = false
    public var prevKV = false
    public var watchID: Int64 = 0
    /// Asked for, never done: Synod sends each response whole (`WatchHub.responseBytesMax`
    /// bounds it by splitting at revision boundaries instead).
    public var fragment = false

    public init(key: [UInt8] = [], rangeEnd: [UInt8] = [], startRevision: Int64 = 0, prevKV: Bool = false) {
        self.key = key
        self.rangeEnd = rangeEnd
        self.startRevision = startRevision
        self.prevKV = prevKV
    }
}

/// etcd's WatchRequest, decoded.
public enum WatchRequest: Sendable, Equatable {
    case create(WatchCreate)
    case cancel(watchID: Int64)
    case progress
    /// A WatchRequest with no request set: etcd ignores it.
    case empty
}

/// etcd's WatchResponse, before encoding (the server's sink adds the header's cluster and
/// member ids and encodes it; the simulator's records it).
public struct WatchResponse: Sendable, Equatable {
    /// The header's revision: the store's revision when the response was made.
    public var revision: Int64
    /// The header's raft_term: the ballot round.
    public var round: UInt64
    public var watchID: Int64
    public var created = false
    public var canceled = false
    public var compactRevision: Int64 = 0
    public var cancelReason = ""
    public var events: [WatchEvent] = []
    /// Whether the events keep their `prevKV` (the watcher asked for `prev_kv`).
    public var includePrevKV = false

    public init(
        revision: Int64, round: UInt64, watchID: Int64, created: Bool = false, canceled: Bool = false,
        events: [WatchEvent] = [], includePrevKV: Bool = false
    ) {
        self.revision = revision
        self.round = round
        self.watchID = watchID
        self.created = created
        self.canceled = canceled
        self.events = events
        self.includePrevKV = includePrevKV
    }

    /// A progress notification: no events, not a create or cancel answer.
    public var isProgress: Bool { events.isEmpty && !created && !canceled }
}

/// Where a watch stream's responses go: the server's gRPC stream, or the simulator's client.
/// Called on the runtime's thread only.
public protocol WatchSink: AnyObject {
    /// Sends one response, or refuses it (its queue is at its bound): then nothing more is
    /// sent until the hub's `resume` for this stream.
    func send(_ response: WatchResponse) -> Bool
    /// Ends the stream: it is too far behind to hold its control responses.
    func close(reason: String)
}

/// One etcd Watch stream (a bidirectional call): its sink and its watchers. Everything but
/// the sink's own thread-safe parts is touched only on the runtime's thread (through
/// `WatchHub`).
public final class WatchStream: @unchecked Sendable {
    let sink: any WatchSink
    /// Watchers by id (ids are per stream, as in etcd).
    var watchers: [Int64: Watcher] = [:]
    /// The next id `create` hands out when the client chose none.
    var nextWatchID: Int64 = 0
    /// `send` refused a message: nothing more is sent until `resume` (each watcher's
    /// `nextRevision` says where it resumes, from the store's history).
    var isBlocked = false
    /// Control responses (created, canceled, progress) refused while blocked, sent first on
    /// resume. Invariant: count <= `WatchHub.controlPendingMax`.
    var controlPending: [WatchResponse] = []
    public internal(set) var isClosed = false

    public init(sink: any WatchSink) {
        self.sink = sink
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

/// A replica's watchers, on the runtime's thread only — the same code in the server (its
/// replica loop) and in the simulator. It pulls from the store's history rather than having
/// events pushed: after every turn (`afterTurn`) each watcher behind the store's revision is
/// sent `kv.events(from: nextRevision, …)`. So catch-up from history and live events are one
/// code path, run on the thread that applies commands: nothing applied in between can be
/// missed or sent twice, events leave in revision order, and a snapshot install or a replay
/// after recovery needs nothing special.
///
/// Bounded: a stream whose `send` is refused (its client reads too slowly) is blocked, and
/// the hub holds nothing for it but each watcher's `nextRevision`; it resumes from history
/// on `resume`, or gets etcd's compacted cancel if its revision was compacted meanwhile.
public final class WatchHub {
    /// Events per response, at most (whole revisions; a revision with more goes alone).
    public static let eventsPerResponseMax = 256
    /// Bytes of events per response, about (whole revisions; a larger one goes alone).
    public static let responseBytesMax = 1 << 20
    /// Watchers on one stream, at most.
    public static let watchersPerStreamMax = 4_096
    /// Control responses held for a blocked stream; over it the stream is closed.
    public static let controlPendingMax = 256
    /// How often a `progress_notify` watcher that is in sync hears the current revision
    /// (etcd's default is 10 minutes).
    public static let progressIntervalMilliseconds: UInt64 = 600_000

    private var streams: [ObjectIdentifier: WatchStream] = [:]
    private var lastProgress: RuntimeInstant?
    private let progressIntervalMilliseconds: UInt64

    public init(progressIntervalMilliseconds: UInt64 = WatchHub.progressIntervalMilliseconds) {
        self.progressIntervalMilliseconds = progressIntervalMilliseconds
    }

    /// Watchers in all streams (for tests, logs and metrics).
    public var watcherCount: Int { streams.values.reduce(0) { $0 + $1.watchers.count } }
    /// Open Watch streams.
    public var streamCount: Int { streams.count }

    // MARK: - Requests (runtime thread)

    public func handle(_ request: WatchRequest, on stream: WatchStream, runtime: ReplicaRuntime) {
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
    public func remove(_ stream: WatchStream) {
        stream.isClosed = true
        stream.watchers.removeAll()
        stream.controlPending.removeAll()
        streams.removeValue(forKey: ObjectIdentifier(stream))
    }

    /// The stream's queue drained after a refusal: send what was held back, then catch
    /// every watcher up from history.
    public func resume(_ stream: WatchStream, runtime: ReplicaRuntime) {
        guard !stream.isClosed, stream.isBlocked else { return }
        stream.isBlocked = false
        while !stream.controlPending.isEmpty {
            guard stream.sink.send(stream.controlPending[0]) else {
                stream.isBlocked = true
                return
            }
            stream.controlPending.removeFirst()
        }
        pump(stream, runtime: runtime)
    }

    func create(_ create: WatchCreate, on stream: WatchStream, runtime: ReplicaRuntime) {
        let kv = runtime.kv
        var watchID = create.watchID
        if watchID == 0 {
            while stream.watchers[stream.nextWatchID] != nil { stream.nextWatchID += 1 }
            watchID = stream.nextWatchID
            stream.nextWatchID += 1
        }
        var response = WatchResponse(revision: kv.revision, round: runtime.headerRound, watchID: watchID, created: true)
        if stream.watchers[watchID] != nil || watchID < 0 {
            response.canceled = true
            response.cancelReason = "mvcc: watcher ID already in use"
            sendControl(response, on: stream)
            return
        }
        if stream.watchers.count >= Self.watchersPerStreamMax {
            response.canceled = true
            response.cancelReason = "synod: too many watchers on one stream (limit \(Self.watchersPerStreamMax))"
            sendControl(response, on: stream)
            return
        }
        // etcd: start_revision 0 is "from now", i.e. the next revision.
        let start = create.startRevision > 0 ? create.startRevision : kv.revision + 1
        stream.watchers[watchID] = Watcher(
            id: watchID, key: create.key, rangeEnd: create.rangeEnd, filterPuts: create.filterPuts,
            filterDeletes: create.filterDeletes, prevKV: create.prevKV, progressNotify: create.progressNotify,
            nextRevision: start)
        sendControl(response, on: stream)
        // History catch-up now, on this thread: the next turn's commands come after it.
        pump(stream, runtime: runtime)
    }

    func cancel(_ watchID: Int64, on stream: WatchStream, runtime: ReplicaRuntime) {
        guard stream.watchers.removeValue(forKey: watchID) != nil else { return }
        let response = WatchResponse(
            revision: runtime.kv.revision, round: runtime.headerRound, watchID: watchID, canceled: true)
        sendControl(response, on: stream)
    }

    /// etcd 3.4's RequestProgress: the current revision, with watch id -1, only when every
    /// watcher of the stream has been sent everything through it (otherwise nothing, as
    /// etcd does), so it never claims a revision whose events are still to come.
    func requestProgress(on stream: WatchStream, runtime: ReplicaRuntime) {
        let kv = runtime.kv
        pump(stream, runtime: runtime)
        guard !stream.isBlocked, stream.watchers.values.allSatisfy({ $0.nextRevision > kv.revision }) else { return }
        sendControl(WatchResponse(revision: kv.revision, round: runtime.headerRound, watchID: -1), on: stream)
    }

    // MARK: - After every turn (runtime thread)

    /// Sends every watcher what the store applied since its `nextRevision`.
    public func afterTurn(_ runtime: ReplicaRuntime) {
        guard !streams.isEmpty else { return }
        // Streams are independent: the order among them reaches no output.
        for stream in streams.values {
            guard !stream.isBlocked else { continue }
            pump(stream, runtime: runtime)
        }
        let now = runtime.now
        guard let last = lastProgress else {
            lastProgress = now
            return
        }
        if last.milliseconds(to: now) >= progressIntervalMilliseconds {
            lastProgress = now
            sendProgressNotifications(runtime: runtime)
        }
    }

    /// etcd's periodic progress notification to `progress_notify` watchers that are in sync:
    /// the revision through which they were sent everything.
    func sendProgressNotifications(runtime: ReplicaRuntime) {
        let kv = runtime.kv
        for stream in streams.values where !stream.isBlocked {
            for watcher in stream.watchers.values.sorted(by: { $0.id < $1.id }) where watcher.progressNotify {
                guard watcher.nextRevision > kv.revision else { continue }
                let response = WatchResponse(revision: kv.revision, round: runtime.headerRound, watchID: watcher.id)
                guard send(response, on: stream) else { return }
            }
        }
    }

    /// Brings each watcher of `stream` up to the store's revision, response by response,
    /// until done or the stream refuses one.
    func pump(_ stream: WatchStream, runtime: ReplicaRuntime) {
        let kv = runtime.kv
        let round = runtime.headerRound
        let dropsEvents = runtime.options.bug == .dropWatchEvent
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
                    sendCompacted(watcher, error: error, on: stream, runtime: runtime)
                    break
                }
                let (batch, through) = Self.responseBatch(events, storeRevision: kv.revision)
                precondition(through >= watcher.nextRevision - 1, "a watcher went back")
                var delivered = batch.filter { event in
                    switch event.type {
                    case .put: return !watcher.filterPuts
                    case .delete: return !watcher.filterDeletes
                    }
                }
                // The injected bug: an event of every fifth revision is lost.
                if dropsEvents, let first = delivered.first, first.revision % 5 == 0 { delivered.removeFirst() }
                if !delivered.isEmpty {
                    let response = WatchResponse(
                        revision: kv.revision, round: round, watchID: watcher.id, events: delivered,
                        includePrevKV: watcher.prevKV)
                    guard send(response, on: stream) else { break }
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
                revisionBytes += approximateBytes(events[next])
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

    /// An event's encoded size, near enough to bound a response.
    public static func approximateBytes(_ event: WatchEvent) -> Int {
        64 + event.kv.key.count + event.kv.value.count
            + (event.prevKV.map { 48 + $0.key.count + $0.value.count } ?? 0)
    }

    /// etcd's answer to a watcher whose next revision was compacted: `compact_revision` set
    /// and the watcher cancelled (clients then watch again from it).
    func sendCompacted(_ watcher: Watcher, error: KVError, on stream: WatchStream, runtime: ReplicaRuntime) {
        let kv = runtime.kv
        var response = WatchResponse(revision: kv.revision, round: runtime.headerRound, watchID: watcher.id, canceled: true)
        response.compactRevision = kv.compactedRevision
        if case .compacted(let revision) = error { response.compactRevision = revision }
        response.cancelReason = error.message
        guard send(response, on: stream) else { return }
        stream.watchers.removeValue(forKey: watcher.id)
    }

    // MARK: - Sending

    /// Sends, or blocks the stream on a refusal (the message is dropped; the caller keeps
    /// its watcher's `nextRevision` where it was).
    func send(_ response: WatchResponse, on stream: WatchStream) -> Bool {
        guard !stream.isBlocked else { return false }
        if stream.sink.send(response) { return true }
        stream.isBlocked = true
        return false
    }

    /// Answers a watch create the caller may not make as etcd does: created and canceled at
    /// once, with watch id -1 (clientv3's `InvalidWatchID`) and the reason (auth).
    public func refuse(_ create: WatchCreate, reason: String, on stream: WatchStream, runtime: ReplicaRuntime) {
        handle(.empty, on: stream, runtime: runtime)  // registers the stream, as any request does
        var response = WatchResponse(
            revision: runtime.kv.revision, round: runtime.headerRound, watchID: -1, created: true, canceled: true)
        response.cancelReason = reason
        sendControl(response, on: stream)
    }

    /// A control response must not be lost: held (boundedly) while the stream is blocked.
    func sendControl(_ response: WatchResponse, on stream: WatchStream) {
        if send(response, on: stream) { return }
        guard stream.controlPending.count < Self.controlPendingMax else {
            stream.sink.close(reason: "synod: watch stream too far behind")
            remove(stream)
            return
        }
        stream.controlPending.append(response)
    }
}

extension ReplicaRuntime {
    /// The ballot round for response headers, as `status` reports it but without `status`'s
    /// disk listing (the hub asks after every turn).
    public var headerRound: UInt64 { replica?.ballot?.round ?? replica?.acceptor.promised.round ?? 0 }
}
