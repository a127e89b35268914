import Foundation

/// A one-line progress bar on stderr, redrawn every 200 ms; silent unless stderr is a terminal.
struct BenchProgress: Sendable {
    let enabled: Bool

    static let width = 30
    static let redrawInterval: Duration = .milliseconds(200)

    func note(_ text: String) {
        guard enabled else { return }
        FileHandle.standardError.write(Data("\(text)\n".utf8))
    }

    func start(plan: BenchPlan, counters: BenchCounters, startNanoseconds: UInt64) -> Task<Void, Never>? {
        guard enabled else { return nil }
        return Task {
            while !Task.isCancelled {
                draw(plan: plan, counters: counters, startNanoseconds: startNanoseconds)
                try? await Task.sleep(for: Self.redrawInterval)
            }
        }
    }

    func finish() {
        guard enabled else { return }
        FileHandle.standardError.write(Data("\r\u{1B}[2K".utf8))
    }

    private func draw(plan: BenchPlan, counters: BenchCounters, startNanoseconds: UInt64) {
        let now = BenchClock.nanoseconds()
        let total = Double(plan.stopNanoseconds - startNanoseconds)
        let done = min(1, Double(now - startNanoseconds) / max(total, 1))
        let filled = Int(done * Double(Self.width))
        let bar = String(repeating: "=", count: filled) + String(repeating: " ", count: Self.width - filled)
        let phase = now < plan.measureStartNanoseconds ? "warmup" : "measure"
        let elapsed = Double(now - startNanoseconds) / 1e9
        let completed = counters.completed.load(ordering: .relaxed)
        let failed = counters.failed.load(ordering: .relaxed)
        let line = "\r[\(bar)] \(benchFormat(elapsed, 1))s \(phase)  \(completed) ok  \(failed) failed  "
            + "\(benchFormat(Double(completed) / max(elapsed, 1e-3), 0))/s"
        FileHandle.standardError.write(Data(line.utf8))
    }
}
