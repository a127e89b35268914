import Foundation
import Paxos
import ReplicaRuntime

extension ReplicaLoop {
    /// A planned leader change before this replica stops (SIGTERM): if it leads, it hands
    /// leadership to its most up-to-date peer and waits (bounded) until that peer leads, so
    /// the cluster has no election timeout to wait out. Returns whether a transfer started.
    func handOverLeadership(to target: ReplicaID? = nil, timeout: Duration = .seconds(1)) -> Bool {
        let started = ask { reply in .transferLeadership(to: target, reply: reply) } ?? false
        guard started else { return false }
        let deadline = ContinuousClock.now.advanced(by: timeout)
        while ContinuousClock.now < deadline {
            if let status = ask({ reply in .status(reply) }), let leader = status.leader, leader != configuration.replicaID {
                logger.notice("leadership handed over to r\(leader)")
                return true
            }
            Thread.sleep(forTimeInterval: 0.01)
        }
        logger.warning("no new leader within \(timeout) of handing leadership over")
        return true
    }

    /// Submits an event with a reply and waits for it (at most 2 s); nil if the loop did not
    /// take it or did not answer.
    func ask<Answer: Sendable>(_ event: (@escaping @Sendable (Answer) -> Void) -> RuntimeEvent) -> Answer? {
        let box = AnswerBox<Answer>()
        guard submit(event({ answer in box.put(answer) })) else { return nil }
        return box.take(timeout: 2)
    }
}

/// One answer handed from the loop thread to a waiting thread.
final class AnswerBox<Answer: Sendable>: @unchecked Sendable {
    private let condition = NSCondition()
    private var answer: Answer?

    func put(_ value: Answer) {
        condition.lock()
        answer = value
        condition.signal()
        condition.unlock()
    }

    func take(timeout seconds: Double) -> Answer? {
        condition.lock()
        defer { condition.unlock() }
        let deadline = Date().addingTimeInterval(seconds)
        while answer == nil && condition.wait(until: deadline) {}
        return answer
    }
}
