import KVStore

/// etcd's `ResponseHeader`: who answered and at which state.
public struct SynodResponseHeader: Sendable, Hashable {
    public var clusterID: UInt64
    public var memberID: UInt64
    /// The store revision after the request.
    public var revision: Int64
    /// etcd's raft term; Synod reports its ballot round here.
    public var raftTerm: UInt64

    public init(clusterID: UInt64 = 0, memberID: UInt64 = 0, revision: Int64 = 0, raftTerm: UInt64 = 0) {
        self.clusterID = clusterID
        self.memberID = memberID
        self.revision = revision
        self.raftTerm = raftTerm
    }
}

/// A response with where it came from. Members of `body` read through: `response.kvs`.
@dynamicMemberLookup
public struct SynodResponse<Body: Sendable>: Sendable {
    public var body: Body
    public var header: SynodResponseHeader
    /// The endpoint that answered the attempt that succeeded.
    public var servedBy: SynodEndpoint
    /// Attempts it took (1 = no retry).
    public var attempts: Int

    public init(body: Body, header: SynodResponseHeader, servedBy: SynodEndpoint, attempts: Int) {
        self.body = body
        self.header = header
        self.servedBy = servedBy
        self.attempts = attempts
    }

    public subscript<Member>(dynamicMember keyPath: KeyPath<Body, Member>) -> Member {
        body[keyPath: keyPath]
    }
}

/// `Maintenance.Status` of one endpoint.
public struct SynodEndpointStatus: Sendable, Hashable {
    public var endpoint: SynodEndpoint
    public var header: SynodResponseHeader
    public var version: String
    public var dbSizeBytes: Int64
    public var dbSizeInUseBytes: Int64
    /// Member ID of the leader this endpoint knows; 0 when none.
    public var leader: UInt64
    public var raftIndex: UInt64
    public var raftTerm: UInt64
    public var raftAppliedIndex: UInt64
    public var isLearner: Bool
    public var errors: [String]

    public var memberID: UInt64 { header.memberID }
    public var isLeader: Bool { leader != 0 && leader == header.memberID }
}

/// One member of `Cluster.MemberList`.
public struct SynodMember: Sendable, Hashable {
    public var id: UInt64
    public var name: String
    public var peerURLs: [String]
    public var clientURLs: [String]
    public var isLearner: Bool
}

/// Conversion of key and value arguments: `String` (UTF-8) or raw bytes.
public protocol SynodBytes: Sendable {
    var synodBytes: [UInt8] { get }
}

extension String: SynodBytes {
    public var synodBytes: [UInt8] { Array(utf8) }
}

extension Substring: SynodBytes {
    public var synodBytes: [UInt8] { Array(utf8) }
}

extension Array: SynodBytes where Element == UInt8 {
    public var synodBytes: [UInt8] { self }
}

extension ArraySlice: SynodBytes where Element == UInt8 {
    public var synodBytes: [UInt8] { Array(self) }
}
