import EtcdAPI

// The etcd ⇄ KVStore conversions are shared with the server (`EtcdKV`); what only the client
// reads is here.

extension SynodResponseHeader {
    init(_ header: Etcdserverpb_ResponseHeader) {
        self.init(
            clusterID: header.clusterID,
            memberID: header.memberID,
            revision: header.revision,
            raftTerm: header.raftTerm
        )
    }
}
