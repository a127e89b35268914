import EtcdAPI
import GRPCCore

extension SynodClient {
    /// `Maintenance.Status` of one endpoint (one attempt, no failover); by default the preferred.
    public func status(endpoint: SynodEndpoint? = nil) async throws(SynodClientError) -> SynodEndpointStatus {
        let index: Int
        if let endpoint {
            guard let found = endpoints.firstIndex(of: endpoint) else {
                throw .invalidEndpoint("\(endpoint) is not one of this client's endpoints")
            }
            index = found
        } else {
            index = endpoints.firstIndex(of: preferredEndpoint) ?? 0
        }
        let response = try await perform(fixedEndpoint: index, retriesMax: 0) { connection, _, callOptions in
            let message = try await connection.maintenance.status(
                Etcdserverpb_StatusRequest(),
                options: callOptions
            )
            return (message, SynodResponseHeader(message.header))
        }
        let message = response.body
        return SynodEndpointStatus(
            endpoint: response.servedBy,
            header: response.header,
            version: message.version,
            dbSizeBytes: message.dbSize,
            dbSizeInUseBytes: message.dbSizeInUse,
            leader: message.leader,
            raftIndex: message.raftIndex,
            raftTerm: message.raftTerm,
            raftAppliedIndex: message.raftAppliedIndex,
            isLearner: message.isLearner,
            errors: message.errors
        )
    }

    /// `Maintenance.Status` of every endpoint, concurrently, in `endpoints` order.
    public func statusAll() async -> [(SynodEndpoint, Result<SynodEndpointStatus, SynodClientError>)] {
        typealias Outcome = Result<SynodEndpointStatus, SynodClientError>
        let outcomes = await withTaskGroup(of: (SynodEndpoint, Outcome).self) { group in
            for endpoint in endpoints {
                group.addTask { (endpoint, await self.statusOutcome(endpoint: endpoint)) }
            }
            var outcomes: [SynodEndpoint: Outcome] = [:]
            for await (endpoint, outcome) in group { outcomes[endpoint] = outcome }
            return outcomes
        }
        return endpoints.map { endpoint in
            (endpoint, outcomes[endpoint] ?? .failure(.unexpectedResponse("no status task for \(endpoint)")))
        }
    }

    private func statusOutcome(endpoint: SynodEndpoint) async -> Result<SynodEndpointStatus, SynodClientError> {
        do {
            return .success(try await status(endpoint: endpoint))
        } catch {
            return .failure(error)
        }
    }

    /// `Cluster.MemberList`: the members the contacted replica knows.
    public func memberList() async throws(SynodClientError) -> SynodResponse<[SynodMember]> {
        try await perform { connection, _, callOptions in
            let message = try await connection.cluster.memberList(
                Etcdserverpb_MemberListRequest(),
                options: callOptions
            )
            let members = message.members.map { member in
                SynodMember(
                    id: member.id,
                    name: member.name,
                    peerURLs: member.peerUrls,
                    clientURLs: member.clientUrls,
                    isLearner: member.isLearner
                )
            }
            return (members, SynodResponseHeader(message.header))
        }
    }
}
