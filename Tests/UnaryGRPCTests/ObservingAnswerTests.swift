import NIOConcurrencyHelpers
import NIOPosix
import Testing

@testable import UnaryGRPC

@Suite("UnaryCall.observingAnswer")
struct ObservingAnswerTests {
    @Test("a wrapped method table sees every answer, success and failure, in order of observers", .timeLimit(.minutes(1)))
    func observerSeesAnswers() async throws {
        let seen = NIOLockedValueBox<[String]>([])
        let methods: [String: UnaryMethod] = [
            "/t.S/Echo": { call in call.responder.respond { .success(call.payload) } },
            "/t.S/Fail": { call in call.responder.fail(GRPCStatus(code: GRPCStatus.unavailable, message: "down")) },
        ]
        var wrapped: [String: UnaryMethod] = [:]
        for (path, method) in methods {
            wrapped[path] = { call in
                let observed = call
                    .observingAnswer { _ in seen.withLockedValue { $0.append("first \(path)") } }
                    .observingAnswer { result in
                        let code = (try? result.get()).map { _ in 0 } ?? (result.failureCode ?? -1)
                        seen.withLockedValue { $0.append("second \(path) \(code)") }
                    }
                method(observed)
            }
        }
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        let server = try await UnaryServer.bind(host: "127.0.0.1", port: 0, group: group, methods: wrapped)
        let port = try #require(server.localAddress?.port)
        let client = try await UnaryClientConnection.connect(host: "127.0.0.1", port: port, group: group)
        #expect(try await client.call(path: "/t.S/Echo", message: [7], timeout: .seconds(5)) == [7])
        await #expect(throws: GRPCStatus.self) {
            _ = try await client.call(path: "/t.S/Fail", message: [], timeout: .seconds(5))
        }
        await client.close()
        await server.close()
        try await group.shutdownGracefully()
        #expect(
            seen.withLockedValue { $0 } == [
                "first /t.S/Echo", "second /t.S/Echo 0", "first /t.S/Fail", "second /t.S/Fail \(GRPCStatus.unavailable)",
            ])
    }
}

extension Result where Failure == GRPCStatus {
    fileprivate var failureCode: Int? {
        if case .failure(let status) = self { return status.code }
        return nil
    }
}
