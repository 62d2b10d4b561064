// What the window knows about the helper (its status and the peer list) and how each
// pushed IpcEvent changes it. Kept free of Svelte so every transition is unit-tested.

import type { IpcEvent, PeerInfo, Status } from './types';

export interface LiveState {
  status: Status | null;
  /** Sorted by name, so rows do not jump around as peers change. */
  peers: PeerInfo[];
}

export const EMPTY: LiveState = { status: null, peers: [] };

export function sortPeers(peers: PeerInfo[]): PeerInfo[] {
  return [...peers].sort((a, b) => a.name.localeCompare(b.name) || a.key.localeCompare(b.key));
}

/** Adds the peer, or replaces the one with the same key (a rename keeps the key). */
function upsert(peers: PeerInfo[], peer: PeerInfo): PeerInfo[] {
  return sortPeers([...peers.filter((p) => p.key !== peer.key), peer]);
}

/** True when `next` is another network than `prev`: the peer list must be fetched anew. */
export function networkChanged(prev: Status | null, next: Status | null): boolean {
  return (prev?.network?.id ?? null) !== (next?.network?.id ?? null);
}

/** The state after one event from the helper. Never mutates `state`. */
export function applyEvent(state: LiveState, event: IpcEvent): LiveState {
  switch (event.event) {
    case 'status': {
      // Answers and events come on different paths: an older status never replaces a newer.
      if (state.status && (event.status.revision ?? 0) < (state.status.revision ?? 0)) return state;
      // Peers of a network we are no longer in must not linger on screen.
      const peers = networkChanged(state.status, event.status) ? [] : state.peers;
      return { status: event.status, peers };
    }
    case 'peer_joined':
    case 'peer_changed':
      return { ...state, peers: upsert(state.peers, event.peer) };
    case 'peer_left':
      return { ...state, peers: state.peers.filter((p) => p.key !== event.key) };
  }
}

/** The state after a command answered with a fresh Status (connect, join, ...). */
export function applyStatus(state: LiveState, status: Status): LiveState {
  return applyEvent(state, { event: 'status', status });
}

/** The state after get_peers answered. */
export function applyPeers(state: LiveState, peers: PeerInfo[]): LiveState {
  return { ...state, peers: sortPeers(peers) };
}
