import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import type { AppError, HelperConnection, IpcEvent } from '../types';
import { MockBackend, utc } from './mock';

const NOW = 1_700_000_000;
let mocks: MockBackend[] = [];

function mock(scenario: string): { backend: MockBackend; events: IpcEvent[]; links: HelperConnection[] } {
  const backend = new MockBackend(scenario, { latencyMs: 0, settleMs: 500, now: () => NOW, random: () => 0.5 });
  mocks.push(backend);
  const events: IpcEvent[] = [];
  const links: HelperConnection[] = [];
  void backend.on('helper-event', (e) => events.push(e));
  void backend.on('helper-connection', (c) => links.push(c));
  return { backend, events, links };
}

async function rejection(promise: Promise<unknown>): Promise<AppError> {
  try {
    await promise;
  } catch (e) {
    return e as AppError;
  }
  throw new Error('expected the command to fail');
}

beforeEach(() => vi.useFakeTimers());
afterEach(() => {
  mocks.forEach((m) => m.dispose());
  mocks = [];
  vi.useRealTimers();
});

describe('mock backend', () => {
  it('fresh: no network; creating one makes us owner and comes up', async () => {
    const { backend, events } = mock('fresh');
    expect((await backend.getStatus()).network).toBeNull();
    const status = await backend.createNetwork(' home ', 'vpn.example.org');
    expect(status.network).toMatchObject({ name: 'home', owner: true, my_ip: '100.64.0.1' });
    expect(status.server).toBe('vpn.example.org:8443');
    expect(status.state).toEqual({ state: 'connecting' });
    await vi.advanceTimersByTimeAsync(500);
    expect((await backend.getStatus()).state).toEqual({ state: 'up' });
    expect(events.filter((e) => e.event === 'status').map((e) => e.event === 'status' && e.status.state.state)).toEqual([
      'connecting',
      'up',
    ]);
  });

  it('create_network needs a server', async () => {
    const { backend } = mock('fresh');
    const e = await rejection(backend.createNetwork('home', null));
    expect(e).toMatchObject({ kind: 'refused', code: 'no_server' });
  });

  it('join: bad codes are invalid_input with the parser sentence; locators choose refusals', async () => {
    const { backend } = mock('fresh');
    expect(await rejection(backend.joinNetwork('K7QF'))).toEqual({
      kind: 'invalid_input',
      message: 'an invite code has 16 letters and digits; this one has 4',
    });
    expect(await rejection(backend.joinNetwork('EXPD-0000-0000-0000@h'))).toEqual({
      kind: 'refused',
      code: { server: 'invite_expired' },
      message: `this invite expired at ${utc(NOW - 3600)}; ask for a new one`,
    });
    expect((await rejection(backend.joinNetwork('REVK-0000-0000-0000@h'))).code).toEqual({ server: 'invite_revoked' });
    // A refused join changes nothing.
    expect((await backend.getStatus()).network).toBeNull();
    const joined = await backend.joinNetwork('trellis://join/K7QF-3M9T-WX2C-HN4R@ws://203.0.113.5:9000');
    expect(joined.network).toMatchObject({ name: 'friends', owner: false });
    expect(joined.server).toBe('ws://203.0.113.5:9000');
    expect((await backend.getPeers()).map((p) => p.name)).toEqual(['alice-laptop']);
  });

  it('join while in a network is refused with already_in_network', async () => {
    const { backend } = mock('connected');
    const e = await rejection(backend.joinNetwork('K7QF-3M9T-WX2C-HN4R'));
    expect(e).toEqual({
      kind: 'refused',
      code: 'already_in_network',
      message: 'this device is already in network "home"; leave it first',
    });
  });

  it('disconnect takes peers offline; connect brings them back', async () => {
    const { backend, events } = mock('connected');
    const down = await backend.disconnect();
    expect(down).toMatchObject({ wants_up: false, state: { state: 'down' } });
    expect((await backend.getPeers()).every((p) => p.state.state === 'offline')).toBe(true);
    expect(events.filter((e) => e.event === 'peer_changed')).toHaveLength(3);
    expect((await backend.connect()).state).toEqual({ state: 'connecting' });
    await vi.advanceTimersByTimeAsync(500);
    const peers = await backend.getPeers();
    expect(peers.find((p) => p.name === 'desktop')?.path?.kind).toBe('direct');
    expect((await backend.getStatus()).network?.peers_connected).toBe(2);
  });

  it('invites: create, list, revoke; only the owner may', async () => {
    const { backend } = mock('connected');
    expect(await backend.listInvites()).toHaveLength(2);
    const created = await backend.createInvite(null, 3600);
    expect(created.ticket).toMatch(/^[0-9A-Z]{4}(-[0-9A-Z]{4}){3}@vpn\.example\.org:8443$/);
    expect(created.link).toBe(`trellis://join/${created.ticket}`);
    expect(created.invite).toMatchObject({ max_uses: 1, uses: 0, created_at: NOW, expires_at: NOW + 3600 });
    expect(created.invite.id).toBe(created.ticket.slice(0, 4));
    expect(await backend.listInvites()).toHaveLength(3);
    await backend.revokeInvite('K7QF');
    expect((await backend.listInvites()).map((i) => i.id)).not.toContain('K7QF');
    expect((await rejection(backend.revokeInvite('K7QF'))).code).toEqual({ server: 'unknown_invite' });
    expect((await rejection(backend.createInvite(0, null))).code).toEqual({ server: 'invalid_argument' });

    const member = mock('member').backend;
    expect((await rejection(member.createInvite(1, 3600))).code).toEqual({ server: 'not_owner' });
  });

  it('remove_peer emits peer_left and updates the counts', async () => {
    const { backend, events } = mock('connected');
    await backend.removePeer('raspberry');
    expect(events).toContainEqual({ event: 'peer_left', name: 'raspberry', key: expect.any(String) });
    expect((await backend.getStatus()).network?.peers_total).toBe(2);
    expect((await rejection(backend.removePeer('raspberry'))).code).toBe('unknown_peer');
  });

  it('the owner cannot leave with peers; a member can', async () => {
    const { backend } = mock('connected');
    expect((await rejection(backend.leaveNetwork())).code).toEqual({ server: 'owner_cannot_leave' });
    const member = mock('member').backend;
    expect(await member.leaveNetwork()).toBeNull();
    expect((await member.getStatus()).network).toBeNull();
    expect(await member.getPeers()).toEqual([]);
  });

  it('rename and set_server validate and change the status', async () => {
    const { backend } = mock('fresh');
    expect(await rejection(backend.renameDevice('a b'))).toMatchObject({ kind: 'invalid_input' });
    await backend.renameDevice('Work-Laptop');
    expect((await backend.getStatus()).device_name).toBe('work-laptop');
    await backend.setServer('ws://127.0.0.1:9000');
    expect((await backend.getStatus()).server).toBe('ws://127.0.0.1:9000');
    const inNetwork = mock('connected').backend;
    expect((await rejection(inNetwork.setServer('other.example'))).code).toBe('already_in_network');
  });

  it('helper problem scenarios fail helper commands but not app-local ones', async () => {
    const { backend, links } = mock('permission_denied');
    expect((await rejection(backend.getStatus())).kind).toBe('permission_denied');
    expect((await backend.getSettings()).defaultServer).toBe('vpn.example.org:8443');
    expect(await backend.copyText('x')).toBeNull();
    backend.fixHelper();
    expect(links).toEqual([{ connected: true, helperVersion: '0.1.0' }]);
    expect((await backend.getStatus()).network?.name).toBe('home');
  });

  it('set_settings keeps the read-only default server', async () => {
    const { backend } = mock('connected');
    const saved = await backend.setSettings({ startAtLogin: false, connectOnStart: false, defaultServer: 'evil' });
    expect(saved).toEqual({ startAtLogin: false, connectOnStart: false, defaultServer: 'vpn.example.org:8443' });
  });

  it('live mode ticks traffic of connected peers only', async () => {
    const backend = new MockBackend('connected', { live: true, random: () => 0.5 });
    mocks.push(backend);
    const changed: string[] = [];
    await backend.on('helper-event', (e) => e.event === 'peer_changed' && changed.push(e.peer.name));
    const before = (await backend.getPeers()).find((p) => p.name === 'desktop')!.rx_bytes;
    await vi.advanceTimersByTimeAsync(2000);
    expect(changed.sort()).toEqual(['desktop', 'phone']);
    expect((await backend.getPeers()).find((p) => p.name === 'desktop')!.rx_bytes).toBe(before + 100_000);
  });

  it('an unknown scenario falls back to connected', () => {
    expect(mock('nonsense').backend.scenario).toBe('connected');
  });
});
