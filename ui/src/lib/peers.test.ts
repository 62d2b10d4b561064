import { describe, expect, it } from 'vitest';
import { baseStatus, homePeers } from './backend/scenarios';
import { applyEvent, applyPeers, applyStatus, EMPTY, networkChanged, type LiveState } from './peers';
import type { PeerInfo } from './types';

function loaded(): LiveState {
  return applyPeers(applyStatus(EMPTY, baseStatus()), homePeers().reverse());
}
const names = (s: LiveState) => s.peers.map((p) => p.name);

describe('applying helper events', () => {
  it('keeps peers sorted by name whatever order they came in', () => {
    expect(names(loaded())).toEqual(['desktop', 'phone', 'raspberry']);
  });

  it('never replaces a status with an older one that arrived later', () => {
    const newer = { ...baseStatus(), revision: 20, state: { state: 'up' as const } };
    const older = { ...baseStatus(), revision: 10, state: { state: 'connecting' as const } };
    const state = applyEvent(EMPTY, { event: 'status', status: newer });
    expect(applyStatus(state, older).status?.state).toEqual({ state: 'up' });
    const newest = { ...older, revision: 30 };
    expect(applyStatus(state, newest).status?.state).toEqual({ state: 'connecting' });
  });

  it('peer_joined adds a peer in its place', () => {
    const newcomer: PeerInfo = { ...homePeers()[0], name: 'nas', key: 'bmFzAAAA', ip: '100.64.0.9' };
    const next = applyEvent(loaded(), { event: 'peer_joined', peer: newcomer });
    expect(names(next)).toEqual(['desktop', 'nas', 'phone', 'raspberry']);
  });

  it('peer_changed replaces the peer with the same key, also after a rename', () => {
    const before = loaded();
    const changed = { ...before.peers[2], name: 'pi', online: true, state: { state: 'connecting' as const } };
    const next = applyEvent(before, { event: 'peer_changed', peer: changed });
    expect(names(next)).toEqual(['desktop', 'phone', 'pi']);
    expect(next.peers.find((p) => p.name === 'pi')?.state).toEqual({ state: 'connecting' });
    // Pure: the old state is untouched.
    expect(names(before)).toEqual(['desktop', 'phone', 'raspberry']);
  });

  it('peer_changed for an unknown key adds it (an event may overtake get_peers)', () => {
    const stranger = { ...homePeers()[0], key: 'c3RyYW5nZXI=', name: 'zed' };
    expect(names(applyEvent(loaded(), { event: 'peer_changed', peer: stranger }))).toContain('zed');
  });

  it('peer_left removes by key, not by name', () => {
    const state = loaded();
    const phone = state.peers[1];
    expect(names(applyEvent(state, { event: 'peer_left', name: phone.name, key: phone.key }))).toEqual([
      'desktop',
      'raspberry',
    ]);
    expect(names(applyEvent(state, { event: 'peer_left', name: 'phone', key: 'other' }))).toHaveLength(3);
  });

  it('a status of the same network keeps the peers; leaving or another network drops them', () => {
    const state = loaded();
    const down = { ...baseStatus(), state: { state: 'down' as const } };
    expect(applyEvent(state, { event: 'status', status: down }).peers).toHaveLength(3);
    expect(applyEvent(state, { event: 'status', status: down }).status?.state).toEqual({ state: 'down' });
    const left = { ...baseStatus(), network: null };
    expect(applyEvent(state, { event: 'status', status: left }).peers).toEqual([]);
    const other = { ...baseStatus(), network: { ...baseStatus().network!, id: 'ffff' } };
    expect(applyEvent(state, { event: 'status', status: other }).peers).toEqual([]);
  });

  it('networkChanged compares network ids', () => {
    expect(networkChanged(null, baseStatus())).toBe(true);
    expect(networkChanged(baseStatus(), baseStatus())).toBe(false);
    expect(networkChanged(baseStatus(), { ...baseStatus(), network: null })).toBe(true);
  });
});
