import Testing

@testable import Linearizability

/// Legal histories, some of them tricky: the checker must say `.ok`.
@Suite struct AcceptedHistoriesTests {
    @Test func emptyHistory() {
        #expect(check([]).isOK)
    }

    @Test(arguments: ["1", "2"])
    func concurrentPutsReadInEitherOrder(winner: String) {
        let history = [
            put("x", "1", 0...10, client: 0),
            put("x", "2", 5...15, client: 1),
            get("x", winner, 20...30, client: 2),
            get("x", winner, 40...50, client: 3),
        ]
        #expect(check(history).isOK)
    }

    @Test func timedOutPutTakesEffectMuchLater() {
        let history = [
            put("x", "1", 0...10, client: 0),
            timedOut(.put(key: "x", value: "2"), calledAt: 20, client: 1),
            get("x", "1", 30...40, client: 2),
            get("x", "1", 500...510, client: 2),
            get("x", "2", 10_000...10_010, client: 2),
            get("x", "2", 10_020...10_030, client: 3),
        ]
        #expect(check(history).isOK)
    }

    @Test func timedOutPutNeverTakesEffect() {
        let history = [
            put("x", "1", 0...10, client: 0),
            timedOut(.put(key: "x", value: "2"), calledAt: 20, client: 1),
            get("x", "1", 30...40, client: 2),
            get("x", "1", 10_000...10_010, client: 2),
        ]
        #expect(check(history).isOK)
    }

    @Test func timedOutOperationsWithNothingElse() {
        let history = [
            timedOut(.put(key: "x", value: "1"), calledAt: 0, client: 0),
            timedOut(.get(key: "x"), calledAt: 5, client: 1),
            timedOut(.delete(key: "y"), calledAt: 5, client: 2),
            timedOut(.cas(key: "z", expected: nil, new: "1"), calledAt: 5, client: 3),
        ]
        #expect(check(history).isOK)
    }

    @Test func timedOutCASTakesEffectBetweenReads() {
        let history = [
            put("x", "0", 0...10, client: 0),
            timedOut(.cas(key: "x", expected: "0", new: "1"), calledAt: 20, client: 1),
            get("x", "0", 30...40, client: 2),
            put("x", "0", 50...60, client: 0),
            get("x", "1", 70...80, client: 2),
        ]
        #expect(check(history).isOK)
    }

    @Test(arguments: [true, false])
    func overlappingCASRaceOneWins(firstWins: Bool) {
        let history = [
            put("x", "0", 0...10, client: 0),
            cas("x", expected: "0", new: "a", succeeded: firstWins, 20...40, client: 1),
            cas("x", expected: "0", new: "b", succeeded: !firstWins, 25...45, client: 2),
            get("x", firstWins ? "a" : "b", 50...60, client: 3),
        ]
        #expect(check(history).isOK)
    }

    @Test func readsConcurrentWithWriteSeeEitherValue() {
        let history = [
            put("x", "1", 0...10, client: 0),
            put("x", "2", 20...100, client: 0),
            get("x", "1", 30...40, client: 1),
            get("x", "2", 35...45, client: 2),
            get("x", "1", 30...50, client: 3),
            get("x", "2", 110...120, client: 1),
        ]
        #expect(check(history).isOK)
    }

    @Test func deleteThenReadsOfNil() {
        let history = [
            put("x", "1", 0...10, client: 0),
            delete("x", existed: true, 20...30, client: 1),
            get("x", nil, 40...50, client: 2),
            delete("x", existed: false, 60...70, client: 1),
            get("x", nil, 80...90, client: 0),
            cas("x", expected: nil, new: "2", succeeded: true, 100...110, client: 2),
            get("x", "2", 120...130, client: 0),
        ]
        #expect(check(history).isOK)
    }

    @Test func readOfAbsentKeyBeforeAnyWrite() {
        #expect(check([get("x", nil, 0...10), put("x", "1", 5...15)]).isOK)
    }

    @Test func operationsTouchingInTimeAreConcurrent() {
        // The put returned at 10 and the get was called at 10: either order is allowed.
        let history = [
            put("x", "1", 0...10, client: 0),
            get("x", nil, 10...20, client: 1),
        ]
        #expect(check(history).isOK)
    }

    @Test func keysAreIndependent() {
        let history = [
            put("a", "1", 0...10, client: 0),
            put("b", "2", 20...30, client: 1),
            get("a", "1", 40...50, client: 2),
            get("b", "2", 40...50, client: 3),
            get("c", nil, 40...50, client: 4),
        ]
        #expect(check(history).isOK)
    }
}
