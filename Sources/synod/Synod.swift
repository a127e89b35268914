import ArgumentParser

@main
struct Synod: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "synod",
        abstract: "A fault-tolerant key-value store whose replicas agree on every change with Multi-Paxos.",
        subcommands: [SimulateCommand.self]
    )
}
