import ArgumentParser

@main
struct Synod: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "synod",
        abstract: "A fault-tolerant key-value store whose replicas agree on every change with Multi-Paxos.",
        discussion: "Speaks etcd's v3 gRPC API: etcdctl and etcd client libraries work against any replica.",
        subcommands: [
            ClusterCommand.self, ServeCommand.self, PutCommand.self, GetCommand.self, DeleteCommand.self,
            TxnCommand.self, StatusCommand.self, MembersCommand.self, DemoCommand.self, BenchCommand.self,
            SimulateCommand.self, BenchStorageCommand.self, SnapshotCommand.self, WatchCommand.self,
            HistoryCommand.self, LockCommand.self, LeaseCommand.self,
        ]
    )
}
