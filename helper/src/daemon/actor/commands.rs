//! The daemon handle's commands (the IPC requests), answered from the actor's state.

use super::*;

impl Actor {
    pub(super) fn on_command(&mut self, command: Command) {
        match command {
            Command::Snapshot(reply) => {
                let _ = reply.send(self.snapshot());
            }
            Command::Up(reply) => {
                let result = self.save(|p| p.wants_up = true).map(|()| self.status());
                self.reconnect_now();
                let _ = reply.send(result);
            }
            Command::Down(reply) => {
                self.server_notice = None;
                let result = self.save(|p| p.wants_up = false).map(|()| self.status());
                let _ = reply.send(result);
            }
            Command::SetServer(server, reply) => {
                let current = &self.persisted;
                let result = if current.membership.is_some() && current.server.as_ref() != Some(&server) {
                    Err(error(
                        IpcErrorCode::AlreadyInNetwork,
                        "this device is in a network on another server; leave it first",
                    ))
                } else {
                    self.set_server(server)
                };
                let _ = reply.send(result);
            }
            Command::PrepareMembership(server, reply) => {
                let result = match &self.persisted.membership {
                    Some(m) => Err(error(
                        IpcErrorCode::AlreadyInNetwork,
                        format!(
                            "this device is already in network {:?}; leave it first",
                            m.network.name.as_str()
                        ),
                    )),
                    None => server
                        .map_or(Ok(()), |s| self.set_server(s))
                        .and_then(|()| self.save(|p| p.wants_up = true)),
                };
                let _ = reply.send(result);
            }
            Command::Client(reply) => self.client(reply),
            Command::Adopt(membership, reply) => {
                let result = self
                    .save(|p| {
                        p.membership = Some(membership);
                        p.wants_up = true;
                        p.removed = None;
                    })
                    .map(|()| {
                        self.server_notice = None;
                        self.apply_membership();
                        self.status()
                    });
                let _ = reply.send(result);
            }
            Command::Left(reply) => {
                let _ = reply.send(self.save(|p| p.membership = None));
            }
            Command::Renamed(name, me, reply) => {
                let result = self
                    .save(|p| {
                        if let (Some(m), Some(me)) = (p.membership.as_mut(), me) {
                            m.me = me;
                        }
                        p.device_name = name;
                    })
                    .map(|()| self.status());
                let _ = reply.send(result);
            }
            Command::Ping(key, reply) => {
                let result = match &self.dataplane {
                    None => Err(error(IpcErrorCode::NoNetwork, "the tunnel is down: run `trellis up`")),
                    Some(dp) => {
                        let (tx, rx) = oneshot::channel();
                        let waiters = self.pings.entry(key).or_default();
                        waiters.retain(|w| !w.is_closed());
                        waiters.push(tx);
                        Ok((dp.handle.clone(), rx))
                    }
                };
                let _ = reply.send(result);
            }
            Command::Shutdown(_) => unreachable!("handled by the loop"),
        }
    }

    /// A new server drops the session with the old one; the loop connects to the new.
    pub(super) fn set_server(&mut self, server: ServerAddr) -> Result<(), IpcError> {
        if self.persisted.server.as_ref() == Some(&server) {
            return Ok(());
        }
        self.save(|p| p.server = Some(server))?;
        // The old server's session, attempt and relay go; the loop connects to the new one.
        self.disconnect("the signal server was changed");
        self.relay = None;
        self.reconnect_now();
        Ok(())
    }

    pub(super) fn client(&mut self, reply: Reply<ClientLease>) {
        if self.session.as_ref().is_some_and(SignalSession::is_finished) {
            // Ended, and the loop has not heard yet: not a session to lend.
            self.session_lost("the signal server is unreachable; reconnecting");
        }
        if let Some(session) = &self.session {
            let _ = reply.send(Ok(ClientLease::Shared(session.client.clone())));
            return;
        }
        if self.persisted.server.is_none() {
            let _ = reply.send(Err(error(
                IpcErrorCode::NoServer,
                "no signal server is set: give one with `trellis server HOST[:PORT]`",
            )));
            return;
        }
        if let (false, Some(server)) = (self.persisted.wants_up, self.persisted.server.clone()) {
            let secret = self.secret.clone();
            self.tasks.spawn(async move {
                let lease = SignalClient::connect(&server, &secret)
                    .await
                    .map(ClientLease::OneOff)
                    .map_err(from_signal);
                if let Err(Ok(ClientLease::OneOff(session))) = reply.send(lease) {
                    session.close().await;
                }
                Done::Nothing
            });
            return;
        }
        // Asked by a person: try now rather than at the end of a backoff.
        self.reconnect_now();
        self.client_waiters.push(reply);
    }

    pub(super) fn snapshot(&mut self) -> Snapshot {
        Snapshot {
            status: self.status(),
            persisted: self.persisted.clone(),
            dataplane: self.dataplane.as_ref().map(|d| d.handle.clone()),
        }
    }
}
