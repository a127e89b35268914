import Foundation
import Paxos
import UnaryGRPC

/// The HTTP/1.1 monitoring endpoints, served beside gRPC on the client port and on every
/// `--listen-metrics-urls` listener, as etcd serves them:
///
/// | path            | answer |
/// |-----------------|--------|
/// | `/metrics`      | Prometheus text format 0.0.4 |
/// | `/health`       | `{"health":"true"}` 200, or `{"health":"false","reason":"…"}` 503 |
/// | `/livez`        | `ok` 200 while the replica loop turns, else 503 |
/// | `/readyz`       | `ok` 200 once recovered and up, else 503 |
/// | `/status`       | the status page (HTML, no outside resources) |
/// | `/status.json`  | this replica's view, for the page (CORS open: the page asks every replica) |
/// | `/status/events`| server-sent events: `status` (as `/status.json`) every 500 ms, `change` per event |
struct MonitoringEndpoints: Sendable {
    let monitor: ReplicaMonitor

    var handler: HTTPHandler {
        { request in route(request) }
    }

    func route(_ request: HTTPRequest) {
        let responder = request.responder
        guard request.method == "GET" || request.method == "HEAD" else {
            return responder.respond(
                status: 405, contentType: Self.text, body: Array("only GET and HEAD\n".utf8), headers: [("allow", "GET, HEAD")])
        }
        switch request.path {
        case "/metrics":
            monitor.refresh { [monitor] _ in
                responder.respond(
                    status: 200, contentType: "text/plain; version=0.0.4; charset=utf-8",
                    body: monitor.metrics.exposition())
            }
        case "/health":
            monitor.health { result in
                switch result {
                case .passing:
                    responder.respond(status: 200, contentType: Self.json, body: Array(#"{"health":"true"}"#.utf8))
                case .failing(let reason):
                    let body = Self.encode(HealthAnswer(health: "false", reason: reason))
                    responder.respond(status: 503, contentType: Self.json, body: body)
                }
            }
        case "/livez":
            monitor.liveness { Self.answerCheck($0, name: "livez", responder: responder) }
        case "/readyz":
            monitor.readiness { Self.answerCheck($0, name: "readyz", responder: responder) }
        case "/status", "/status/":
            responder.respond(
                status: 200, contentType: "text/html; charset=utf-8", body: Array(StatusPage.html(monitor: monitor).utf8))
        case "/status/events":
            monitor.subscribe(responder)
        case "/status.json":
            monitor.refresh { [monitor] sample in
                responder.respond(
                    status: 200, contentType: Self.json, body: Self.encode(StatusReport(monitor: monitor, sample: sample)),
                    headers: [("access-control-allow-origin", "*"), ("cache-control", "no-store")])
            }
        default:
            responder.respond(
                status: 404, contentType: Self.text,
                body: Array("not found; try /metrics, /health, /livez, /readyz, /status\n".utf8))
        }
    }

    static let text = "text/plain; charset=utf-8"
    static let json = "application/json"

    static func answerCheck(_ result: CheckResult, name: String, responder: HTTPResponder) {
        switch result {
        case .passing:
            responder.respond(status: 200, contentType: text, body: Array("ok\n".utf8))
        case .failing(let reason):
            responder.respond(status: 503, contentType: text, body: Array("\(name) check failed: \(reason)\n".utf8))
        }
    }

    static func encode(_ value: some Encodable) -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        return Array((try? encoder.encode(value)) ?? Data(#"{"error":"cannot encode"}"#.utf8))
    }
}

/// etcd's `/health` body.
struct HealthAnswer: Codable {
    var health: String
    var reason: String?
}

/// One replica's view, as `/status.json` gives it.
struct StatusReport: Codable {
    struct Member: Codable {
        var id: UInt32
        var clientURL: String?
        var peerURL: String
    }

    var id: UInt32
    /// leader, follower, down, or unknown (the loop did not answer).
    var role: String
    var leader: UInt32?
    var ballotRound: UInt64
    var chosenThrough: UInt64
    var appliedThrough: UInt64
    var revision: Int64
    var acceptorDown: Bool
    var leaderChangesSeen: Int
    var acceptorFailures: Int
    var acceptorRecoveries: Int
    var requestsWaiting: Int
    var requestsPerSecond: Double
    var walFsyncsPerSecond: Double
    var walFsyncMeanMilliseconds: Double
    var uptimeSeconds: Int
    var members: [Member]
    var events: [MonitorEvent]

    init(monitor: ReplicaMonitor, sample: LoopSample?) {
        let configuration = monitor.configuration
        let observed = monitor.snapshot
        id = configuration.replicaID
        let status = sample?.status
        switch status {
        case nil: role = "unknown"
        case let status? where status.isDown: role = "down"
        case let status? where status.isLeader: role = "leader"
        default: role = "follower"
        }
        leader = status?.leader
        ballotRound = status?.ballotRound ?? 0
        chosenThrough = status?.chosenThrough ?? 0
        appliedThrough = status?.appliedThrough ?? 0
        revision = status?.revision ?? 0
        acceptorDown = sample?.acceptorDown ?? false
        leaderChangesSeen = sample?.leaderChangesSeen ?? 0
        acceptorFailures = sample?.acceptorFailures ?? 0
        acceptorRecoveries = sample?.acceptorRecoveries ?? 0
        requestsWaiting = sample?.requestsWaiting ?? 0
        requestsPerSecond = observed.requestsPerSecond
        walFsyncsPerSecond = observed.fsyncsPerSecond
        walFsyncMeanMilliseconds = observed.fsyncMeanMilliseconds
        uptimeSeconds = Int(Date().timeIntervalSince(monitor.startedAt))
        members = configuration.peers.keys.sorted().map { id in
            Member(
                id: id, clientURL: configuration.clientEndpoints[id]?.description
                    ?? (id == configuration.replicaID ? configuration.listenClient.description : nil),
                peerURL: configuration.peers[id]!.description)
        }
        events = observed.events
    }
}
