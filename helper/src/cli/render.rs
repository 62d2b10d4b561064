//! The CLI's human output: pure functions from the helper's answers to text. Times are
//! given as `now` (Unix seconds) so the output is deterministic in tests.

use std::fmt::Write;

use trellis_protocol::ipc::{
    CandidateKind, IpcEvent, IpcResponse, PathInfo, PathKind, PeerInfo, PeerState, Status, TunnelState,
};
use trellis_protocol::signal::InviteInfo;
use trellis_protocol::time::utc;
use trellis_protocol::InviteTicket;

/// Any response; `done` is what to say for [`IpcResponse::Done`].
pub fn response(response: &IpcResponse, done: &str, now: u64) -> String {
    match response {
        IpcResponse::Status { status: s } => status(s),
        IpcResponse::Invite { ticket, invite: info } => invite(ticket, info, now),
        IpcResponse::Invites { invites: list } => invites(list, now),
        IpcResponse::Peers { peers: list } => peers(list),
        IpcResponse::Pong { peer, ip, path, rtt_micros } => {
            let via = match path {
                Some(PathKind::Direct) => "direct path",
                Some(PathKind::Relayed) => "relayed path",
                None => "path unknown",
            };
            format!("pong from {peer} ({ip}): {}, {via}", rtt(*rtt_micros))
        }
        IpcResponse::Done => done.to_string(),
    }
}

/// `trellis status`: one labelled line per fact.
pub fn status(status: &Status) -> String {
    let mut rows: Vec<(&str, String)> = vec![
        ("Device", status.device_name.to_string()),
        ("Fingerprint", status.fingerprint.clone()),
        ("Tunnel", tunnel(&status.state, status.wants_up)),
    ];
    match &status.network {
        Some(network) => {
            let owner = if network.owner { " (you own it)" } else { "" };
            rows.push(("Network", format!("{}{owner}", network.name)));
            rows.push(("Address", format!("{} in {}", network.my_ip, network.range)));
            rows.push(("Peers", format!("{} of {} connected", network.peers_connected, network.peers_total)));
        }
        None => rows.push((
            "Network",
            "none (`trellis create NAME` starts one, `trellis join CODE` joins one)".into(),
        )),
    }
    rows.push((
        "Server",
        match &status.server {
            Some(server) if status.server_connected => format!("{server} (connected)"),
            Some(server) => format!("{server} (not connected)"),
            None => "none (`trellis server HOST[:PORT]` sets one)".into(),
        },
    ));
    rows.push(("Helper", format!("trellisd {}", status.helper_version)));
    if let Some(notice) = &status.notice {
        rows.push(("Notice", notice.clone()));
    }
    labelled(&rows)
}

fn tunnel(state: &TunnelState, wants_up: bool) -> String {
    match state {
        TunnelState::Up => "up".into(),
        TunnelState::Connecting => "connecting".into(),
        TunnelState::Down if wants_up => "down".into(),
        TunnelState::Down => "down (turned off: `trellis up` connects)".into(),
        TunnelState::NeedsAttention { reason } => format!("needs attention: {reason}"),
    }
}

/// `trellis peers`: a table, or a hint when there is nobody yet.
pub fn peers(peers: &[PeerInfo]) -> String {
    if peers.is_empty() {
        return "No peers yet: `trellis invite` makes a code for a friend to join.".into();
    }
    let rows = peers
        .iter()
        .map(|peer| {
            vec![
                if peer.owner { format!("{} (owner)", peer.name) } else { peer.name.to_string() },
                peer.ip.to_string(),
                peer_state(&peer.state),
                peer.path.as_ref().map_or_else(|| "-".into(), path),
                peer.last_handshake_secs_ago.map_or_else(|| "never".into(), ago),
                bytes(peer.rx_bytes),
                bytes(peer.tx_bytes),
                peer.rtt_micros.map_or_else(|| "-".into(), rtt),
            ]
        })
        .collect();
    table(&["NAME", "ADDRESS", "STATE", "PATH", "HANDSHAKE", "RX", "TX", "RTT"], rows)
}

fn peer_state(state: &PeerState) -> String {
    match state {
        PeerState::Offline => "offline".into(),
        PeerState::Connecting => "connecting".into(),
        PeerState::Connected => "connected".into(),
        PeerState::Reconnecting => "reconnecting".into(),
        PeerState::Failed { reason } => format!("failed: {reason}"),
    }
}

/// `direct host→srflx`: the kind of path, then the local and remote candidate types.
pub fn path(path: &PathInfo) -> String {
    let kind = match path.kind {
        PathKind::Direct => "direct",
        PathKind::Relayed => "relayed",
    };
    format!("{kind} {}→{}", candidate(path.local), candidate(path.remote))
}

/// ICE's short names for candidate types.
fn candidate(kind: CandidateKind) -> &'static str {
    match kind {
        CandidateKind::Host => "host",
        CandidateKind::ServerReflexive => "srflx",
        CandidateKind::PeerReflexive => "prflx",
        CandidateKind::Relayed => "relay",
    }
}

/// `trellis invite`: the code to pass on, and its limits.
pub fn invite(ticket: &InviteTicket, info: &InviteInfo, now: u64) -> String {
    let uses = if info.max_uses == 1 { "1 use".to_string() } else { format!("{} uses", info.max_uses) };
    let mut out = labelled(&[
        ("Invite code", ticket.to_string()),
        ("Link", ticket.link()),
        ("Valid for", format!("{uses}, until {}", expiry(info.expires_at, now))),
    ]);
    let _ = write!(out, "\nYour friend joins with: trellis join {ticket}");
    out
}

/// `trellis invites`: a table of the open invites.
pub fn invites(invites: &[InviteInfo], now: u64) -> String {
    if invites.is_empty() {
        return "No open invites: `trellis invite` makes one.".into();
    }
    let rows = invites
        .iter()
        .map(|info| {
            vec![
                info.id.to_string(),
                format!("{} of {}", info.uses, info.max_uses),
                expiry(info.expires_at, now),
            ]
        })
        .collect();
    table(&["ID", "USED", "EXPIRES"], rows)
}

/// `trellis watch`: one line per event.
pub fn event(event: &IpcEvent) -> String {
    match event {
        IpcEvent::Status { status } => {
            let network = match &status.network {
                Some(n) => {
                    format!("network {}, {} of {} peers connected", n.name, n.peers_connected, n.peers_total)
                }
                None => "no network".into(),
            };
            let server = if status.server_connected { "server connected" } else { "server not connected" };
            let mut line =
                format!("status: tunnel {}; {network}; {server}", tunnel(&status.state, status.wants_up));
            if let Some(notice) = &status.notice {
                let _ = write!(line, "; {notice}");
            }
            line
        }
        IpcEvent::PeerJoined { peer } => format!("{} ({}) joined", peer.name, peer.ip),
        IpcEvent::PeerChanged { peer } => {
            let mut line = format!("{} ({}): {}", peer.name, peer.ip, peer_state(&peer.state));
            if let Some(p) = &peer.path {
                let _ = write!(line, ", {}", path(p));
            }
            line
        }
        IpcEvent::PeerLeft { name, .. } => format!("{name} left"),
    }
}

/// `label:  value` lines with the values aligned.
fn labelled(rows: &[(&str, String)]) -> String {
    let width = rows.iter().map(|(label, _)| label.len()).max().unwrap_or(0) + 1;
    rows.iter()
        .map(|(label, value)| format!("{:<width$}  {value}", format!("{label}:")))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Columns separated by two spaces, each as wide as its widest cell; no trailing spaces.
fn table(headers: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, (cell, width)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                let pad = width - cell.chars().count();
                let _ = write!(out, "{cell}{:pad$}  ", "");
            }
        }
        out
    };
    let mut lines = vec![line(headers.iter().map(|h| h.to_string()).collect())];
    lines.extend(rows.into_iter().map(line));
    lines.join("\n")
}

/// Bytes in binary units: `0 B`, `1.5 KiB`, `12.0 MiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// How long ago, in the largest whole unit: `3s ago`, `5m ago`, `2h ago`, `4d ago`.
pub fn ago(secs: u64) -> String {
    format!("{} ago", span(secs))
}

fn span(secs: u64) -> String {
    match secs {
        0..60 => format!("{secs}s"),
        60..3600 => format!("{}m", secs / 60),
        3600..86_400 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

/// A round-trip time: `0.9 ms`, `12 ms`.
pub fn rtt(micros: u64) -> String {
    if micros < 10_000 {
        format!("{:.1} ms", micros as f64 / 1000.0)
    } else {
        format!("{} ms", micros / 1000)
    }
}

/// An expiry time as UTC plus how far away it is: `2023-11-15 22:13 UTC (in 23h)`.
pub fn expiry(at: u64, now: u64) -> String {
    let when = if at > now { format!("in {}", span(at - now)) } else { "expired".into() };
    format!("{} ({when})", utc(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_read_naturally() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(12 * 1024 * 1024), "12.0 MiB");
        assert_eq!(ago(3), "3s ago");
        assert_eq!(ago(119), "1m ago");
        assert_eq!(ago(7200), "2h ago");
        assert_eq!(ago(90_000), "1d ago");
        assert_eq!(rtt(900), "0.9 ms");
        assert_eq!(rtt(1500), "1.5 ms");
        assert_eq!(rtt(45_300), "45 ms");
    }

    #[test]
    fn expiries_read_as_date_and_distance() {
        assert_eq!(expiry(1_700_000_000, 1_699_913_600), "2023-11-14 22:13 UTC (in 1d)");
        assert_eq!(expiry(1_700_000_000, 1_700_000_000), "2023-11-14 22:13 UTC (expired)");
    }
}
