// An in-memory stand-in for the Rust side and the helper behind it. Stateful: creating
// a network, inviting, joining, connecting change what later calls return and emit the
// events the real helper would, so every screen can be exercised in a plain browser.
//
// Join outcomes are picked by the code's first group (its locator), so tests can ask for
// a refusal: EXPD expired, REVK revoked, MAXD used up, NKNW unknown; anything else joins
// the network "friends". Example: EXPD-0000-0000-0000.

import {
  ALPHABET,
  describeInvalid,
  formatServer,
  formatTicket,
  LINK_PREFIX,
  locatorOf,
  parseServer,
  parseTicket,
} from '../invite';
import { deviceNameError, networkNameError } from '../names';
import type {
  AppError,
  AppInfo,
  AppSettings,
  CreatedInvite,
  IpcErrorCode,
  InviteInfo,
  PeerInfo,
  ServerErrorCode,
  Status,
} from '../types';
import type { Backend, BackendEvents, EventName, Unsubscribe } from './index';
import { friendsNetwork, friendsPeers, HOME_NETWORK_ID, isScenario, scenarioState, type ScenarioState } from './scenarios';

export interface MockOptions {
  /** Delay of every command, so busy states show. 0 in unit tests. */
  latencyMs?: number;
  /** Time from "connecting" to "up" after connect or join. */
  settleMs?: number;
  /** Tick traffic counters and handshakes every 2 s, as a live helper would. */
  live?: boolean;
  /** Unix seconds. */
  now?: () => number;
  random?: () => number;
}

const TICK_MS = 2000;
/** The helper's default when create_invite gets no expiry (DEFAULT_INVITE_TTL_SECS). */
const DEFAULT_INVITE_TTL_SECS = 24 * 3600;

function refused(code: IpcErrorCode, message: string): AppError {
  return { kind: 'refused', code, message };
}

function serverRefused(code: ServerErrorCode, message: string): AppError {
  return refused({ server: code }, message);
}

const clone = <T>(value: T): T => structuredClone(value);

export class MockBackend implements Backend {
  readonly scenario: string;
  state: ScenarioState;
  /** Everything copy_text was asked to copy, newest last (tests read it). */
  readonly copied: string[] = [];
  private listeners = new Map<EventName, Set<(payload: never) => void>>();
  private timers = new Set<ReturnType<typeof setTimeout>>();
  /** Peers as they were while up, restored when the tunnel comes back. */
  private livePeers: PeerInfo[] | null = null;
  private readonly latencyMs: number;
  private readonly settleMs: number;
  private readonly now: () => number;
  private readonly random: () => number;

  constructor(scenario: string, options: MockOptions = {}) {
    this.scenario = isScenario(scenario) ? scenario : 'connected';
    this.latencyMs = options.latencyMs ?? 0;
    this.settleMs = options.settleMs ?? 900;
    this.now = options.now ?? (() => Math.floor(Date.now() / 1000));
    this.random = options.random ?? Math.random;
    this.state = scenarioState(this.scenario as never, this.now());
    if (options.live) {
      const interval = setInterval(() => this.tick(), TICK_MS);
      this.timers.add(interval as unknown as ReturnType<typeof setTimeout>);
    }
  }

  /** Stops the timers (unit tests). */
  dispose(): void {
    for (const t of this.timers) {
      clearTimeout(t);
      clearInterval(t);
    }
    this.timers.clear();
  }

  // --- test and console controls, not part of Backend ---

  /** The helper goes away: every helper command fails and the app hears about it. */
  breakHelper(error: AppError): void {
    this.state.helperError = error;
    this.emit('helper-connection', { connected: false, error });
  }

  /** The helper comes back (as after `systemctl start trellisd`). */
  fixHelper(): void {
    this.state.helperError = null;
    this.emit('helper-connection', { connected: true, helperVersion: this.state.status.helper_version });
  }

  /** The tray asks for a panel. */
  navigate(view: BackendEvents['navigate']['view']): void {
    this.emit('navigate', { view });
  }

  /** The owner of our network removed this device. */
  removedByOwner(): void {
    const name = this.state.status.network?.name ?? '';
    this.state.status.network = null;
    this.state.status.notice = `this device was removed from network "${name}" by its owner`;
    this.state.peers = [];
    this.emitStatus();
  }

  // --- Backend ---

  async getStatus(): Promise<Status> {
    await this.helper();
    return clone(this.state.status);
  }

  async getPeers(): Promise<PeerInfo[]> {
    await this.helper();
    return clone(this.state.peers);
  }

  async connect(): Promise<Status> {
    await this.helper();
    const status = this.state.status;
    status.wants_up = true;
    if (status.state.state === 'down' && status.network) {
      status.state = { state: 'connecting' };
      this.emitStatus();
      this.later(this.settleMs, () => this.comeUp());
    }
    return clone(status);
  }

  async disconnect(): Promise<Status> {
    await this.helper();
    const status = this.state.status;
    status.wants_up = false;
    status.notice = null;
    status.state = { state: 'down' };
    status.server_connected = false;
    if (status.network) status.network.peers_connected = 0;
    this.livePeers ??= clone(this.state.peers);
    this.state.peers = this.state.peers.map((p) => ({
      ...p,
      state: { state: 'offline' },
      path: null,
      rtt_micros: null,
    }));
    this.emitStatus();
    for (const peer of this.state.peers) this.emit('helper-event', { event: 'peer_changed', peer: clone(peer) });
    return clone(status);
  }

  async createNetwork(name: string, server: string | null): Promise<Status> {
    await this.helper();
    const nameError = networkNameError(name);
    if (nameError) throw { kind: 'invalid_input', message: nameError } satisfies AppError;
    this.ensureNoNetwork();
    const serverText = this.useServer(server);
    if (!serverText) throw refused('no_server', 'no signal server is set: give one with `trellis server HOST[:PORT]`');
    const status = this.state.status;
    status.network = {
      id: HOME_NETWORK_ID,
      name: name.trim(),
      range: '100.64.0.0/10',
      my_ip: '100.64.0.1',
      owner: true,
      peers_total: 0,
      peers_connected: 0,
    };
    status.notice = null;
    this.state.peers = [];
    this.state.invites = [];
    this.startConnecting();
    return clone(status);
  }

  async joinNetwork(ticketText: string): Promise<Status> {
    await this.helper();
    const ticket = parseTicket(ticketText);
    if (!ticket.ok) throw { kind: 'invalid_input', message: describeInvalid(ticket.error) } satisfies AppError;
    this.ensureNoNetwork();
    const server = this.useServer(ticket.value.server ? formatServer(ticket.value.server) : null);
    if (!server) throw refused('no_server', 'no signal server is set: give one with `trellis server HOST[:PORT]`');
    this.refuseByLocator(locatorOf(ticket.value.code));
    const status = this.state.status;
    status.network = friendsNetwork(0);
    status.notice = null;
    this.state.peers = friendsPeers().map((p) => ({ ...p, state: { state: 'connecting' }, path: null, rtt_micros: null }));
    this.livePeers = friendsPeers();
    this.state.invites = [];
    this.startConnecting();
    return clone(status);
  }

  async leaveNetwork(): Promise<null> {
    await this.helper();
    const network = this.requireNetwork();
    if (network.owner && this.state.peers.length > 0) {
      throw serverRefused('owner_cannot_leave', 'the owner cannot leave while others are in the network; remove them first');
    }
    const status = this.state.status;
    status.network = null;
    status.state = status.wants_up ? { state: 'connecting' } : { state: 'down' };
    this.state.peers = [];
    this.state.invites = [];
    this.livePeers = null;
    this.emitStatus();
    return null;
  }

  async createInvite(maxUses: number | null, expiresInSecs: number | null): Promise<CreatedInvite> {
    await this.helper();
    const network = this.requireOwner();
    const uses = maxUses ?? 1;
    if (!Number.isInteger(uses) || uses < 1 || uses > 1000) {
      throw serverRefused('invalid_argument', `an invite allows 1 to 1000 uses, not ${uses}`);
    }
    const ttl = expiresInSecs ?? DEFAULT_INVITE_TTL_SECS;
    if (ttl < 60 || ttl > 30 * 24 * 3600) {
      throw serverRefused('invalid_argument', `an invite lasts 60 s to 30 days, not ${ttl} s`);
    }
    const code = this.freshCode();
    const server = parseServer(this.state.status.server ?? '');
    const ticket = formatTicket({ code, server: server.ok ? server.value : null });
    const now = this.now();
    const invite: InviteInfo = {
      id: locatorOf(code),
      network: network.id,
      created_at: now,
      expires_at: now + ttl,
      max_uses: uses,
      uses: 0,
    };
    this.state.invites.push(invite);
    return { ticket, link: LINK_PREFIX + ticket, invite: clone(invite) };
  }

  async listInvites(): Promise<InviteInfo[]> {
    await this.helper();
    this.requireOwner();
    const now = this.now();
    return clone(this.state.invites.filter((i) => i.expires_at > now && i.uses < i.max_uses));
  }

  async revokeInvite(id: string): Promise<null> {
    await this.helper();
    this.requireOwner();
    const before = this.state.invites.length;
    this.state.invites = this.state.invites.filter((i) => i.id !== id);
    if (this.state.invites.length === before) throw serverRefused('unknown_invite', `no open invite has the id ${id}`);
    return null;
  }

  async renameDevice(name: string): Promise<null> {
    await this.helper();
    const error = deviceNameError(name);
    if (error) throw { kind: 'invalid_input', message: error } satisfies AppError;
    this.state.status.device_name = name.trim().toLowerCase();
    this.emitStatus();
    return null;
  }

  async setServer(server: string): Promise<null> {
    await this.helper();
    const parsed = parseServer(server);
    if (!parsed.ok) throw { kind: 'invalid_input', message: describeInvalid(parsed.error) } satisfies AppError;
    const text = formatServer(parsed.value);
    if (this.state.status.network && this.state.status.server !== text) {
      throw refused('already_in_network', 'this device is in a network on another server; leave it first');
    }
    this.state.status.server = text;
    this.emitStatus();
    return null;
  }

  async removePeer(peer: string): Promise<null> {
    await this.helper();
    this.requireOwner();
    const matches = this.state.peers.filter(
      (p) => p.name.toLowerCase() === peer.toLowerCase() || p.ip === peer || (peer.length >= 4 && p.key.startsWith(peer)),
    );
    if (matches.length === 0) throw refused('unknown_peer', `no peer is called "${peer}" (name, address or key)`);
    if (matches.length > 1) throw refused('invalid_argument', `"${peer}" matches several peers; be more precise`);
    const gone = matches[0];
    this.state.peers = this.state.peers.filter((p) => p.key !== gone.key);
    this.livePeers = this.livePeers?.filter((p) => p.key !== gone.key) ?? null;
    const network = this.state.status.network!;
    network.peers_total = this.state.peers.length;
    network.peers_connected = this.state.peers.filter((p) => p.state.state === 'connected').length;
    this.emit('helper-event', { event: 'peer_left', name: gone.name, key: gone.key });
    this.emitStatus();
    return null;
  }

  async getSettings(): Promise<AppSettings> {
    await this.pause();
    return clone(this.state.settings);
  }

  async setSettings(settings: AppSettings): Promise<AppSettings> {
    await this.pause();
    // defaultServer comes from the installed config; the app ignores what the UI sends.
    this.state.settings = { ...settings, defaultServer: this.state.settings.defaultServer };
    return clone(this.state.settings);
  }

  async copyText(text: string): Promise<null> {
    await this.pause();
    this.copied.push(text);
    return null;
  }

  async appInfo(): Promise<AppInfo> {
    await this.pause();
    return { version: '0.1.0', ipcVersion: 1, endpoint: '/run/trellis/trellisd.sock', helperSetup: this.state.helperSetup };
  }

  /** Set by tests: the next installHelper fails with this (as a declined prompt would). */
  installFailure: AppError | null = null;

  async installHelper(): Promise<string[]> {
    await this.pause();
    await this.pause();
    if (!this.state.helperSetup) {
      throw { kind: 'internal', message: 'this copy of Trellis carries no helper to install; install the Trellis package' };
    }
    if (this.installFailure) throw clone(this.installFailure);
    // A newly installed helper: no network yet. The service starts, and the app finds it
    // (helper-connection), as after a real install.
    this.state = { ...scenarioState('fresh', this.now()), helperError: this.state.helperError };
    setTimeout(() => this.fixHelper(), this.latencyMs);
    return [
      'Installing the Trellis helper as the systemd service trellisd.service:',
      '  installed /usr/local/bin/trellisd',
      '  installed /usr/local/bin/trellis',
      '  wrote /etc/systemd/system/trellisd.service',
      '  created the group trellis',
      '  added laptop-user to trellis (log out and in again to use Trellis without sudo)',
      '  enabled and started trellisd.service (logs: journalctl -u trellisd)',
      'Done.',
    ];
  }

  async on<E extends EventName>(event: E, handler: (payload: BackendEvents[E]) => void): Promise<Unsubscribe> {
    const set = this.listeners.get(event) ?? new Set();
    set.add(handler as (payload: never) => void);
    this.listeners.set(event, set);
    return () => set.delete(handler as (payload: never) => void);
  }

  // --- internals ---

  private emit<E extends EventName>(event: E, payload: BackendEvents[E]): void {
    for (const handler of this.listeners.get(event) ?? []) (handler as (p: BackendEvents[E]) => void)(payload);
  }

  private emitStatus(): void {
    this.emit('helper-event', { event: 'status', status: clone(this.state.status) });
  }

  private pause(): Promise<void> {
    return new Promise((resolve) => {
      if (this.latencyMs <= 0) return resolve();
      const t = setTimeout(() => {
        this.timers.delete(t);
        resolve();
      }, this.latencyMs);
      this.timers.add(t);
    });
  }

  /** A helper command: waits like one, and fails as the app would while the helper is away. */
  private async helper(): Promise<void> {
    await this.pause();
    if (this.state.helperError) throw clone(this.state.helperError);
  }

  private later(ms: number, fn: () => void): void {
    const t = setTimeout(() => {
      this.timers.delete(t);
      fn();
    }, ms);
    this.timers.add(t);
  }

  private ensureNoNetwork(): void {
    const network = this.state.status.network;
    if (network) {
      throw refused('already_in_network', `this device is already in network "${network.name}"; leave it first`);
    }
  }

  private requireNetwork() {
    const network = this.state.status.network;
    if (!network) throw refused('no_network', 'this device is in no network yet: create one or join with a code');
    return network;
  }

  private requireOwner() {
    const network = this.requireNetwork();
    if (!network.owner) throw serverRefused('not_owner', `only the owner of network "${network.name}" may do this`);
    return network;
  }

  /** As the helper: a given server replaces the configured one; returns the one in use. */
  private useServer(server: string | null): string | null {
    if (server) {
      const parsed = parseServer(server);
      if (!parsed.ok) throw { kind: 'invalid_input', message: describeInvalid(parsed.error) } satisfies AppError;
      this.state.status.server = formatServer(parsed.value);
    }
    return this.state.status.server;
  }

  private refuseByLocator(locator: string): void {
    const expiredAt = this.now() - 3600;
    const outcomes: Record<string, AppError> = {
      EXPD: serverRefused('invite_expired', `this invite expired at ${utc(expiredAt)}; ask for a new one`),
      REVK: serverRefused('invite_revoked', "this invite was revoked by the network's owner"),
      MAXD: serverRefused('invite_used_up', 'this invite was already used 1 of 1 times'),
      NKNW: serverRefused('invite_unknown', 'no invite matches this code; check it for typos or ask for a new one'),
    };
    const outcome = outcomes[locator];
    if (outcome) throw outcome;
  }

  private startConnecting(): void {
    const status = this.state.status;
    status.wants_up = true;
    status.state = { state: 'connecting' };
    status.server_connected = true;
    this.emitStatus();
    this.later(this.settleMs, () => this.comeUp());
  }

  /** The tunnel is up: peers get their paths back. */
  private comeUp(): void {
    const status = this.state.status;
    if (!status.wants_up || !status.network || this.state.helperError) return;
    status.state = { state: 'up' };
    status.server_connected = true;
    if (this.livePeers) {
      const keys = new Set(this.state.peers.map((p) => p.key));
      this.state.peers = this.livePeers.filter((p) => keys.has(p.key));
      this.livePeers = null;
    }
    status.network.peers_total = this.state.peers.length;
    status.network.peers_connected = this.state.peers.filter((p) => p.state.state === 'connected').length;
    this.emitStatus();
    for (const peer of this.state.peers) this.emit('helper-event', { event: 'peer_changed', peer: clone(peer) });
  }

  private tick(): void {
    if (this.state.helperError || this.state.status.state.state !== 'up') return;
    for (const peer of this.state.peers) {
      if (peer.state.state !== 'connected') continue;
      peer.rx_bytes += Math.floor(this.random() * 200_000);
      peer.tx_bytes += Math.floor(this.random() * 50_000);
      const since = (peer.last_handshake_secs_ago ?? 0) + TICK_MS / 1000;
      // WireGuard-style sessions rekey every 2 minutes.
      peer.last_handshake_secs_ago = since >= 120 ? 0 : since;
      this.emit('helper-event', { event: 'peer_changed', peer: clone(peer) });
    }
  }

  private freshCode(): string {
    const taken = new Set(this.state.invites.map((i) => i.id));
    for (;;) {
      let code = '';
      for (let i = 0; i < 16; i++) code += ALPHABET[Math.floor(this.random() * 32) % 32];
      if (!taken.has(locatorOf(code))) return code;
    }
  }
}


/** Unix seconds as the server writes them in messages: `2026-11-25 16:33 UTC`. */
export function utc(secs: number): string {
  return new Date(secs * 1000).toISOString().slice(0, 16).replace('T', ' ') + ' UTC';
}
