import Foundation
import Testing

/// Threads of the simulation tests' own. Swift Testing runs all the tests of the process at
/// once on Swift's cooperative threads, one per core (two on the CI machine), and a
/// synchronous batch of simulations holds its thread for a minute: two batches froze every
/// other test for that long, so a process test's timed wait (a put acknowledged within 20 s)
/// failed while its replicas were fine. Simulations run here instead (`offThePool`); the
/// kernel then shares the cores between these threads and everything else.
final class SimulationThreads: TaskExecutor, @unchecked Sendable {
    static let shared = SimulationThreads(count: max(1, ProcessInfo.processInfo.activeProcessorCount))

    private let condition = NSCondition()
    private var jobs: [UnownedJob] = []
    private var threads: [pthread_t] = []

    private init(count: Int) {
        for index in 0..<count {
            let thread = Thread { [self] in work() }
            thread.name = "simulation-\(index)"
            thread.stackSize = 8 << 20
            thread.start()
        }
    }

    func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        condition.lock()
        jobs.append(job)
        condition.signal()
        condition.unlock()
    }

    /// Whether the calling thread is one of these.
    var isCurrent: Bool {
        condition.lock()
        defer { condition.unlock() }
        return threads.contains { pthread_equal($0, pthread_self()) != 0 }
    }

    /// Runs jobs for the life of the test process.
    private func work() {
        condition.lock()
        threads.append(pthread_self())
        condition.unlock()
        while true {
            condition.lock()
            while jobs.isEmpty { condition.wait() }
            let job = jobs.removeFirst()
            condition.unlock()
            job.runSynchronously(on: asUnownedTaskExecutor())
        }
    }
}

/// Runs `body` — synchronous, long — on `SimulationThreads`, in the calling test's task (so
/// `#expect` and `Issue.record` still belong to the test).
func offThePool<Value>(_ body: () -> Value) async -> Value {
    await withTaskExecutorPreference(SimulationThreads.shared) {
        #expect(SimulationThreads.shared.isCurrent, "a simulation would hold one of Swift's cooperative threads")
        return body()
    }
}
