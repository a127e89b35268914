import Testing

@testable import Linearizability

/// Histories no linearizable store can produce: the checker must say `.illegal`.
@Suite struct RejectedHistoriesTests {
    @Test func staleReadAfterLaterPutCompleted() {
        let history = [
            put("x", "1", 0...10, client: 0),
            put("x", "2", 20...30, client: 1),
            get("x", "1", 40...50, client: 2),
        ]
        #expect(check(history).isIllegal)
    }

    @Test func lostAcknowledgedWrite() {
        let history = [
            put("x", "1", 0...10, client: 0),
            get("x", nil, 20...30, client: 1),
            get("x", nil, 40...50, client: 2),
        ]
        #expect(check(history).isIllegal)
    }

    @Test func valueReappearsAfterBeingOverwritten() {
        let history = [
            put("x", "1", 0...10, client: 0),
            get("x", "1", 20...30, client: 1),
            put("x", "2", 40...50, client: 0),
            get("x", "2", 60...70, client: 1),
            get("x", "1", 80...90, client: 2),
        ]
        #expect(check(history).isIllegal)
    }

    @Test func casAppliedTwiceObservedByRead() {
        // A retried CAS applied again after the put reset the value: the read sees "1" with
        // nothing left to write it.
        let history = [
            put("x", "0", 0...10, client: 0),
            cas("x", expected: "0", new: "1", succeeded: true, 20...30, client: 1),
            put("x", "0", 40...50, client: 0),
            get("x", "1", 60...70, client: 2),
        ]
        #expect(check(history).isIllegal)
    }

    @Test func racingCASBothSucceed() {
        let history = [
            put("x", "0", 0...10, client: 0),
            cas("x", expected: "0", new: "a", succeeded: true, 20...40, client: 1),
            cas("x", expected: "0", new: "b", succeeded: true, 25...45, client: 2),
        ]
        #expect(check(history).isIllegal)
    }

    @Test func readOfValueNeverWritten() {
        let history = [
            put("x", "1", 0...10, client: 0),
            get("x", "ghost", 5...15, client: 1),
        ]
        #expect(check(history).isIllegal)
    }

    @Test func casSucceedsWhenItShouldFail() {
        let history = [
            put("x", "1", 0...10, client: 0),
            cas("x", expected: nil, new: "2", succeeded: true, 20...30, client: 1),
        ]
        #expect(check(history).isIllegal)
    }

    @Test func casFailsWhenItShouldSucceed() {
        let history = [
            put("x", "1", 0...10, client: 0),
            cas("x", expected: "1", new: "2", succeeded: false, 20...30, client: 1),
        ]
        #expect(check(history).isIllegal)
    }

    @Test func readFromTheFuture() {
        // The get returned before the put that wrote its value was called.
        let history = [
            get("x", "1", 0...10, client: 1),
            put("x", "1", 20...30, client: 0),
        ]
        #expect(check(history).isIllegal)
    }

    @Test func timedOutPutCannotTakeEffectBeforeItsCall() {
        let history = [
            get("x", "1", 0...10, client: 1),
            timedOut(.put(key: "x", value: "1"), calledAt: 20, client: 0),
        ]
        #expect(check(history).isIllegal)
    }

    @Test func newThenOldReadsDuringOneWrite() {
        // Reads concurrent with a write may see either value, but once one read saw the new
        // value a later read may not see the old one.
        let history = [
            put("x", "1", 0...10, client: 0),
            put("x", "2", 20...100, client: 0),
            get("x", "2", 30...40, client: 1),
            get("x", "1", 50...60, client: 2),
        ]
        #expect(check(history).isIllegal)
    }

    @Test func deleteReportsRemovalOfAbsentKey() {
        #expect(check([delete("x", existed: true, 0...10)]).isIllegal)
    }

    @Test func deleteReportsNothingRemovedFromPresentKey() {
        let history = [
            put("x", "1", 0...10),
            delete("x", existed: false, 20...30),
        ]
        #expect(check(history).isIllegal)
    }

    @Test func readAfterDeleteSeesOldValue() {
        let history = [
            put("x", "1", 0...10),
            delete("x", existed: true, 20...30),
            get("x", "1", 40...50),
        ]
        #expect(check(history).isIllegal)
    }

    @Test func outputOfTheWrongShape() {
        let wrong = observed(.put(key: "x", value: "1"), .value("1"), 0...10, client: 0)
        #expect(check([wrong]).isIllegal)
    }

    @Test func violationInOneKeyAmongLegalKeys() throws {
        let history = [
            put("a", "1", 0...10, client: 0),
            get("a", "1", 20...30, client: 1),
            put("b", "1", 0...10, client: 2),
            put("b", "2", 20...30, client: 2),
            get("b", "1", 40...50, client: 3),
            put("c", "1", 0...10, client: 4),
        ]
        let found = try #require(violation(check(history)))
        #expect(found.partition == "key \"b\"")
    }

    @Test func stepBudgetExhaustedIsUnknownNeverOK() {
        // 24 concurrent puts of distinct values then a read of a value none wrote: proving it
        // illegal visits every subset of the puts, far more than the budget allows.
        var history = (0..<24).map { put("x", "v\($0)", 0...100, client: $0) }
        history.append(get("x", "ghost", 200...210, client: 99))
        let result = check(history, stepBudget: 10_000)
        guard case .unknown = result else {
            Issue.record("expected .unknown, got \(result)")
            return
        }
        // The same budget on a legal history of the same shape is also not enough to say ok.
        history[history.count - 1] = get("x", "v3", 200...210, client: 99)
        #expect(!check(history, stepBudget: 20).isOK)
    }
}
