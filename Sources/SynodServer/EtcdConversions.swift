import EtcdAPI
import EtcdKV
import Foundation
import GRPCCore
import KVStore

/// The server's side of etcd's wire vocabulary: the conversions themselves are shared with
/// the client in `EtcdKV`; here, what only a server says (etcd's status codes for errors).
enum EtcdConversions {
    /// A Txn request in the state machine's terms, or etcd's INVALID_ARGUMENT for a compare
    /// or operation it does not know (the other requests always convert; `EtcdKV`).
    static func txn(_ request: Etcdserverpb_TxnRequest) throws -> TxnRequest {
        do {
            return try TxnRequest(request)
        } catch {
            throw RPCError(code: .invalidArgument, message: error.message)
        }
    }

    /// etcd's gRPC status code for each state-machine error, so clients retry (or not)
    /// exactly as they do with etcd.
    static func rpcError(_ error: KVError) -> RPCError {
        switch error {
        case .compacted, .futureRevision:
            return RPCError(code: .outOfRange, message: error.message)
        case .keyNotFound:
            return RPCError(code: .invalidArgument, message: error.message)
        case .staleRequest:
            return RPCError(code: .failedPrecondition, message: error.message)
        case .auth(let error):
            return rpcError(auth: error)
        case .noSpace:
            return RPCError(code: .resourceExhausted, message: error.message)
        case .lease(let leaseError):
            // etcd's codes (rpctypes), which clientv3 maps back to its typed errors.
            switch leaseError {
            case .notFound: return RPCError(code: .notFound, message: error.message)
            case .alreadyExists: return RPCError(code: .failedPrecondition, message: error.message)
            case .ttlTooLarge: return RPCError(code: .outOfRange, message: error.message)
            case .leaseProvided: return RPCError(code: .invalidArgument, message: error.message)
            case .tooManyLeases: return RPCError(code: .resourceExhausted, message: error.message)
            }
        default:
            return RPCError(code: .invalidArgument, message: error.message)
        }
    }
}
