//! The signal session: connecting with backoff, closing, checking that it still answers,
//! relay credentials, and sealed peer signal in and out.

use super::*;

impl Actor {
    pub(super) fn spawn_connect(&mut self) {
        let Some(server) = self.persisted.server.clone() else { return };
        let secret = self.secret.clone();
        let generation = self.generation;
        let handle = self.tasks.spawn(async move {
            let result = SignalClient::connect(&server, &secret).await;
            Done::Connected { generation, result }
        });
        self.connecting = Some(handle);
    }

    /// Ends the session (the server sees the device offline at once) and any attempt. The
    /// goodbye is said by a task of the actor's: a dead connection may take a while to
    /// give up, and the actor waits for nothing.
    pub(super) fn disconnect(&mut self, why: &str) {
        self.generation += 1;
        if let Some(attempt) = self.connecting.take() {
            attempt.abort();
        }
        for waiter in self.client_waiters.drain(..) {
            let _ = waiter.send(Err(error(IpcErrorCode::ServerUnreachable, why)));
        }
        if let Some(session) = self.session.take() {
            self.close_later(session);
            tracing::info!("signal session closed");
            self.publish_status();
        }
        self.relay_refresh_at = None;
    }

    /// Closes `session` in a task the actor owns (awaited by `stop`).
    pub(super) fn close_later(&mut self, session: SignalSession) {
        self.tasks.spawn(async move {
            session.close().await;
            Done::Nothing
        });
    }

    /// The session ended or stopped answering: reconnect at once (backoff applies to
    /// failed attempts, not to a connection that worked).
    pub(super) fn session_lost(&mut self, notice: &str) {
        tracing::warn!("lost the signal server; tunnels keep running from the cache");
        self.disconnect(notice);
        self.server_notice = Some(notice.into());
        self.reconnect_at = Instant::now();
        self.publish_status();
    }

    pub(super) fn on_done(&mut self, done: Done) {
        match done {
            Done::Nothing => {}
            Done::Connected { generation, result } => {
                if generation != self.generation {
                    if let Ok(session) = result {
                        self.close_later(session);
                    }
                    return;
                }
                self.connecting = None;
                match result {
                    Ok(session) => self.connected(session),
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?self.reconnect_in, "signal server unreachable");
                        self.server_notice = Some(format!("{e}; retrying"));
                        self.reconnect_at = Instant::now() + self.reconnect_in;
                        self.reconnect_in = (self.reconnect_in * 2).min(RECONNECT_MAX);
                        let ipc_error = from_signal(e);
                        for waiter in self.client_waiters.drain(..) {
                            let _ = waiter.send(Err(ipc_error.clone()));
                        }
                        self.publish_status();
                    }
                }
            }
            Done::Relay { generation, probe, result } => {
                if generation != self.generation {
                    return;
                }
                match result {
                    Ok(Some(relay)) => {
                        self.relay = Some(relay.clone());
                        if let Some(dp) = &self.dataplane {
                            dp.handle.try_send(DpCommand::SetRelay(Some(relay)));
                        }
                    }
                    Ok(None) => {}
                    Err(e @ (SignalError::Timeout | SignalError::Disconnected)) if probe => {
                        tracing::warn!(error = %e, "the signal session stopped answering; reconnecting");
                        self.session_lost("the signal server stopped answering; reconnecting");
                    }
                    Err(e) => tracing::warn!(error = %e, "no relay credentials"),
                }
            }
        }
    }

    /// Adopts a new session's welcome: membership, relay, queued signal, waiters.
    pub(super) fn connected(&mut self, session: SignalSession) {
        let welcome = &session.welcome;
        tracing::info!(memberships = welcome.memberships.len(), "connected to the signal server");
        self.server_notice = None;
        self.reconnect_in = RECONNECT_FIRST;
        let cached = self.persisted.membership.clone();
        let current = match &cached {
            Some(c) => welcome.memberships.iter().find(|m| m.network.id == c.network.id).cloned(),
            None => welcome.memberships.first().cloned(),
        };
        if cached.is_some() && current.is_none() {
            self.server_notice = Some("this device is no longer a member of its network".into());
        }
        let server = self.persisted.server.clone();
        let relay_host = welcome.relay_host.clone().or_else(|| server.map(|s| s.host)).unwrap_or_default();
        self.relay_target = Some((relay_host, welcome.relay_port));
        let client = session.client.clone();
        self.session = Some(session);
        if let Err(e) = self.save(|p| p.membership = current) {
            tracing::error!(error = %e, "cannot save the membership");
        }
        self.apply_membership();
        self.relay_refresh_at = Some(Instant::now() + RELAY_REFRESH);
        if self.persisted.membership.is_some() {
            self.fetch_relay(false);
        }
        self.flush_signals();
        for waiter in self.client_waiters.drain(..) {
            let _ = waiter.send(Ok(ClientLease::Shared(client.clone())));
        }
        self.publish_status();
    }

    /// Fetches TURN credentials (which also shows that the session answers) in a task.
    pub(super) fn fetch_relay(&mut self, probe: bool) {
        let (Some(session), Some((host, port))) = (&self.session, self.relay_target.clone()) else { return };
        let client = session.client.clone();
        let generation = self.generation;
        self.tasks.spawn(async move {
            let answer = if probe {
                tokio::time::timeout(PROBE_TIMEOUT, client.request(Request::TurnCredentials))
                    .await
                    .unwrap_or(Err(SignalError::Timeout))
            } else {
                client.request(Request::TurnCredentials).await
            };
            let result = match answer {
                Ok(Response::TurnCredentials { credentials }) => {
                    match tokio::net::lookup_host((host.as_str(), port)).await {
                        Ok(mut addrs) => Ok(addrs.find(SocketAddr::is_ipv4).map(|addr| RelayServer {
                            addr,
                            username: credentials.username,
                            password: credentials.password,
                            realm: credentials.realm,
                        })),
                        Err(e) => {
                            tracing::warn!(%host, error = %e, "cannot resolve the relay");
                            Ok(None)
                        }
                    }
                }
                Ok(other) => {
                    tracing::warn!(?other, "unexpected answer to a relay credential request");
                    Ok(None)
                }
                Err(e) => Err(e),
            };
            Done::Relay { generation, probe, result }
        });
    }

    /// Checks at once that the session still works (a path was lost, or the machine
    /// resumed): a NAT that rebinds kills the TCP connection to the server too, and ICE
    /// cannot restart without signal.
    pub(super) fn probe_session(&mut self) {
        let now = Instant::now();
        if self.last_probe.is_some_and(|at| now.saturating_duration_since(at) < PROBE_EVERY) {
            return;
        }
        self.last_probe = Some(now);
        if self.session.is_some() {
            self.fetch_relay(true);
        } else {
            self.reconnect_now();
        }
    }

    pub(super) fn reconnect_now(&mut self) {
        self.reconnect_at = Instant::now();
        self.reconnect_in = RECONNECT_FIRST;
    }

    /// Seals the engine's signal for its peer and sends it, in order; keeps it a while
    /// when the session is away.
    pub(super) fn send_signal(&mut self, peer: PublicKey, signal: PeerSignal) {
        let (Some(_), Some(membership)) = (&self.session, &self.persisted.membership) else {
            if self.offline_signals.len() >= OFFLINE_SIGNAL_MAX {
                self.offline_signals.pop_front();
            }
            self.offline_signals.push_back((Instant::now(), peer, signal));
            return;
        };
        let network = membership.network.id;
        match self.sealer.seal(peer, &signal.to_bytes(), now_micros()) {
            Ok(envelope) => self.send_sealed(network, envelope, Instant::now()),
            Err(e) => tracing::warn!(peer = %peer.short(), error = %e, "cannot seal a signal"),
        }
    }

    /// Sends a sealed envelope on the session and remembers it for [`RESEND_WINDOW`]: a
    /// session that turns out dead (a NAT that rebound, an address that went) swallowed
    /// what it was given, and the ICE restart that follows a network change is in there.
    fn send_sealed(&mut self, network: NetworkId, envelope: SealedEnvelope, sealed_at: Instant) {
        let now = Instant::now();
        while self
            .unconfirmed_signals
            .front()
            .is_some_and(|(at, ..)| now.saturating_duration_since(*at) > RESEND_WINDOW)
        {
            self.unconfirmed_signals.pop_front();
        }
        if self.unconfirmed_signals.len() >= OFFLINE_SIGNAL_MAX {
            self.unconfirmed_signals.pop_front();
        }
        // Kept with the time it was sealed: a session that keeps failing does not keep an
        // old signal alive.
        self.unconfirmed_signals.push_back((sealed_at, network, envelope.clone()));
        if let Some(session) = &self.session {
            if let Err(e) = session.client.send_without_reply(Request::Signal { network, envelope }) {
                tracing::debug!(error = %e, "signal not sent; it is sent again on the next session");
            }
        }
    }

    /// A new session: what the last one may have swallowed goes again, as it was sealed
    /// (the peer refuses those it already opened: their counters are not new), then what
    /// waited while there was no session.
    pub(super) fn flush_signals(&mut self) {
        let now = Instant::now();
        let unconfirmed: Vec<_> = self.unconfirmed_signals.drain(..).collect();
        let resent = unconfirmed.len();
        for (at, network, envelope) in unconfirmed {
            if now.saturating_duration_since(at) <= RESEND_WINDOW {
                self.send_sealed(network, envelope, at);
            }
        }
        if resent > 0 {
            tracing::debug!(resent, "signal of the last session sent again");
        }
        let queued: Vec<_> = self.offline_signals.drain(..).collect();
        for (at, peer, signal) in queued {
            if now.saturating_duration_since(at) <= OFFLINE_SIGNAL_AGE {
                self.send_signal(peer, signal);
            }
        }
    }

    pub(super) fn on_signal(&mut self, envelope: SealedEnvelope) {
        let from = envelope.from;
        let payload = match self.sealer.open(&envelope) {
            Ok(payload) => payload,
            // A peer's helper sends the last seconds of signal again after a reconnect:
            // the ones that did arrive come twice, which is expected.
            Err(e @ SealError::Replayed { .. }) => {
                tracing::debug!(peer = %from.short(), error = %e, "a sealed signal came again");
                return;
            }
            Err(e) => {
                tracing::warn!(peer = %from.short(), error = %e, "refused a sealed signal");
                return;
            }
        };
        match PeerSignal::from_bytes(&payload) {
            Ok(signal) => {
                if let Some(dp) = &self.dataplane {
                    dp.handle.try_send(DpCommand::Signal(from, signal));
                }
            }
            Err(e) => tracing::warn!(peer = %from.short(), error = %e, "unreadable peer signal"),
        }
    }
}
