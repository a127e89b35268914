import KVStore
import Testing

@testable import SynodServer

@Suite("synod-request-id parsing")
struct RequestIDParsingTests {
    @Test("well-formed ids parse; everything else is refused")
    func parse() {
        #expect(EtcdFrontEnd.parseRequestID("0123456789abcdef-1".utf8) == RequestID(clientID: 0x0123_4567_89ab_cdef, sequence: 1))
        #expect(
            EtcdFrontEnd.parseRequestID("ffffffffffffffff-18446744073709551615".utf8)
                == RequestID(clientID: .max, sequence: .max))
        for bad in [
            "", "-", "0123456789abcdef", "0123456789abcdef-", "0123456789abcdef-0", "0123456789ABCDEF-1",
            "0000000000000000-1", "0123456789abcde-1", "0123456789abcdef0-1", "0123456789abcdef-1a",
            "0123456789abcdef-18446744073709551616", "0123456789abcdef-000000000000000000001",
            "0123456789abcdef-+1", " 0123456789abcdef-1", "0123456789abcdef-1 ",
        ] {
            #expect(EtcdFrontEnd.parseRequestID(bad.utf8) == nil, "'\(bad)' was accepted")
        }
    }
}
