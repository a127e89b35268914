import Testing

@testable import Linearizability

@Suite struct EntryListTests {
    private func walk(_ list: EntryList) -> [String] {
        var names: [String] = []
        var node = list.first
        while node != EntryList.none {
            names.append("\(list.isCall[node] ? "c" : "r")\(list.operation[node])")
            node = list.successor(of: node)
        }
        return names
    }

    @Test func eventsInTimeOrderWithCallsBeforeReturnsAtEqualTimes() {
        let list = EntryList([
            put("x", "1", 0...10),
            get("x", "1", 10...20),
            timedOut(.put(key: "x", value: "2"), calledAt: 5),
        ])
        #expect(walk(list) == ["c0", "c2", "c1", "r0", "r1"])
    }

    @Test func unliftRestoresWhatLiftRemovedInLIFOOrder() {
        var list = EntryList([
            put("x", "1", 0...10),
            put("x", "2", 5...15),
            get("x", "2", 12...30),
            timedOut(.put(key: "x", value: "3"), calledAt: 1),
        ])
        let original = walk(list)
        list.lift(list.callNode[1])
        #expect(walk(list) == ["c0", "c3", "r0", "c2", "r2"])
        list.lift(list.callNode[3])
        #expect(walk(list) == ["c0", "r0", "c2", "r2"])
        list.lift(list.callNode[0])
        #expect(walk(list) == ["c2", "r2"])
        list.unlift(list.callNode[0])
        list.unlift(list.callNode[3])
        list.unlift(list.callNode[1])
        #expect(walk(list) == original)
    }
}
