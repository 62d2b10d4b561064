import { describe, expect, it } from 'vitest';
import { homePeers } from './backend/scenarios';
import {
  formatAgo,
  formatBytes,
  formatDuration,
  formatExpiry,
  formatRtt,
  pathLabel,
  peerStateLabel,
  peerSummary,
  tunnelLabel,
} from './format';

describe('format', () => {
  it('bytes', () => {
    expect(formatBytes(0)).toBe('0 B');
    expect(formatBytes(1023)).toBe('1023 B');
    expect(formatBytes(1536)).toBe('1.5 KB');
    expect(formatBytes(48_234_112)).toBe('46 MB');
    expect(formatBytes(5 * 1024 ** 4)).toBe('5.0 TB');
    expect(formatBytes(3 * 1024 ** 5)).toBe('3072 TB');
  });

  it('durations and "ago"', () => {
    expect(formatDuration(59)).toBe('59 s');
    expect(formatDuration(60)).toBe('1 min');
    expect(formatDuration(3599)).toBe('59 min');
    expect(formatDuration(86_400)).toBe('24 h');
    expect(formatDuration(2 * 86_400)).toBe('2 d');
    expect(formatAgo(3)).toBe('3 s ago');
    expect(formatAgo(0)).toBe('just now');
    expect(formatAgo(null)).toBe('never');
    expect(formatAgo(125)).toBe('2 min ago');
  });

  it('expiry', () => {
    expect(formatExpiry(1000, 1000)).toBe('expired');
    expect(formatExpiry(1000 + 3600, 1000)).toBe('in 1 h');
    expect(formatExpiry(1000 + 3599, 1000)).toBe('in 59 min');
    expect(formatExpiry(1000 + 7 * 86_400, 1000)).toBe('in 7 d');
  });

  it('round-trip times', () => {
    expect(formatRtt(null)).toBe('—');
    expect(formatRtt(800)).toBe('0.8 ms');
    expect(formatRtt(4_200)).toBe('4.2 ms');
    expect(formatRtt(63_500)).toBe('64 ms');
  });

  it('paths', () => {
    const [direct, relayed, offline] = homePeers();
    expect(pathLabel(direct.path)).toBe('direct');
    expect(pathLabel(relayed.path)).toBe('relayed via server');
    expect(pathLabel(offline.path)).toBeNull();
    expect(peerSummary(direct)).toBe('direct · 4.2 ms');
    expect(peerSummary(relayed)).toBe('relayed via server · 64 ms');
    expect(peerSummary(offline)).toBe('offline');
  });

  it('states', () => {
    expect(tunnelLabel({ state: 'up' })).toEqual({ text: 'Connected', tone: 'good', reason: null });
    expect(tunnelLabel({ state: 'down' }).text).toBe('Disconnected');
    expect(tunnelLabel({ state: 'connecting' }).tone).toBe('busy');
    expect(tunnelLabel({ state: 'needs_attention', reason: 'tun failed' })).toEqual({
      text: 'Needs attention',
      tone: 'bad',
      reason: 'tun failed',
    });
    expect(peerStateLabel({ state: 'failed', reason: 'no path' })).toEqual({ text: 'Failed: no path', tone: 'bad' });
    expect(peerStateLabel({ state: 'reconnecting' }).tone).toBe('busy');
  });
});
