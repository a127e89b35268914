import Foundation

/// The status page at `/status`: one self-contained HTML document (inline style and script,
/// nothing fetched from elsewhere) that lists every replica of the cluster. The server fills
/// in what this replica knows when the page is requested; then the page polls every
/// replica's `/status.json` each second (the peers' through their client addresses; those
/// answers carry `Access-Control-Allow-Origin: *`) and shows role, ballot, chosen and
/// applied slots, the leader, request rate, fsync latency, and leader changes and acceptor
/// failures and recoveries as they happen.
enum StatusPage {
    static func html(monitor: ReplicaMonitor) -> String {
        let configuration = monitor.configuration
        let report = StatusReport(monitor: monitor, sample: monitor.snapshot.last)
        let leader = report.leader.map { "r\($0)" } ?? "none known"
        var rows = ""
        for member in report.members {
            let own = member.id == configuration.replicaID
            let role = own ? report.role : (report.leader == member.id ? "leader" : "…")
            rows += """
                <tr id="row-\(member.id)"><td class="name">r\(member.id)\(own ? " (this)" : "")</td>\
                <td>\(escape(member.clientURL ?? "?"))</td><td class="role \(role)">\(role)</td>\
                <td>\(own ? "r\(report.leader.map { String($0) } ?? "?")" : "")</td>\
                <td>\(own ? String(report.ballotRound) : "")</td><td>\(own ? String(report.chosenThrough) : "")</td>\
                <td>\(own ? String(report.appliedThrough) : "")</td><td></td><td></td><td></td><td></td></tr>

                """
        }
        let members = String(decoding: MonitoringEndpoints.encode(report.members), as: UTF8.self)
        return template
            .replacingOccurrences(of: "{{ID}}", with: String(configuration.replicaID))
            .replacingOccurrences(of: "{{LEADER}}", with: leader)
            .replacingOccurrences(of: "{{ROWS}}", with: rows)
            .replacingOccurrences(of: "{{MEMBERS}}", with: members)
    }

    static func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }

    static let template = #"""
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8">
        <title>Synod cluster status (r{{ID}})</title>
        <style>
        body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
        h1 { font-size: 1.3em; } table { border-collapse: collapse; }
        td, th { padding: 4px 10px; border-bottom: 1px solid #ddd; text-align: right; }
        td.name, th.name { text-align: left; font-weight: bold; }
        .leader { color: #0a6b0a; font-weight: bold; } .down, .unreachable { color: #b00; font-weight: bold; }
        .follower { color: #333; } #events { font-family: ui-monospace, monospace; font-size: 12px; max-height: 24em; overflow: auto; }
        .muted { color: #777; }
        </style></head>
        <body>
        <h1>Synod cluster status</h1>
        <p>Served by replica r{{ID}}. Leader: <span id="leader" class="leader">{{LEADER}}</span>.
        <span id="updated" class="muted">(not updated yet)</span></p>
        <table id="replicas">
        <thead><tr><th class="name">replica</th><th>client address</th><th>role</th><th>leader</th><th>ballot</th>
        <th>chosen</th><th>applied</th><th>acceptor</th><th>failures / recoveries</th><th>requests/s</th>
        <th>WAL fsync (ms, /s)</th></tr></thead>
        <tbody>
        {{ROWS}}
        </tbody></table>
        <h2>Events</h2>
        <div id="events" class="muted">none yet</div>
        <script>
        const members = {{MEMBERS}};
        const self = {{ID}};
        const seen = new Map();
        function url(member) {
          return member.id === self || !member.clientURL ? "/status.json" : "http://" + member.clientURL + "/status.json";
        }
        function cell(row, index, text, cls) {
          const td = row.cells[index]; td.textContent = text; if (cls !== undefined) td.className = cls;
        }
        async function poll(member) {
          const row = document.getElementById("row-" + member.id);
          try {
            const answer = await fetch(url(member), { cache: "no-store", signal: AbortSignal.timeout(2000) });
            const s = await answer.json();
            cell(row, 2, s.role, "role " + s.role);
            cell(row, 3, s.leader ? "r" + s.leader : "none");
            cell(row, 4, s.ballotRound); cell(row, 5, s.chosenThrough); cell(row, 6, s.appliedThrough);
            cell(row, 7, s.acceptorDown ? "down" : "up", s.acceptorDown ? "down" : "");
            cell(row, 8, s.acceptorFailures + " / " + s.acceptorRecoveries);
            cell(row, 9, s.requestsPerSecond.toFixed(1));
            cell(row, 10, s.walFsyncMeanMilliseconds.toFixed(2) + ", " + s.walFsyncsPerSecond.toFixed(1));
            for (const e of s.events) seen.set(member.id + ":" + e.at + ":" + e.text, { at: e.at, who: member.id, text: e.text });
            return s;
          } catch (error) {
            cell(row, 2, "unreachable", "role unreachable");
            for (let i = 3; i < row.cells.length; i++) cell(row, i, "");
            return null;
          }
        }
        async function refresh() {
          const answers = await Promise.all(members.map(poll));
          const votes = new Map();
          for (const s of answers) if (s && s.leader) votes.set(s.leader, (votes.get(s.leader) || 0) + 1);
          let leader = null, most = 0;
          for (const [id, count] of votes) if (count > most) { leader = id; most = count; }
          const span = document.getElementById("leader");
          span.textContent = leader ? "r" + leader : "none known";
          document.getElementById("updated").textContent = "(updated " + new Date().toLocaleTimeString() + ")";
          const events = [...seen.values()].sort((a, b) => b.at - a.at).slice(0, 200);
          const box = document.getElementById("events");
          box.textContent = "";
          for (const e of events) {
            const line = document.createElement("div");
            line.textContent = new Date(e.at).toLocaleTimeString() + "  r" + e.who + "  " + e.text;
            box.appendChild(line);
          }
          if (events.length === 0) box.textContent = "none yet";
        }
        refresh();
        setInterval(refresh, 1000);
        </script>
        </body></html>
        """#
}
