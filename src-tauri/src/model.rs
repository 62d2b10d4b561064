//! What the app knows about the helper, kept up to date from its events: the source for
//! the tray and for desktop notifications. Pure data, so it is tested without a helper.

use std::collections::BTreeMap;

use trellis_protocol::ipc::{IpcEvent, PathKind, PeerInfo, PeerState, Status, TunnelState};
use trellis_protocol::PublicKey;

use crate::error::AppError;

#[derive(Clone, Debug, Default)]
pub struct HelperModel {
    status: Option<Status>,
    peers: BTreeMap<PublicKey, PeerInfo>,
    /// Why the helper cannot be reached, while it cannot.
    unavailable: Option<AppError>,
}

/// A desktop notification the model asks for.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Notice {
    pub title: String,
    pub body: String,
}

/// What the tray shows.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TrayView {
    pub icon: TrayIconState,
    /// First line of the menu: state, network and address.
    pub status_line: String,
    /// Whether Connect/Disconnect and the peers can be used at all.
    pub helper_available: bool,
    pub in_network: bool,
    pub wants_up: bool,
    pub peers: Vec<TrayPeer>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum TrayIconState {
    Disconnected,
    Connecting,
    Connected,
    NeedsAttention,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TrayPeer {
    pub name: String,
    pub ip: String,
    /// "direct", "relayed", "offline", "connecting"…
    pub path: String,
}

impl HelperModel {
    /// The helper answered: start over from its status and peers.
    pub fn reset(&mut self, status: Status, peers: Vec<PeerInfo>) {
        self.status = Some(status);
        self.peers = peers.into_iter().map(|p| (p.key, p)).collect();
        self.unavailable = None;
    }

    pub fn set_unavailable(&mut self, error: AppError) {
        self.unavailable = Some(error);
    }

    pub fn unavailable(&self) -> Option<&AppError> {
        self.unavailable.as_ref()
    }

    pub fn status(&self) -> Option<&Status> {
        self.status.as_ref()
    }

    pub fn peer(&self, key: &PublicKey) -> Option<&PeerInfo> {
        self.peers.get(key)
    }

    /// Applies one event; returns the notifications it deserves.
    pub fn apply(&mut self, event: &IpcEvent) -> Vec<Notice> {
        let network = self.network_name();
        match event {
            IpcEvent::Status { status }
                if self.status.as_ref().is_some_and(|s| s.revision > status.revision) =>
            {
                // Older than what we have (it came the long way round): nothing to do.
                Vec::new()
            }
            IpcEvent::Status { status } => {
                let left_network =
                    self.status.as_ref().is_some_and(|s| s.network.is_some()) && status.network.is_none();
                if left_network {
                    self.peers.clear();
                }
                let mut notices = Vec::new();
                if let (Some(notice), Some(before)) = (&status.notice, &self.status) {
                    if before.notice.as_ref() != Some(notice) {
                        notices.push(Notice { title: "Trellis".into(), body: capitalize(notice) });
                    }
                }
                self.status = Some(status.clone());
                notices
            }
            IpcEvent::PeerJoined { peer } => {
                self.peers.insert(peer.key, peer.clone());
                vec![Notice {
                    title: format!("{} joined {}", peer.name, network.as_deref().unwrap_or("your network")),
                    body: format!("{} is at {}", peer.name, peer.ip),
                }]
            }
            IpcEvent::PeerChanged { peer } => {
                let before = self.peers.insert(peer.key, peer.clone());
                let was_connected = before.as_ref().is_some_and(|p| p.state == PeerState::Connected);
                let is_connected = peer.state == PeerState::Connected;
                match (was_connected, is_connected) {
                    (false, true) => vec![Notice {
                        title: format!("Connected to {}", peer.name),
                        body: format!("{} — {}", peer.ip, path_label(peer)),
                    }],
                    (true, false) => vec![Notice {
                        title: format!("Lost connection to {}", peer.name),
                        body: match &peer.state {
                            PeerState::Failed { reason } => reason.clone(),
                            PeerState::Offline => format!("{} went offline", peer.name),
                            _ => "Trellis is reconnecting".into(),
                        },
                    }],
                    _ => Vec::new(),
                }
            }
            IpcEvent::PeerLeft { key, .. } => {
                self.peers.remove(key);
                Vec::new()
            }
        }
    }

    fn network_name(&self) -> Option<String> {
        self.status.as_ref()?.network.as_ref().map(|n| n.name.as_str().to_string())
    }

    pub fn tray_view(&self) -> TrayView {
        let unavailable = TrayView {
            icon: TrayIconState::NeedsAttention,
            status_line: "Trellis helper not available".into(),
            helper_available: false,
            in_network: false,
            wants_up: false,
            peers: Vec::new(),
        };
        if self.unavailable.is_some() {
            return unavailable;
        }
        let Some(status) = &self.status else {
            return TrayView { status_line: "Connecting to the Trellis helper…".into(), ..unavailable };
        };
        let (icon, state) = match &status.state {
            TunnelState::Down => (TrayIconState::Disconnected, "Disconnected".to_string()),
            TunnelState::Connecting => (TrayIconState::Connecting, "Connecting".to_string()),
            TunnelState::Up => (TrayIconState::Connected, "Connected".to_string()),
            TunnelState::NeedsAttention { reason } => {
                (TrayIconState::NeedsAttention, format!("Needs attention: {reason}"))
            }
        };
        let status_line = match &status.network {
            Some(network) => format!("{state} — {} — {}", network.name.as_str(), network.my_ip),
            None if status.notice.is_some() => "Not in a network (removed)".into(),
            None => "Not in a network yet".into(),
        };
        let icon = if status.network.is_none() && status.notice.is_some() {
            TrayIconState::NeedsAttention
        } else {
            icon
        };
        TrayView {
            icon,
            status_line,
            helper_available: true,
            in_network: status.network.is_some(),
            wants_up: status.wants_up,
            peers: self
                .peers
                .values()
                .map(|p| TrayPeer {
                    name: p.name.as_str().to_string(),
                    ip: p.ip.to_string(),
                    path: path_label(p),
                })
                .collect(),
        }
    }
}

fn path_label(peer: &PeerInfo) -> String {
    match (&peer.state, peer.path.as_ref().map(|p| p.kind)) {
        (PeerState::Connected, Some(PathKind::Direct)) => "direct".into(),
        (PeerState::Connected, Some(PathKind::Relayed)) => "relayed".into(),
        (PeerState::Connected, None) => "connected".into(),
        (PeerState::Offline, _) => "offline".into(),
        (PeerState::Connecting, _) => "connecting".into(),
        (PeerState::Reconnecting, _) => "reconnecting".into(),
        (PeerState::Failed { .. }, _) => "unreachable".into(),
    }
}

fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use trellis_protocol::ipc::{CandidateKind, NetworkSummary, PathInfo};
    use trellis_protocol::keys::generate_secret;
    use trellis_protocol::{NetworkId, OverlayIp, OverlayNet};

    fn status(state: TunnelState, in_network: bool) -> Status {
        let key = PublicKey::of(&generate_secret());
        Status {
            helper_version: "0.1.0".into(),
            device_name: "alice".parse().unwrap(),
            public_key: key,
            fingerprint: key.fingerprint(),
            server: None,
            server_connected: true,
            wants_up: state != TunnelState::Down,
            state,
            network: in_network.then(|| NetworkSummary {
                id: NetworkId::random(),
                name: "home".parse().unwrap(),
                range: OverlayNet::DEFAULT,
                my_ip: OverlayIp("100.64.0.1".parse().unwrap()),
                owner: true,
                peers_total: 1,
                peers_connected: 0,
            }),
            notice: None,
            revision: 0,
        }
    }

    fn peer(name: &str, state: PeerState, path: Option<PathKind>) -> PeerInfo {
        let key = PublicKey::of(&generate_secret());
        PeerInfo {
            name: name.parse().unwrap(),
            key,
            fingerprint: key.fingerprint(),
            ip: OverlayIp("100.64.0.2".parse().unwrap()),
            owner: false,
            online: true,
            state,
            path: path.map(|kind| PathInfo {
                kind,
                local: CandidateKind::Host,
                remote: CandidateKind::Host,
                remote_addr: "198.51.100.2:51820".parse().unwrap(),
            }),
            last_handshake_secs_ago: None,
            rx_bytes: 0,
            tx_bytes: 0,
            rtt_micros: None,
        }
    }

    #[test]
    fn the_tray_follows_the_tunnel_state() {
        let mut model = HelperModel::default();
        assert!(!model.tray_view().helper_available);
        model.reset(status(TunnelState::Down, true), vec![]);
        let view = model.tray_view();
        assert_eq!(view.icon, TrayIconState::Disconnected);
        assert_eq!(view.status_line, "Disconnected — home — 100.64.0.1");
        assert!(view.helper_available && view.in_network && !view.wants_up);

        model.apply(&IpcEvent::Status { status: status(TunnelState::Up, true) });
        assert_eq!(model.tray_view().icon, TrayIconState::Connected);
        assert!(model.tray_view().wants_up);

        model.apply(&IpcEvent::Status {
            status: status(TunnelState::NeedsAttention { reason: "server unreachable".into() }, true),
        });
        let view = model.tray_view();
        assert_eq!(view.icon, TrayIconState::NeedsAttention);
        assert!(view.status_line.contains("server unreachable"), "{}", view.status_line);

        model.set_unavailable(AppError::new(crate::error::AppErrorKind::NotRunning, "stopped"));
        assert!(!model.tray_view().helper_available);
    }

    #[test]
    fn a_friend_joining_and_connecting_is_announced_once_and_losing_them_too() {
        let mut model = HelperModel::default();
        model.reset(status(TunnelState::Up, true), vec![]);
        let bob = peer("bob", PeerState::Connecting, None);
        let joined = model.apply(&IpcEvent::PeerJoined { peer: bob.clone() });
        assert_eq!(joined.len(), 1);
        assert_eq!(joined[0].title, "bob joined home");

        let connected = PeerInfo {
            state: PeerState::Connected,
            ..peer("bob", PeerState::Connected, Some(PathKind::Direct))
        };
        let connected = PeerInfo { key: bob.key, ..connected };
        let notices = model.apply(&IpcEvent::PeerChanged { peer: connected.clone() });
        assert_eq!(
            notices,
            vec![Notice { title: "Connected to bob".into(), body: "100.64.0.2 — direct".into() }]
        );
        assert!(model.apply(&IpcEvent::PeerChanged { peer: connected.clone() }).is_empty(), "no repeat");
        assert_eq!(model.tray_view().peers[0].path, "direct");

        let lost = PeerInfo { state: PeerState::Offline, path: None, ..connected };
        let notices = model.apply(&IpcEvent::PeerChanged { peer: lost });
        assert_eq!(notices[0].title, "Lost connection to bob");

        model.apply(&IpcEvent::PeerLeft { name: bob.name.clone(), key: bob.key });
        assert!(model.tray_view().peers.is_empty());
    }

    #[test]
    fn being_removed_from_the_network_is_announced_and_shown() {
        let mut model = HelperModel::default();
        model.reset(status(TunnelState::Up, true), vec![peer("bob", PeerState::Connected, None)]);
        let mut removed = status(TunnelState::Up, false);
        removed.notice = Some("this device was removed from network \"home\" by its owner".into());
        let notices = model.apply(&IpcEvent::Status { status: removed });
        assert_eq!(notices.len(), 1);
        assert!(notices[0].body.starts_with("This device was removed"));
        let view = model.tray_view();
        assert_eq!(view.icon, TrayIconState::NeedsAttention);
        assert!(view.peers.is_empty() && !view.in_network);
    }
}
