import ReplicaRuntime

extension ServerConfiguration {
    /// `--quota-backend-bytes` as etcd reads it: 0 is the default (2 GiB), a negative value
    /// turns the quota off, anything else is the quota in bytes.
    public static func quotaBytes(flag: Int) -> Int {
        if flag == 0 { return RuntimeOptions.quotaBytesDefault }
        if flag < 0 { return Int.max }
        return flag
    }

    public static let quotaHelp =
        "Space quota in bytes (like etcd's): writes that would take the store's size — live data plus "
        + "retained history, what `endpoint status` reports as DB SIZE — to it are refused and raise "
        + "the NOSPACE alarm. 0 = 2 GiB, negative = no quota."
}
