/// One-line canonical forms for traces and failure messages (STYLE §13), e.g.
/// `7#3 put k=v` and `put r=5`.

extension WriteOperation: CustomStringConvertible {
    public var description: String {
        switch self {
        case .put(let put): return RequestOp.put(put).description
        case .deleteRange(let delete): return RequestOp.deleteRange(delete).description
        case .txn(let txn): return RequestOp.txn(txn).description
        case .compact(let compact): return "compact \(compact.revision)" + (compact.physical ? " physical" : "")
        case .auth(let change): return change.description
        case .alarm(let alarm): return "alarm \(alarm.action) member=\(alarm.memberID) \(alarm.alarm)"
        case .lease(let lease): return lease.description
        }
    }
}

extension RequestOp: CustomStringConvertible {
    public var description: String {
        switch self {
        case .range(let range):
            return "range \(Self.span(range.key, range.rangeEnd))" + (range.limit > 0 ? " limit=\(range.limit)" : "")
                + (range.revision != 0 ? " rev=\(range.revision)" : "")
        case .put(let put):
            return "put \(KVBytes.describe(put.key))=" + (put.ignoreValue ? "(kept)" : KVBytes.describe(put.value))
                + (put.ignoreLease ? " lease=(kept)" : put.lease != 0 ? " lease=\(String(put.lease, radix: 16))" : "")
        case .deleteRange(let delete):
            return "del \(Self.span(delete.key, delete.rangeEnd))"
        case .txn(let txn):
            let compares = txn.compare.map(\.description).joined(separator: ", ")
            let success = txn.success.map(\.description).joined(separator: "; ")
            let failure = txn.failure.map(\.description).joined(separator: "; ")
            return "txn if [\(compares)] then [\(success)] else [\(failure)]"
        }
    }

    static func span(_ key: [UInt8], _ rangeEnd: [UInt8]) -> String {
        if rangeEnd.isEmpty { return KVBytes.describe(key) }
        if rangeEnd == [0] { return "[\(KVBytes.describe(key)), ∞)" }
        return "[\(KVBytes.describe(key)), \(KVBytes.describe(rangeEnd)))"
    }
}

extension Compare: CustomStringConvertible {
    public var description: String {
        let symbol: String
        switch result {
        case .equal: symbol = "=="
        case .notEqual: symbol = "!="
        case .greater: symbol = ">"
        case .less: symbol = "<"
        }
        let operand: String
        switch target {
        case .version(let version): operand = "version \(symbol) \(version)"
        case .createRevision(let revision): operand = "create \(symbol) \(revision)"
        case .modRevision(let revision): operand = "mod \(symbol) \(revision)"
        case .value(let value): operand = "value \(symbol) \(KVBytes.describe(value))"
        case .lease(let lease): operand = "lease \(symbol) \(lease)"
        }
        return "\(RequestOp.span(key, rangeEnd)) \(operand)"
    }
}

extension WriteCommand: CustomStringConvertible {
    public var description: String {
        "\(requestID) \(operation)" + (proposedAtMilliseconds != 0 ? " at=\(proposedAtMilliseconds)ms" : "")
    }
}

extension WriteResult: CustomStringConvertible {
    public var description: String {
        switch self {
        case .put(let response): return "put r=\(response.revision)"
        case .deleteRange(let response): return "del r=\(response.revision) deleted=\(response.deleted)"
        case .txn(let response):
            return "txn r=\(response.revision) " + (response.succeeded ? "succeeded" : "failed")
                + " ops=\(response.responses.count)"
        case .failure(let error, let revision): return "error r=\(revision) \(error.message)"
        case .compact(let response): return "compact r=\(response.revision)"
        case .auth(let response): return "auth r=\(response.revision) auth=\(response.authRevision)"
        case .alarm(let response): return "alarm r=\(response.revision) \(response.alarms)"
        case .lease(let response):
            return "lease r=\(response.revision) id=\(String(response.id, radix: 16)) ttl=\(response.ttlSeconds)"
                + (response.keysDeleted > 0 ? " deleted=\(response.keysDeleted)" : "")
        }
    }
}

extension AuthOperation: CustomStringConvertible {
    public var description: String {
        switch self {
        case .enable: return "auth enable"
        case .disable: return "auth disable"
        case .userAdd(let name, _, let noPassword): return "user add \(name)" + (noPassword ? " no-password" : "")
        case .userDelete(let name): return "user delete \(name)"
        case .userChangePassword(let name, _): return "user passwd \(name)"
        case .userGrantRole(let user, let role): return "user grant \(user) \(role)"
        case .userRevokeRole(let user, let role): return "user revoke \(user) \(role)"
        case .roleAdd(let name): return "role add \(name)"
        case .roleDelete(let name): return "role delete \(name)"
        case .roleGrantPermission(let role, let permission):
            return "role grant \(role) \(permission.type) \(RequestOp.span(permission.key, permission.rangeEnd))"
        case .roleRevokePermission(let role, let key, let rangeEnd):
            return "role revoke \(role) \(RequestOp.span(key, rangeEnd))"
        case .authorized(let user, let operation): return "as \(user): \(operation)"
        }
    }
}
