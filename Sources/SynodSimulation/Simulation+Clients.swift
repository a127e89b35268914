import KVStore
import Linearizability
import Paxos
import ReplicaRuntime

/// A simulated client: one operation at a time, each write with a fresh `(client,
/// sequence)` request id that every retry of it reuses (exactly-once).
struct SimClient {
    let id: Int
    var sequence: UInt64 = 0
    var operationNumber = 0
    var current: ClientOperation?
    /// The last value this client saw per key, used as CAS expectations.
    var lastSeen: [String: String] = [:]

    init(id: Int) {
        self.id = id
    }
}

struct ClientOperation {
    let number: Int
    let input: KVModel.Input
    let request: ClientRequest
    let call: UInt64
    var deadline: UInt64
    var attempt = 0
}

enum ClientRequest {
    case write(client: Int, operation: Int, command: WriteCommand)
    case read(client: Int, operation: Int, key: String)
}

enum ClientReply {
    case write(WriteResult)
    case value(String?)
    /// Not served here (no leader, leadership lost, queue full): try again.
    case retry
}

extension Simulation {
    func startOperation(client clientID: Int) {
        guard !inLivenessPhase, operationsIssued < options.operationCount else { return }
        if startAuthOperation(client: clientID) { return }  // Simulation+Auth.swift
        operationsIssued += 1
        var client = clients[clientID - 1]
        client.operationNumber += 1
        let number = client.operationNumber
        let key = "k\(random.next() % UInt64(options.keyCount))"
        // Now and then a large value, so batches, forwards and promises reach their byte bounds.
        let padding = random.next() % 8 == 0 ? String(repeating: "x", count: Int(200 + random.next() % 1_600)) : ""
        let value = "c\(clientID).\(number)" + padding
        let roll = random.next() % 100
        let input: KVModel.Input
        let request: ClientRequest
        if roll < 30 {
            input = .get(key: key)
            request = .read(client: clientID, operation: number, key: key)
        } else {
            client.sequence += 1
            let requestID = RequestID(clientID: UInt64(clientID), sequence: client.sequence)
            let operation: WriteOperation
            if roll < 65 {
                input = .put(key: key, value: value)
                operation = .put(PutRequest(key: Array(key.utf8), value: Array(value.utf8)))
            } else if roll < 75 {
                input = .delete(key: key)
                operation = .deleteRange(DeleteRangeRequest(key: Array(key.utf8)))
            } else {
                let expected = random.next() % 4 == 0 ? nil : client.lastSeen[key]
                input = .cas(key: key, expected: expected, new: value)
                let compare =
                    expected.map {
                        Compare(key: Array(key.utf8), result: .equal, target: .value(Array($0.utf8)))
                    } ?? Compare(key: Array(key.utf8), result: .equal, target: .version(0))
                operation = .txn(
                    TxnRequest(
                        compare: [compare],
                        success: [.put(PutRequest(key: Array(key.utf8), value: Array(value.utf8)))]))
            }
            request = .write(
                client: clientID, operation: number,
                command: WriteCommand(requestID: requestID, operation: asSimulatedUser(operation)))
        }
        client.current = ClientOperation(
            number: number, input: input, request: request, call: time,
            deadline: time + Self.operationDeadlineUnits)
        clients[clientID - 1] = client
        sendAttempt(client: clientID)
    }

    /// Sends the current operation to a random replica and arms its timeout.
    func sendAttempt(client clientID: Int) {
        guard var operation = clients[clientID - 1].current else { return }
        operation.attempt += 1
        clients[clientID - 1].current = operation
        let target = ReplicaID(1 + random.next() % UInt64(nodes.count))
        if random.next() % 100 >= plan.lossPercent {
            schedule(.request(to: target, operation.request), after: networkDelay())
        }
        schedule(
            .attemptTimeout(client: clientID, operation: operation.number, attempt: operation.attempt),
            after: Self.attemptTimeoutUnits)
    }

    /// A client request reaches a replica: it goes into the runtime's next turn, with a
    /// deadline like the server's (the client's attempt timeout).
    func serve(_ request: ClientRequest, at node: SimNode) {
        guard node.isUp else { return }
        let deadline = now.advanced(byMilliseconds: Self.attemptTimeoutUnits)
        switch request {
        case .write(let client, let operation, let command):
            deliver(
                .write(
                    command, Command(command.encode()), deadline: deadline,
                    reply: { [unowned self] outcome in
                        switch outcome {
                        case .success(let result, _): self.reply(.write(result), to: client, operation: operation)
                        case .failure: self.reply(.retry, to: client, operation: operation)
                        }
                    }),
                to: node)
        case .read(let client, let operation, let key):
            deliver(
                .read(
                    RangeRequest(key: Array(key.utf8)), serializable: false, deadline: deadline,
                    reply: { [unowned self] outcome in
                        switch outcome {
                        case .success(let response, _):
                            let value = response.kvs.first.map { String(decoding: $0.value, as: UTF8.self) }
                            self.reply(.value(value), to: client, operation: operation)
                        case .failure:
                            self.reply(.retry, to: client, operation: operation)
                        }
                    }),
                to: node)
        }
    }

    func reply(_ reply: ClientReply, to client: Int, operation: Int) {
        guard random.next() % 100 >= plan.lossPercent else { return }
        schedule(.response(client: client, operation: operation, reply), after: networkDelay())
    }

    func receive(_ reply: ClientReply, client clientID: Int, operation number: Int) {
        guard let operation = clients[clientID - 1].current, operation.number == number else { return }
        switch reply {
        case .retry:
            if time >= operation.deadline {
                giveUp(client: clientID)
            } else {
                clients[clientID - 1].current!.attempt += 1  // the armed timeout no longer applies
                schedule(.attemptTimeout(client: clientID, operation: number, attempt: operation.attempt + 1),
                         after: 5 + random.next() % (3 * Self.tickUnits))
            }
        case .value(let value):
            complete(client: clientID, output: .value(value))
        case .write(let result):
            if receiveAuthReply(result, client: clientID, operation: number) { return }
            switch (operation.input, result) {
            case (.put, .put):
                complete(client: clientID, output: .putOK)
            case (.delete, .deleteRange(let response)):
                complete(client: clientID, output: .deleted(response.deleted > 0))
            case (.cas, .txn(let response)):
                complete(client: clientID, output: .cas(succeeded: response.succeeded))
            default:
                violation("client c\(clientID) got \(result) for \(operation.input)")
                giveUp(client: clientID)
            }
        }
    }

    func attemptTimedOut(client clientID: Int, operation number: Int, attempt: Int) {
        guard let operation = clients[clientID - 1].current, operation.number == number,
            operation.attempt == attempt
        else { return }
        if time >= operation.deadline {
            giveUp(client: clientID)
        } else {
            sendAttempt(client: clientID)
        }
    }

    func complete(client clientID: Int, output: KVModel.Output) {
        let operation = clients[clientID - 1].current!
        history.append(
            Operation(clientID: clientID, input: operation.input, call: operation.call, returned: time, output: output))
        switch (operation.input, output) {
        case (.get(let key), .value(let value)):
            clients[clientID - 1].lastSeen[key] = value
        case (.put(let key, let value), _), (.cas(let key, _, let value), .cas(succeeded: true)):
            clients[clientID - 1].lastSeen[key] = value
        default:
            break
        }
        finish(client: clientID)
    }

    /// The outcome is unknown: a write may still take effect later (or never); a read
    /// has no effect and is dropped.
    func giveUp(client clientID: Int) {
        let operation = clients[clientID - 1].current!
        forgetAuthOperation(client: clientID, operation: operation.number)
        if !operation.input.isReadOnly {
            history.append(
                Operation(clientID: clientID, input: operation.input, call: operation.call, returned: nil, output: nil))
        }
        finish(client: clientID)
    }

    func finish(client clientID: Int) {
        clients[clientID - 1].current = nil
        schedule(.clientNext(client: clientID), after: 1 + random.next() % (2 * Self.tickUnits))
    }
}

/// The tail of the trace in canonical one-line form, and a digest of all of it.
struct TraceRing {
    enum Item {
        case envelope(Envelope)
        case note(String)
    }

    let capacity: Int
    private var items: [(time: UInt64, item: Item)] = []
    private var next = 0
    /// FNV-1a over every traced event (never `Hasher`, which is seeded per process).
    private(set) var digest: UInt64 = 0xcbf2_9ce4_8422_2325

    init(capacity: Int) {
        self.capacity = max(1, capacity)
    }

    mutating func deliver(_ time: UInt64, _ envelope: Envelope) {
        mix(time)
        mix(UInt64(envelope.from) << 32 | UInt64(envelope.to))
        for byte in envelope.message.kind.utf8 { mixByte(byte) }
        append(time, .envelope(envelope))
    }

    mutating func note(_ time: UInt64, _ text: String) {
        mix(time)
        for byte in text.utf8 { mixByte(byte) }
        append(time, .note(text))
    }

    private mutating func append(_ time: UInt64, _ item: Item) {
        if items.count < capacity {
            items.append((time, item))
        } else {
            items[next] = (time, item)
        }
        next = (next + 1) % capacity
    }

    private mutating func mix(_ value: UInt64) {
        var value = value
        for _ in 0..<8 {
            mixByte(UInt8(truncatingIfNeeded: value))
            value >>= 8
        }
    }

    private mutating func mixByte(_ byte: UInt8) {
        digest = (digest ^ UInt64(byte)) &* 0x100_0000_01b3
    }

    func lines() -> [String] {
        let ordered = items.count < capacity ? items : Array(items[next...] + items[..<next])
        return ordered.map { entry in
            switch entry.item {
            case .envelope(let envelope): return "t=\(entry.time) \(envelope)"
            case .note(let text): return "t=\(entry.time) \(text)"
            }
        }
    }
}
