//! A tiny in-memory STUN + TURN (RFC 8656 subset) server, built with rtc-stun / rtc-turn
//! `proto`: Binding, Allocate (401 then long-term auth), Refresh, CreatePermission,
//! ChannelBind, Send indication, ChannelData; relays to and from permitted peers.
//! (From the ICE prototype, `/work/scratch-ice/tests/common/turn_server.rs`.)
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use rtc_stun::attributes::{ATTR_MESSAGE_INTEGRITY, ATTR_NONCE, ATTR_REALM, ATTR_USERNAME};
use rtc_stun::error_code::{ErrorCodeAttribute, CODE_ALLOC_MISMATCH, CODE_UNAUTHORIZED};
use rtc_stun::fingerprint::FINGERPRINT;
use rtc_stun::integrity::MessageIntegrity;
use rtc_stun::message::*;
use rtc_stun::textattrs::{Nonce, Realm, Username};
use rtc_stun::xoraddr::XorMappedAddress;
use rtc_turn::proto::chandata::ChannelData;
use rtc_turn::proto::channum::ChannelNumber;
use rtc_turn::proto::data::Data;
use rtc_turn::proto::lifetime::Lifetime;
use rtc_turn::proto::peeraddr::PeerAddress;
use rtc_turn::proto::relayaddr::RelayedAddress;

pub const REALM: &str = "trellis.test";
const NONCE: &str = "f00dfeedf00dfeed";
const LIFETIME: Duration = Duration::from_secs(600);

struct Allocation {
    client: SocketAddr,
    relayed: SocketAddr,
    permissions: HashSet<IpAddr>,
    channels: HashMap<u16, SocketAddr>,
    expires: Instant,
}

pub struct TurnServer {
    pub addr: SocketAddr,
    password: HashMap<String, String>,
    allocations: Vec<Allocation>,
    next_port: u16,
    /// Counters, to show which path the bytes took.
    pub relayed_datagrams: usize,
    /// Datagrams between client and server framed as ChannelData / as Send or Data indications.
    pub channel_data: usize,
    pub indications: usize,
    /// (username, STUN method) of every request that passed MESSAGE-INTEGRITY.
    pub accepted: Vec<(String, Method)>,
    /// Requests answered 437 Allocation Mismatch.
    pub mismatches: usize,
    now: Option<Instant>,
}

/// (src, dst, payload) leaving the server.
pub type Out = (SocketAddr, SocketAddr, Vec<u8>);

impl TurnServer {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            password: HashMap::new(),
            allocations: vec![],
            next_port: 49152,
            relayed_datagrams: 0,
            channel_data: 0,
            indications: 0,
            accepted: vec![],
            mismatches: 0,
            now: None,
        }
    }

    pub fn add_user(&mut self, user: &str, pass: &str) {
        self.password.insert(user.into(), pass.into());
    }

    pub fn remove_user(&mut self, user: &str) {
        self.password.remove(user);
    }

    /// Does the server own `addr` (its listening address or a relayed one)?
    pub fn owns(&self, addr: SocketAddr) -> bool {
        addr == self.addr || self.allocations.iter().any(|a| a.relayed == addr)
    }

    /// A datagram from `from` to `to` (the server's address or a relayed one) at `now`.
    /// Allocations expire LIFETIME after their last Allocate or Refresh.
    pub fn handle(&mut self, now: Instant, from: SocketAddr, to: SocketAddr, data: &[u8]) -> Vec<Out> {
        self.now = Some(now);
        self.allocations.retain(|a| a.expires > now);
        if to == self.addr {
            if is_stun_message(data) {
                self.on_stun(from, data)
            } else if ChannelData::is_channel_data(data) {
                self.on_channel_data(from, data)
            } else {
                vec![]
            }
        } else {
            self.on_peer_data(from, to, data)
        }
    }

    fn on_stun(&mut self, from: SocketAddr, data: &[u8]) -> Vec<Out> {
        let mut m = Message::new();
        m.raw = data.to_vec();
        if m.decode().is_err() {
            return vec![];
        }
        let crypto = rtc_stun::crypto::default_provider().unwrap();
        let crypto = crypto.crypto();
        let method = m.typ.method;
        if m.typ.class == CLASS_INDICATION && method == METHOD_SEND {
            let (mut peer, mut d) = (PeerAddress::default(), Data::default());
            if peer.get_from(&m).is_err() || d.get_from(&m).is_err() {
                return vec![];
            }
            self.indications += 1;
            return self.relay_out(from, SocketAddr::new(peer.ip, peer.port), d.0);
        }
        if m.typ.class != CLASS_REQUEST {
            return vec![];
        }
        let mut resp = Message::new();
        if method == METHOD_BINDING {
            resp.build(&[
                Box::new(m.clone()),
                Box::new(BINDING_SUCCESS),
                Box::new(XorMappedAddress { ip: from.ip(), port: from.port() }),
                Box::new(FINGERPRINT),
            ])
            .unwrap();
            return vec![(self.addr, from, resp.raw)];
        }
        // Long-term credentials (RFC 8489 §9.2): 401 with REALM + NONCE first.
        let (key, user) = match Username::get_from_as(&m, ATTR_USERNAME) {
            Ok(user) if m.contains(ATTR_MESSAGE_INTEGRITY) => {
                let Some(pass) = self.password.get(&user.text) else { return vec![] };
                let key = MessageIntegrity::long_term_integrity_key(
                    user.text.clone(),
                    REALM.into(),
                    pass.clone(),
                    crypto,
                )
                .unwrap();
                (key, user.text)
            }
            _ => {
                resp.build(&[
                    Box::new(m.clone()),
                    Box::new(MessageType::new(method, CLASS_ERROR_RESPONSE)),
                    Box::new(ErrorCodeAttribute {
                        code: CODE_UNAUTHORIZED,
                        reason: b"Unauthorized".to_vec(),
                    }),
                    Box::new(Realm::new(ATTR_REALM, REALM.into())),
                    Box::new(Nonce::new(ATTR_NONCE, NONCE.into())),
                    Box::new(FINGERPRINT),
                ])
                .unwrap();
                return vec![(self.addr, from, resp.raw)];
            }
        };
        if MessageIntegrity::check(&mut m, &key, crypto).is_err() {
            return vec![]; // a real server answers 401; dropping is enough here
        }
        self.accepted.push((user, method));
        let expires = self.now.unwrap() + LIFETIME;
        let mut attrs: Vec<Box<dyn Setter>> =
            vec![Box::new(m.clone()), Box::new(MessageType::new(method, CLASS_SUCCESS_RESPONSE))];
        if method == METHOD_ALLOCATE {
            let relayed = match self.allocations.iter_mut().find(|a| a.client == from) {
                Some(a) => {
                    a.expires = expires;
                    a.relayed
                }
                None => {
                    let relayed = SocketAddr::new(self.addr.ip(), self.next_port);
                    self.next_port += 1;
                    self.allocations.push(Allocation {
                        client: from,
                        relayed,
                        permissions: HashSet::new(),
                        channels: HashMap::new(),
                        expires,
                    });
                    relayed
                }
            };
            attrs.push(Box::new(RelayedAddress { ip: relayed.ip(), port: relayed.port() }));
            attrs.push(Box::new(XorMappedAddress { ip: from.ip(), port: from.port() }));
            attrs.push(Box::new(Lifetime(LIFETIME)));
        } else if method == METHOD_REFRESH {
            let mut asked = Lifetime::default();
            let _ = asked.get_from(&m);
            let Some(at) = self.allocations.iter().position(|a| a.client == from) else {
                return self.mismatch(&m, from);
            };
            if asked.0.is_zero() {
                self.allocations.remove(at);
                attrs.push(Box::new(Lifetime(Duration::ZERO)));
            } else {
                self.allocations[at].expires = expires;
                attrs.push(Box::new(Lifetime(LIFETIME)));
            }
        } else if method == METHOD_CREATE_PERMISSION {
            let mut peer = PeerAddress::default();
            if peer.get_from(&m).is_err() {
                return vec![];
            }
            let Some(a) = self.allocations.iter_mut().find(|a| a.client == from) else {
                return self.mismatch(&m, from);
            };
            a.permissions.insert(peer.ip); // permissions are per IP, not per port
        } else if method == METHOD_CHANNEL_BIND {
            let (mut peer, mut ch) = (PeerAddress::default(), ChannelNumber::default());
            if peer.get_from(&m).is_err() || ch.get_from(&m).is_err() {
                return vec![];
            }
            let Some(a) = self.allocations.iter_mut().find(|a| a.client == from) else {
                return self.mismatch(&m, from);
            };
            a.permissions.insert(peer.ip); // ChannelBind installs a permission too
            a.channels.insert(ch.0, SocketAddr::new(peer.ip, peer.port));
        } else {
            return vec![];
        }
        attrs.push(Box::new(MessageIntegrity::new_raw_integrity_with_provider(key, crypto)));
        attrs.push(Box::new(FINGERPRINT));
        resp.build(&attrs).unwrap();
        vec![(self.addr, from, resp.raw)]
    }

    /// 437 Allocation Mismatch: a request that needs an allocation from a 5-tuple that has
    /// none (it expired, or the client's NAT mapping changed).
    fn mismatch(&mut self, request: &Message, from: SocketAddr) -> Vec<Out> {
        self.mismatches += 1;
        let mut resp = Message::new();
        resp.build(&[
            Box::new(request.clone()),
            Box::new(MessageType::new(request.typ.method, CLASS_ERROR_RESPONSE)),
            Box::new(ErrorCodeAttribute {
                code: CODE_ALLOC_MISMATCH,
                reason: b"Allocation Mismatch".to_vec(),
            }),
            Box::new(FINGERPRINT),
        ])
        .unwrap();
        vec![(self.addr, from, resp.raw)]
    }

    fn on_channel_data(&mut self, from: SocketAddr, data: &[u8]) -> Vec<Out> {
        let mut c = ChannelData { raw: data.to_vec(), ..Default::default() };
        if c.decode().is_err() {
            return vec![];
        }
        self.channel_data += 1;
        let Some(peer) = self
            .allocations
            .iter()
            .find(|a| a.client == from)
            .and_then(|a| a.channels.get(&c.number.0).copied())
        else {
            return vec![];
        };
        self.relay_out(from, peer, c.data)
    }

    /// Client `from` sends `data` to `peer` from its relayed address.
    fn relay_out(&mut self, from: SocketAddr, peer: SocketAddr, data: Vec<u8>) -> Vec<Out> {
        let Some(a) = self.allocations.iter().find(|a| a.client == from) else { return vec![] };
        if !a.permissions.contains(&peer.ip()) {
            return vec![];
        }
        self.relayed_datagrams += 1;
        vec![(a.relayed, peer, data)]
    }

    /// A peer sent `data` to relayed address `to`: wrap it for the allocation's client.
    fn on_peer_data(&mut self, from: SocketAddr, to: SocketAddr, data: &[u8]) -> Vec<Out> {
        let Some(a) = self.allocations.iter().find(|a| a.relayed == to) else { return vec![] };
        if !a.permissions.contains(&from.ip()) {
            return vec![];
        }
        let client = a.client;
        let wrapped = match a.channels.iter().find(|(_, p)| **p == from) {
            Some((n, _)) => {
                self.channel_data += 1;
                let mut c =
                    ChannelData { data: data.to_vec(), number: ChannelNumber(*n), ..Default::default() };
                c.encode();
                c.raw
            }
            None => {
                self.indications += 1;
                let mut m = Message::new();
                m.build(&[
                    Box::new(TransactionId::new()),
                    Box::new(MessageType::new(METHOD_DATA, CLASS_INDICATION)),
                    Box::new(PeerAddress { ip: from.ip(), port: from.port() }),
                    Box::new(Data(data.to_vec())),
                    Box::new(FINGERPRINT),
                ])
                .unwrap();
                m.raw
            }
        };
        self.relayed_datagrams += 1;
        vec![(self.addr, client, wrapped)]
    }
}
