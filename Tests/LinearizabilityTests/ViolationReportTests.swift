import Testing

@testable import Linearizability

/// The violation must let a human see what went wrong without rerunning anything.
@Suite struct ViolationReportTests {
    @Test func staleReadReportNamesKeyPrefixAndStuckOperations() throws {
        let history = [
            put("x", "1", 0...10, client: 0),
            put("x", "2", 20...30, client: 1),
            get("x", "1", 40...50, client: 2),
            timedOut(.put(key: "x", value: "3"), calledAt: 45, client: 3),
            put("y", "1", 0...10, client: 4),
        ]
        let found = try #require(violation(check(history)))
        print(found)
        #expect(found.partition == "key \"x\"")
        #expect(found.operationCount == 4)
        #expect(found.linearizedCount == 2)
        #expect(found.linearizedPrefix == [
            "1. client 0  put(x, \"1\") -> ok  [call 0, return 10]  => \"1\"",
            "2. client 1  put(x, \"2\") -> ok  [call 20, return 30]  => \"2\"",
        ])
        #expect(found.unlinearizable == [
            "client 2  get(x) -> \"1\"  [call 40, return 50]",
            "client 3  put(x, \"3\") -> ?  [call 45, no return (outcome unknown)]",
        ])
        #expect(found.description.contains("not linearizable: key \"x\""))
        #expect(found.description.contains("longest linearizable prefix: 2 of 4 operations"))
        #expect(found.description.contains("client 2 returned at 50"))
    }

    @Test func longPrefixIsTrimmedToItsEnd() throws {
        var history = (0..<100).map { index in
            put("x", "v\(index)", UInt64(index * 10)...UInt64(index * 10 + 5), client: index % 3)
        }
        history.append(get("x", "v0", 2_000...2_010, client: 7))
        let found = try #require(violation(check(history)))
        #expect(found.linearizedCount == 100)
        #expect(found.linearizedPrefix.count == LinearizabilityViolation.reportedPrefixOperationsMax)
        #expect(found.linearizedPrefix.last?.hasPrefix("100. client 0  put(x, \"v99\")") == true)
        #expect(found.description.contains("... 70 earlier operations"))
    }

    @Test func violationWithNothingLinearized() throws {
        let found = try #require(violation(check([get("x", "ghost", 0...10, client: 5)])))
        #expect(found.linearizedCount == 0)
        #expect(found.linearizedPrefix.isEmpty)
        #expect(found.unlinearizable == ["client 5  get(x) -> \"ghost\"  [call 0, return 10]"])
    }

    @Test func defaultPartitionIsNamedByIndex() throws {
        struct Counter: Model {
            var initialState: Int { 0 }
            func step(_ state: Int, _ input: Int, _ output: Int) -> (legal: Bool, next: Int) {
                (output == state + input, state + input)
            }
            func stepUnobserved(_ state: Int, _ input: Int) -> [Int] { [state + input] }
        }
        let history = [
            Operation(clientID: 0, input: 1, call: 0, returned: 10, output: 1),
            Operation(clientID: 1, input: 1, call: 20, returned: 30, output: 1),
        ]
        let found = try #require(violation(checkLinearizability(model: Counter(), history: history)))
        #expect(found.partition == "partition 0")
        #expect(found.unlinearizable == ["client 1  1 -> 1  [call 20, return 30]"])
    }
}
