import KVStore
import Paxos
import Storage

/// A snapshot being sent to one peer, a few chunks per turn.
struct SnapshotTransfer {
    var reader: SnapshotReader
    var offset: UInt64 = 0
}

extension ReplicaRuntime {
    /// Snapshots the state machine and compacts the log every `snapshotEverySlots`, once the
    /// log taken in since the last snapshot is large enough (`snapshotLogShare`, capped by
    /// `snapshotLogBytesMax`).
    func compactIfDue() {
        // The store's own applied slot, not the core's: within a turn the core runs ahead of
        // the store until the turn's output is carried out, and a snapshot must hold exactly
        // the slots it claims.
        let applied = appliedThroughKV
        guard snapshotWriting == nil, let storage, replica != nil,
            applied >= snapshotThrough + Slot(options.snapshotEverySlots) + firstSnapshotStagger,
            options.snapshotLogShare == 0
                || appliedBytesSinceSnapshot * options.snapshotLogShare >= lastSnapshotBytes
                || appliedBytesSinceSnapshot >= options.snapshotLogBytesMax
        else { return }
        let pending: PendingSnapshot
        do {
            guard let begun = try storage.beginSnapshot(through: applied) else {
                snapshotThrough = max(snapshotThrough, storage.snapshotThrough)
                return
            }
            pending = begun
        } catch {
            environment.fatal("cannot write a snapshot, stopping: \(error)")
        }
        snapshotWriting = (storageLife, applied)
        appliedBytesSinceSnapshot = 0
        // The store is a value: this copy is the state through `applied`, encoded and written
        // off the driver's thread while the replica goes on (an 80 MB store took the loop
        // long enough for followers to call elections).
        let image = kv
        environment.runInBackground {
            do {
                try pending.write(stateMachine: image.snapshot())
                return .snapshotWritten(pending, failure: nil)
            } catch {
                return .snapshotWritten(pending, failure: "\(error)")
            }
        }
    }

    /// Replicas take their first snapshot at staggered slots (replica i of n waits i/n of an
    /// interval more), so that afterwards they do not all copy, encode and write their store
    /// at the same moment: on one machine that starved every loop at once and followers
    /// called elections.
    var firstSnapshotStagger: Slot {
        guard snapshotThrough == 0, let index = options.paxos.replicas.firstIndex(of: id) else { return 0 }
        return Slot(options.snapshotEverySlots) * Slot(index) / Slot(options.paxos.replicas.count)
    }

    /// A background snapshot is on disk: make it the base of recovery, compact the log, and
    /// let the core forget the slots it covers. One from an earlier life of the storage (an
    /// injected failure reopened it meanwhile) is left to the next recovery.
    func snapshotWritten(_ pending: PendingSnapshot, failure: String?, output: inout Output) {
        guard let writing = snapshotWriting, let storage, writing.storageLife == storageLife,
            writing.through == pending.through
        else { return }
        snapshotWriting = nil
        if let failure { environment.fatal("cannot write a snapshot, stopping: \(failure)") }
        let cleanup: StorageCleanup
        do {
            cleanup = try storage.adoptDeferringCleanup(pending)
        } catch {
            environment.fatal("cannot compact after a snapshot, stopping: \(error)")
        }
        // Unlinking the older snapshot and the covered segments (tens of MB) and the
        // directory fsync held the loop for 16–55 ms (measured); they change nothing a
        // recovery depends on — it takes the newest snapshot and skips what it covers, as
        // after a crash in the middle of them — so they run off the driver's thread.
        if !cleanup.isEmpty {
            cleanupsInFlight += 1
            environment.runInBackground {
                do {
                    try cleanup.run()
                    return .storageCleaned(failure: nil)
                } catch {
                    return .storageCleaned(failure: "\(error)")
                }
            }
        }
        guard pending.through > snapshotThrough else { return }
        snapshotThrough = pending.through
        lastSnapshotBytes = pending.stateMachineBytes
        snapshotsSaved += 1
        environment.log(.info, "snapshot through slot \(pending.through) written; log compacted (disk \(storage.diskUsageBytes) bytes)")
        if replica != nil {
            // The compaction drops a snapshot interval of log entries from the core; freeing
            // their commands (hundreds of thousands of arrays under load) on the driver's
            // thread held it for 12–15 ms. The last reference to them goes elsewhere — unless
            // the core did not compact (its snapshot point was ahead already) and still shares
            // the log with the box: then the box dies here, at the end of this scope, before
            // a write to the log would copy it.
            let compactedBefore = replica!.acceptor.snapshotThrough
            let retired = Discarded(replica!.acceptor.entries)
            output.append(replica!.step(.compacted(through: pending.through)))
            if replica!.acceptor.snapshotThrough > compactedBefore { environment.discard(retired) }
        }
    }

    /// Starts sending the newest snapshot to a peer that lacks the compacted log (a
    /// transfer already under way goes on).
    func startSnapshotTransfer(to peer: ReplicaID) {
        guard snapshotTransfers[peer] == nil else { return }
        do {
            guard let reader = try storage?.snapshotReader() else { return }
            environment.log(.info, "sending snapshot through slot \(reader.through) (\(reader.totalBytes) bytes) to r\(peer)")
            snapshotTransfers[peer] = SnapshotTransfer(reader: reader)
        } catch {
            environment.log(.error, "cannot read the snapshot for r\(peer): \(error)")
        }
    }

    /// Sends each transfer's next chunks, up to `snapshotBytesPerTurnMax` per peer: a large
    /// snapshot never floods the transport's bounded per-peer queue.
    func continueSnapshotTransfers() {
        for peer in snapshotTransfers.keys.sorted() {
            var transfer = snapshotTransfers[peer]!
            var sent = 0
            do {
                while sent < options.snapshotBytesPerTurnMax && transfer.offset < transfer.reader.totalBytes {
                    let bytes = try transfer.reader.read(at: transfer.offset, count: options.snapshotChunkBytesMax)
                    guard !bytes.isEmpty else { break }
                    let isLast = transfer.offset + UInt64(bytes.count) >= transfer.reader.totalBytes
                    environment.sendSnapshotChunk(
                        SnapshotChunk(
                            through: transfer.reader.through, offset: transfer.offset,
                            totalBytes: transfer.reader.totalBytes, bytes: bytes, isLast: isLast),
                        to: peer)
                    transfer.offset += UInt64(bytes.count)
                    sent += bytes.count
                }
            } catch {
                // A newer snapshot replaced the file being sent: the core asks again.
                environment.log(.info, "snapshot transfer to r\(peer) abandoned: \(error)")
                snapshotTransfers[peer] = nil
                continue
            }
            snapshotTransfers[peer] = transfer.offset >= transfer.reader.totalBytes ? nil : transfer
        }
    }

    /// Assembles a snapshot from its chunks; when it is complete, installs it — after
    /// carrying out what this turn stepped so far and releasing every held output, so that
    /// slots committed earlier are applied *before* the newer state machine replaces the
    /// store, never on top of it.
    func receiveSnapshotChunk(_ chunk: SnapshotChunk, from peer: ReplicaID, output: inout Output) {
        guard let replica, chunk.through > replica.learner.appliedThrough else { return }
        do {
            if chunk.offset == 0 {
                installer = try storage!.beginSnapshotInstall(through: chunk.through, totalBytes: chunk.totalBytes)
                installerFrom = peer
            }
            guard let installer, installer.through == chunk.through, installerFrom == peer else { return }
            try installer.write(chunk.bytes, at: chunk.offset)
            guard chunk.isLast else { return }
            self.installer = nil
            let body = try installer.finish()
            let restored = try KVStore(snapshot: body)
            if options.bug != .installSnapshotMidTurn {
                // Everything stepped before — this turn's output and those held for a sync —
                // is made durable and released (applied) before the store is replaced.
                carryOut(output)
                output = Output()
                guard !isHalted else { return }
                drain()
            }
            // Carrying out may have killed the process at a crash point (the simulator's).
            guard !isHalted, let replica = self.replica, chunk.through > replica.learner.appliedThrough else { return }
            kv = restored
            appliedBytesSinceSnapshot = 0
            lastSnapshotBytes = body.count
            snapshotThrough = chunk.through
            appliedThroughKV = chunk.through
            snapshotsInstalled += 1
            environment.log(.notice, "installed snapshot through slot \(chunk.through) from r\(peer)")
            output.append(self.replica!.step(.snapshotInstalled(through: chunk.through)))
        } catch let error as StorageError {
            if case .fsyncFailed = error { environment.fatal("fsync failed while installing a snapshot: \(error)") }
            installer = nil
            environment.log(.error, "snapshot from r\(peer) rejected: \(error)")
        } catch {
            installer = nil
            environment.log(.error, "snapshot from r\(peer) rejected: \(error)")
        }
    }
}
