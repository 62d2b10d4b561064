//! Server events (membership changes) and the data plane's outputs.

use super::*;

impl Actor {
    pub(super) fn on_server_event(&mut self, event: Event) {
        let Some(membership) = self.persisted.membership.clone() else { return };
        let network = membership.network.id;
        match event {
            Event::Signal { network: from_net, envelope } if from_net == network => self.on_signal(envelope),
            Event::MemberJoined { network: n, member } if n == network => {
                let saved = self.save(|p| {
                    if let Some(m) = p.membership.as_mut() {
                        m.members.retain(|x| x.device != member.device);
                        m.members.push(member.clone());
                    }
                });
                if saved.is_ok() {
                    let _ = self.events.send(IpcEvent::PeerJoined { peer: peer_info(&member, None) });
                }
                self.apply_membership();
            }
            Event::MemberUpdated { network: n, member } if n == network => {
                let _ = self.save(|p| {
                    if let Some(m) = p.membership.as_mut() {
                        for x in m.members.iter_mut().filter(|x| x.device == member.device) {
                            *x = member.clone();
                        }
                        if m.me.device == member.device {
                            m.me = member.clone();
                        }
                    }
                });
                let _ = self.events.send(IpcEvent::PeerChanged { peer: peer_info(&member, None) });
                self.apply_membership();
            }
            Event::MemberLeft { network: n, device, key, .. } if n == network => {
                let name = membership.members.iter().find(|m| m.device == device).map(|m| m.name.clone());
                let _ = self.save(|p| {
                    if let Some(m) = p.membership.as_mut() {
                        m.members.retain(|x| x.device != device);
                    }
                });
                if let Some(name) = name {
                    let _ = self.events.send(IpcEvent::PeerLeft { name, key });
                }
                self.apply_membership();
            }
            Event::RemovedFromNetwork { network: n } if n == network => {
                tracing::warn!(%network, "removed from the network by its owner");
                let why = format!(
                    "this device was removed from network {:?} by its owner",
                    membership.network.name.as_str()
                );
                let _ = self.save(|p| {
                    p.membership = None;
                    p.removed = Some(why);
                });
            }
            _ => {}
        }
    }

    /// Hands the cached membership's peers to the engine.
    pub(super) fn apply_membership(&mut self) {
        if let (Some(membership), Some(dp)) = (&self.persisted.membership, &self.dataplane) {
            dp.handle.try_send(DpCommand::SetPeers(peer_configs(membership, &self.key)));
        }
    }

    pub(super) fn on_output(&mut self, output: Output) {
        match output {
            Output::Signal(peer, signal) => self.send_signal(peer, signal),
            Output::Event(EngineEvent::PingReply { key, rtt }) => {
                for waiter in self.pings.remove(&key).unwrap_or_default() {
                    let _ = waiter.send(rtt);
                }
            }
            Output::Event(EngineEvent::PathLost { key }) => {
                tracing::info!(peer = %key.short(), "a path died: checking the signal session");
                self.probe_session();
            }
            Output::Event(event) => {
                tracing::debug!(?event, "engine event");
                self.publish_peer_change(&event);
            }
            Output::Resumed(slept) => {
                tracing::info!(slept_ms = slept.as_millis() as u64, "resumed: checking the signal session");
                self.last_probe = None;
                self.probe_session();
                self.net_check_at.get_or_insert_with(Instant::now);
            }
        }
    }

    /// Tells subscribers how a peer is now, with its live state and path, asked of the
    /// data plane from a task (the actor never waits on the data plane).
    pub(super) fn publish_peer_change(&mut self, event: &EngineEvent) {
        let key = match event {
            EngineEvent::PeerState { key, .. } | EngineEvent::PathChanged { key, .. } => *key,
            _ => return,
        };
        let member =
            self.persisted.membership.as_ref().and_then(|m| m.members.iter().find(|x| x.key == key).cloned());
        let (Some(member), Some(dp)) = (member, &self.dataplane) else { return };
        let handle = dp.handle.clone();
        let events = self.events.clone();
        self.tasks.spawn(async move {
            let live = handle.peers().await.into_iter().find(|l| l.key == key);
            let _ = events.send(IpcEvent::PeerChanged { peer: peer_info(&member, live.as_ref()) });
            Done::Nothing
        });
    }
}
