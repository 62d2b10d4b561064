// How numbers from the helper read on screen. Pure functions, so the wording is tested.

import type { PathInfo, PeerInfo, PeerState, TunnelState } from './types';

/** 1536 → "1.5 KB". Decimal-looking binary units, as file managers show them. */
export function formatBytes(bytes: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  if (unit === 0) return `${value} B`;
  // One decimal while the number is small, so a transfer visibly moves.
  const shown = value < 10 ? value.toFixed(1) : Math.round(value).toString();
  return `${shown} ${units[unit]}`;
}

/** 75 → "1 min"; a short duration for lists. Rounds down, so it never overstates. */
export function formatDuration(secs: number): string {
  if (secs < 60) return `${Math.floor(secs)} s`;
  if (secs < 3600) return `${Math.floor(secs / 60)} min`;
  // Hours up to two days: "1 d" would hide that a one-day invite has 23 h left.
  if (secs < 2 * 86400) return `${Math.floor(secs / 3600)} h`;
  return `${Math.floor(secs / 86400)} d`;
}

/** How long ago something happened: "3 s ago", "just now" below a second, "never". */
export function formatAgo(secs: number | null): string {
  if (secs === null) return 'never';
  if (secs < 1) return 'just now';
  return `${formatDuration(secs)} ago`;
}

/** Until a unix time: "in 59 min", "expired". */
export function formatExpiry(expiresAt: number, nowSecs: number): string {
  const left = expiresAt - nowSecs;
  if (left <= 0) return 'expired';
  return `in ${formatDuration(left)}`;
}

/** Round-trip time from microseconds: "0.8 ms", "12 ms", "—" when unknown. */
export function formatRtt(micros: number | null): string {
  if (micros === null) return '—';
  const ms = micros / 1000;
  if (ms < 10) return `${ms.toFixed(1)} ms`;
  return `${Math.round(ms)} ms`;
}

/** "direct" or "relayed via server"; null when there is no path (yet). */
export function pathLabel(path: PathInfo | null): string | null {
  if (!path) return null;
  return path.kind === 'direct' ? 'direct' : 'relayed via server';
}

export type Tone = 'good' | 'busy' | 'idle' | 'bad';

/** The header's words and colour for the tunnel's state. */
export function tunnelLabel(state: TunnelState): { text: string; tone: Tone; reason: string | null } {
  switch (state.state) {
    case 'up':
      return { text: 'Connected', tone: 'good', reason: null };
    case 'connecting':
      return { text: 'Connecting', tone: 'busy', reason: null };
    case 'down':
      return { text: 'Disconnected', tone: 'idle', reason: null };
    case 'needs_attention':
      return { text: 'Needs attention', tone: 'bad', reason: state.reason };
  }
}

/** A peer's state in a word or two. */
export function peerStateLabel(state: PeerState): { text: string; tone: Tone } {
  switch (state.state) {
    case 'connected':
      return { text: 'Connected', tone: 'good' };
    case 'connecting':
      return { text: 'Connecting', tone: 'busy' };
    case 'reconnecting':
      return { text: 'Reconnecting', tone: 'busy' };
    case 'offline':
      return { text: 'Offline', tone: 'idle' };
    case 'failed':
      return { text: `Failed: ${state.reason}`, tone: 'bad' };
  }
}

/** The line under a peer's name: what a person wants to know first. */
export function peerSummary(peer: PeerInfo): string {
  if (!peer.online && peer.state.state === 'offline') return 'offline';
  const parts = [pathLabel(peer.path) ?? peerStateLabel(peer.state).text.toLowerCase()];
  if (peer.rtt_micros !== null) parts.push(formatRtt(peer.rtt_micros));
  return parts.join(' · ');
}
