import Foundation
import Histogram

/// The outcome of one `synod bench` run.
struct BenchReport {
    var workload: String
    var endpoints: [String]
    var concurrency: Int
    var connections: Int
    var keys: Int
    var keySizeBytes: Int
    var valueSizeBytes: Int
    var result: BenchSlotResult
    /// From the end of warmup to the last measured answer.
    var measuredSeconds: Double
    var clientCPUSeconds: Double
    var wallSeconds: Double
    /// `--watchers`: what the watch streams measured.
    var watch: BenchWatchers.Summary? = nil

    var throughput: Double { measuredSeconds > 0 ? Double(result.succeeded) / measuredSeconds : 0 }
    var errors: Int { result.errorsByCode.values.reduce(0, +) }

    func percentile(_ percentile: Double) -> UInt64 {
        result.latencyMicroseconds.totalCount == 0 ? 0 : result.latencyMicroseconds.valueAtPercentile(percentile)
    }

    var latencies: [(String, UInt64)] {
        [
            ("p50", percentile(50)), ("p90", percentile(90)), ("p99", percentile(99)),
            ("p99.9", percentile(99.9)),
            ("max", result.latencyMicroseconds.totalCount == 0 ? 0 : result.latencyMicroseconds.max),
        ]
    }

    var text: String {
        var lines: [String] = []
        let connectionWord = connections == 1 ? "connection" : "connections"
        lines.append(
            "\(workload): \(concurrency) in flight over \(connections) \(connectionWord) to "
                + "\(endpoints.benchUniqued().joined(separator: ",")); \(keys) keys of \(keySizeBytes) B, "
                + "values of \(valueSizeBytes) B"
        )
        lines.append(
            "  requests   \(result.succeeded) ok, \(errors) failed in \(benchFormat(measuredSeconds, 2)) s"
                + " → \(benchFormat(throughput, 0)) req/s"
        )
        let latencyText = latencies.map { "\($0.0) \(milliseconds($0.1))" }.joined(separator: "  ")
        let mean = benchFormat(result.latencyMicroseconds.mean / 1000, 3)
        lines.append("  latency    \(latencyText)  (ms; mean \(mean))")
        if !result.errorsByCode.isEmpty {
            let byCode = result.errorsByCode.sorted { $0.key < $1.key }.map { "\($0.key) \($0.value)" }
            lines.append("  errors     " + byCode.joined(separator: ", "))
            for (code, message) in result.errorExamples.sorted(by: { $0.key < $1.key }) {
                lines.append("    \(code): \(message)")
            }
        }
        if workload == BenchWorkloadKind.txnCAS.rawValue {
            lines.append("  conflicts  \(result.casConflicts) compare-and-swaps found a newer revision")
        }
        if let watch {
            let delays = [50.0, 90, 99].map { "p\(Int($0)) \(milliseconds(watch.percentile($0)))" }.joined(separator: "  ")
            lines.append(
                "  watchers   \(watch.watchers): put answer → event \(delays) (ms; \(watch.events) sampled events, "
                    + "\(watch.beforeAnswer) before the answer)")
            for failure in watch.failures.prefix(5) { lines.append("    \(failure)") }
        }
        lines.append(
            "  client CPU \(benchFormat(clientCPUSeconds / max(wallSeconds, 1e-9), 2)) cores "
                + "(\(benchFormat(clientCPUSeconds, 1)) s over \(benchFormat(wallSeconds, 1)) s)"
        )
        return lines.joined(separator: "\n")
    }

    var json: String {
        var latency: [String] = latencies.map { "\"\($0.0)\":\($0.1)" }
        latency.append("\"mean\":\(benchFormat(result.latencyMicroseconds.mean, 1))")
        let errorFields = result.errorsByCode.sorted { $0.key < $1.key }.map { "\"\(escape($0.key))\":\($0.value)" }
        let fields = [
            "\"workload\":\"\(workload)\"",
            "\"endpoints\":[" + endpoints.map { "\"\(escape($0))\"" }.joined(separator: ",") + "]",
            "\"concurrency\":\(concurrency)",
            "\"connections\":\(connections)",
            "\"keys\":\(keys)",
            "\"keySizeBytes\":\(keySizeBytes)",
            "\"valueSizeBytes\":\(valueSizeBytes)",
            "\"succeeded\":\(result.succeeded)",
            "\"failed\":\(errors)",
            "\"errors\":{" + errorFields.joined(separator: ",") + "}",
            "\"errorExamples\":{" + result.errorExamples.sorted { $0.key < $1.key }
                .map { "\"\(escape($0.key))\":\"\(escape($0.value))\"" }.joined(separator: ",") + "}",
            "\"casConflicts\":\(result.casConflicts)",
            "\"measuredSeconds\":\(benchFormat(measuredSeconds, 3))",
            "\"throughput\":\(benchFormat(throughput, 1))",
            "\"latencyMicroseconds\":{" + latency.joined(separator: ",") + "}",
            "\"clientCPUSeconds\":\(benchFormat(clientCPUSeconds, 2))",
            "\"wallSeconds\":\(benchFormat(wallSeconds, 2))",
        ] + watchJSON
        return "{" + fields.joined(separator: ",") + "}"
    }

    private var watchJSON: [String] {
        guard let watch else { return [] }
        let delays = [("p50", 50.0), ("p90", 90), ("p99", 99)].map { "\"\($0.0)\":\(watch.percentile($0.1))" }
        return [
            "\"watch\":{\"watchers\":\(watch.watchers),\"sampledEvents\":\(watch.events),"
                + "\"beforeAnswer\":\(watch.beforeAnswer),\"failures\":\(watch.failures.count),"
                + "\"delayMicroseconds\":{" + delays.joined(separator: ",") + "}}"
        ]
    }

    private func milliseconds(_ microseconds: UInt64) -> String {
        benchFormat(Double(microseconds) / 1000, 3)
    }

    private func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
    }
}

func benchFormat(_ value: Double, _ decimals: Int) -> String {
    String(format: "%.\(decimals)f", value)
}

extension Array where Element: Hashable {
    func benchUniqued() -> [Element] {
        var seen = Set<Element>()
        return filter { seen.insert($0).inserted }
    }
}
