import Linearizability
import Testing

/// The watch checker accepts correct streams and names each kind of broken one.
@Suite struct WatchCheckerTests {
    typealias Event = WatchChecker.Event

    static func put(_ key: String, _ value: String, _ revision: Int64) -> Event {
        Event(revision: revision, isDelete: false, key: Array(key.utf8), value: Array(value.utf8))
    }

    static func delete(_ key: String, _ revision: Int64) -> Event {
        Event(revision: revision, isDelete: true, key: Array(key.utf8), value: [])
    }

    /// Revisions 2…6: 3 is a txn of two puts, 5 deletes.
    static let history: [Event] = [
        put("a", "1", 2), put("a", "2", 3), put("b", "1", 3), put("b", "2", 4), delete("a", 5), put("c", "1", 6),
    ]
    static let checker = WatchChecker(reference: Dictionary(grouping: history, by: \.revision))

    func violations(_ items: [WatchChecker.Item], start: Int64 = 2, final: Int64? = 6) -> [String] {
        Self.checker.check(watcher: "w", startRevision: start, items: items, finalRevision: final)
    }

    @Test func aCorrectStreamWithResumeAndProgressPasses() {
        let h = Self.history
        let items: [WatchChecker.Item] = [
            .opened(startRevision: 2), .events([h[0]]), .progress(revision: 2), .events([h[2], h[1], h[3]]),
            // The replica died: resumed elsewhere from the last delivered revision + 1.
            .opened(startRevision: 5), .progress(revision: 4), .events([h[4]]), .events([h[5]]), .progress(revision: 6),
        ]
        #expect(violations(items) == [])
        // Starting later skips nothing.
        #expect(violations([.opened(startRevision: 4), .events([h[3], h[4], h[5]])], start: 4) == [])
    }

    @Test func aDroppedEventIsAGap() {
        let h = Self.history
        let found = violations([.opened(startRevision: 2), .events([h[0]]), .events([h[3]]), .events([h[4], h[5]])])
        #expect(found.count == 1 && found[0].contains("gap: revision 3"), "\(found)")
        // One event of a txn missing is an inexact revision.
        let partial = violations([.opened(startRevision: 2), .events([h[0], h[1], h[3], h[4], h[5]])])
        #expect(partial.count == 1 && partial[0].contains("revision 3 delivered"), "\(partial)")
    }

    @Test func aSplitRevisionIsCaught() {
        let h = Self.history
        let found = violations([.opened(startRevision: 2), .events([h[0], h[1]]), .events([h[2], h[3], h[4], h[5]])])
        #expect(found.contains { $0.contains("split") }, "\(found)")
    }

    @Test func duplicatesAndDisorderAreCaught() {
        let h = Self.history
        let duplicate = violations([.opened(startRevision: 2), .events([h[0]]), .events([h[0]]), .events(Array(h[1...]))])
        #expect(duplicate.contains { $0.contains("revision 2") && $0.contains("twice") }, "\(duplicate)")
        let disorder = violations([.opened(startRevision: 2), .events([h[0], h[3]]), .events([h[1], h[2], h[4], h[5]])])
        #expect(disorder.contains { $0.contains("out of order") }, "\(disorder)")
    }

    @Test func aWrongValueOrAPhantomIsCaught() {
        let h = Self.history
        let wrong = violations([.opened(startRevision: 2), .events([Self.put("a", "9", 2)] + Array(h[1...]))])
        #expect(wrong.count == 1 && wrong[0].contains("revision 2 delivered"), "\(wrong)")
        let phantom = violations([.opened(startRevision: 2), .events(h), .events([Self.put("z", "1", 7)])], final: 7)
        #expect(phantom.count == 1 && phantom[0].contains("revision 7"), "\(phantom)")
    }

    @Test func anEarlyProgressNotificationIsCaught() {
        let h = Self.history
        let found = violations([.opened(startRevision: 2), .events([h[0]]), .progress(revision: 4), .events(Array(h[1...]))])
        #expect(found.count == 1 && found[0].contains("progress notification at revision 4 before revision 3"), "\(found)")
    }

    @Test func aBadResumeAndAMissingTailAreCaught() {
        let h = Self.history
        let resume = violations([.opened(startRevision: 2), .events([h[0]]), .opened(startRevision: 4), .events(Array(h[3...]))])
        #expect(resume.contains { $0.contains("resumed at revision 4") }, "\(resume)")
        #expect(resume.contains { $0.contains("gap: revision 3") }, "\(resume)")
        let tail = violations([.opened(startRevision: 2), .events(Array(h[0...3]))])
        #expect(tail.count == 1 && tail[0].contains("incomplete: revision 5"), "\(tail)")
    }

    @Test func referenceFromStatesAndAcknowledgedWrites() {
        func state(_ pairs: [(String, String, Int64)]) -> [[UInt8]: (value: [UInt8], modRevision: Int64)] {
            var state: [[UInt8]: (value: [UInt8], modRevision: Int64)] = [:]
            for (key, value, revision) in pairs { state[Array(key.utf8)] = (Array(value.utf8), revision) }
            return state
        }
        let states: [Int64: [[UInt8]: (value: [UInt8], modRevision: Int64)]] = [
            1: state([]),
            2: state([("a", "1", 2)]),
            3: state([("a", "2", 3), ("b", "1", 3)]),
            4: state([("a", "2", 3), ("b", "2", 4)]),
            5: state([("b", "2", 4)]),
            6: state([("b", "2", 4), ("c", "1", 6)]),
        ]
        let reference = WatchChecker.reference(fromStates: states, first: 2, last: 6)
        #expect(reference == Dictionary(grouping: Self.history, by: \.revision).mapValues { $0.sorted() })
        let checker = WatchChecker(reference: reference)
        #expect(checker.checkAcknowledged([Self.put("b", "1", 3), Self.delete("a", 5)]) == [])
        #expect(checker.checkAcknowledged([Self.put("b", "lost", 3)]).count == 1)
    }
}
