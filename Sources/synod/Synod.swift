import ArgumentParser

@main
struct Synod: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "synod",
        abstract: "A fault-tolerant key-value store whose replicas agree on every change with Multi-Paxos.",
        discussion: "Speaks etcd's v3 gRPC API: etcdctl and etcd client libraries work against any replica.",
        subcommands: [
            ClusterCommand.self, ServeCommand.self, SimulateCommand.self, BenchStorageCommand.self,
        ]
    )
}
