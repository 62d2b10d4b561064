//! The tunnel's state machine, without I/O: what the daemon should do with its data plane
//! given what the user wants and what happened to the last one.
//!
//! ```text
//!            want up + membership                     started
//!   Down ────────────────────────▶ Starting ─────────────────────▶ Up
//!    ▲  ◀──── want down (any state) ──┘ ▲  │ start failed            │ exited / panicked
//!    │                                  │  ▼                         ▼
//!    │                                  └─ Failed { reason, retry_at } ◀┘
//!    │                                        backoff 0.5 s … 30 s, reset after a
//!    └──────────────── want down ───────────  steady run of STEADY
//! ```
//! A change of address (the network's owner moved it, or a new network) restarts a
//! running data plane. As in Mullvad's tunnel state machine, each state says what must
//! exist, and the daemon carries it out ([`Action`]).

use std::time::{Duration, Instant};

use trellis_protocol::OverlayIp;

/// First wait before a failed data plane is started again; doubles per failure.
pub const RETRY_FIRST: Duration = Duration::from_millis(500);
/// Longest wait between attempts.
pub const RETRY_MAX: Duration = Duration::from_secs(30);
/// A data plane that ran this long before it died starts the backoff over.
pub const STEADY: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelState {
    /// Not wanted, or nothing to serve (no network yet).
    Down,
    /// Wanted: being started.
    Starting,
    Up {
        my_ip: OverlayIp,
        since: Instant,
    },
    /// The last start failed or the data plane died; tried again at `retry_at`.
    Failed {
        reason: String,
        retry_at: Instant,
    },
}

/// What the daemon must do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Nothing,
    Start(OverlayIp),
    Stop,
    /// Wait, then ask again (a failed data plane's retry).
    WaitUntil(Instant),
}

#[derive(Debug)]
pub struct Tunnel {
    state: TunnelState,
    retry_in: Duration,
}

impl Default for Tunnel {
    fn default() -> Self {
        Self { state: TunnelState::Down, retry_in: RETRY_FIRST }
    }
}

impl Tunnel {
    pub fn state(&self) -> &TunnelState {
        &self.state
    }

    /// The step towards `wanted` (the address to serve, or none), given `running` (the
    /// address of the data plane that exists, if one does).
    pub fn next(&mut self, wanted: Option<OverlayIp>, running: Option<OverlayIp>, now: Instant) -> Action {
        match (wanted, running) {
            (None, Some(_)) => Action::Stop,
            (None, None) => {
                self.state = TunnelState::Down;
                self.retry_in = RETRY_FIRST;
                Action::Nothing
            }
            (Some(want), Some(have)) if want != have => Action::Stop,
            (Some(_), Some(_)) => Action::Nothing,
            (Some(want), None) => match &self.state {
                TunnelState::Failed { retry_at, .. } if *retry_at > now => Action::WaitUntil(*retry_at),
                _ => {
                    self.state = TunnelState::Starting;
                    Action::Start(want)
                }
            },
        }
    }

    pub fn started(&mut self, my_ip: OverlayIp, now: Instant) {
        self.state = TunnelState::Up { my_ip, since: now };
    }

    /// The daemon stopped the data plane on purpose.
    pub fn stopped(&mut self) {
        self.state = TunnelState::Down;
    }

    /// Starting failed, or the running data plane ended by itself.
    pub fn failed(&mut self, reason: String, now: Instant) {
        if let TunnelState::Up { since, .. } = self.state {
            if now.saturating_duration_since(since) >= STEADY {
                self.retry_in = RETRY_FIRST;
            }
        }
        let retry_at = now + self.retry_in;
        self.retry_in = (self.retry_in * 2).min(RETRY_MAX);
        self.state = TunnelState::Failed { reason, retry_at };
    }

    /// Why the tunnel needs attention, while it does.
    pub fn failure(&self) -> Option<&str> {
        match &self.state {
            TunnelState::Failed { reason, .. } => Some(reason),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> OverlayIp {
        OverlayIp(std::net::Ipv4Addr::new(100, 64, 0, last))
    }

    #[test]
    fn wanting_up_starts_and_wanting_down_stops() {
        let now = Instant::now();
        let mut tunnel = Tunnel::default();
        assert_eq!(tunnel.next(None, None, now), Action::Nothing);
        assert_eq!(tunnel.next(Some(ip(1)), None, now), Action::Start(ip(1)));
        assert_eq!(tunnel.state(), &TunnelState::Starting);
        tunnel.started(ip(1), now);
        assert_eq!(tunnel.next(Some(ip(1)), Some(ip(1)), now), Action::Nothing);
        assert_eq!(tunnel.next(None, Some(ip(1)), now), Action::Stop);
        tunnel.stopped();
        assert_eq!(tunnel.next(None, None, now), Action::Nothing);
        assert_eq!(tunnel.state(), &TunnelState::Down);
    }

    #[test]
    fn a_new_address_restarts_the_data_plane() {
        let now = Instant::now();
        let mut tunnel = Tunnel::default();
        tunnel.started(ip(1), now);
        assert_eq!(tunnel.next(Some(ip(2)), Some(ip(1)), now), Action::Stop);
        tunnel.stopped();
        assert_eq!(tunnel.next(Some(ip(2)), None, now), Action::Start(ip(2)));
    }

    #[test]
    fn failures_back_off_and_a_steady_run_resets_the_backoff() {
        let mut now = Instant::now();
        let mut tunnel = Tunnel::default();
        let mut waits = Vec::new();
        for _ in 0..8 {
            assert_eq!(tunnel.next(Some(ip(1)), None, now), Action::Start(ip(1)));
            tunnel.failed("the TUN device failed".into(), now);
            assert_eq!(tunnel.failure(), Some("the TUN device failed"));
            let Action::WaitUntil(at) = tunnel.next(Some(ip(1)), None, now) else { panic!("no wait") };
            waits.push(at - now);
            now = at;
        }
        assert_eq!(waits[0], RETRY_FIRST);
        assert_eq!(waits[1], RETRY_FIRST * 2);
        assert_eq!(*waits.last().unwrap(), RETRY_MAX);
        assert!(waits.windows(2).all(|w| w[0] <= w[1]), "{waits:?}");

        // A run of STEADY before it died: the next retry is quick again.
        assert_eq!(tunnel.next(Some(ip(1)), None, now), Action::Start(ip(1)));
        tunnel.started(ip(1), now);
        now += STEADY;
        tunnel.failed("crashed".into(), now);
        assert_eq!(tunnel.next(Some(ip(1)), None, now), Action::WaitUntil(now + RETRY_FIRST));
    }

    #[test]
    fn going_down_while_failed_forgets_the_failure() {
        let now = Instant::now();
        let mut tunnel = Tunnel::default();
        tunnel.failed("port taken".into(), now);
        assert_eq!(tunnel.next(None, None, now), Action::Nothing);
        assert_eq!(tunnel.failure(), None);
        assert_eq!(tunnel.next(Some(ip(1)), None, now), Action::Start(ip(1)));
    }
}
