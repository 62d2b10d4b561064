// The mock helper's starting points: one per situation a screen must handle. The data is
// what a real helper would send (same shapes, plausible values), so screens designed
// against it look right against the real thing.

import type { AppError, AppSettings, InviteInfo, NetworkSummary, PeerInfo, Status } from '../types';

export const SCENARIOS = [
  'fresh',
  'connected',
  'member',
  'connecting',
  'attention',
  'removed',
  'not_installed',
  'not_installed_appimage',
  'not_running',
  'permission_denied',
  'version_mismatch',
  'unresponsive',
  'disconnected',
] as const;
export type Scenario = (typeof SCENARIOS)[number];

export function isScenario(name: string): name is Scenario {
  return (SCENARIOS as readonly string[]).includes(name);
}

export const HELPER_VERSION = '0.1.0';
export const HOME_NETWORK_ID = '5f0c1e2d3a4b59687766554433221100';
export const FRIENDS_NETWORK_ID = '0a1b2c3d4e5f60718293a4b5c6d7e8f9';
export const SERVER = 'vpn.example.org:8443';

/** What the AppImage's app says before installing the helper (helper_setup.rs). */
export const HELPER_SETUP =
  'Trellis will ask for an administrator\'s password, then install its helper (trellisd) as a system service: ' +
  'copied to /usr/local/bin, started now and at every boot by systemd, running as root with network rights only. ' +
  "It creates the network device, keeps this device's private key in /var/lib/trellis, and lets members of the " +
  'group trellis use it; you are added to that group. To remove it later: sudo /usr/local/bin/trellisd uninstall-service.';

/** What the app would say for each way the helper can be out of reach. */
export const HELPER_ERRORS: Record<string, AppError> = {
  not_installed: {
    kind: 'not_installed',
    message: 'The Trellis helper (trellisd) is not installed on this computer; install the Trellis package, then try again.',
  },
  not_installed_appimage: {
    kind: 'not_installed',
    message: 'The Trellis helper (trellisd) is not installed on this computer; install the Trellis package, then try again.',
  },
  not_running: {
    kind: 'not_running',
    message: 'The Trellis helper is not running (nothing listens on /run/trellis/trellisd.sock); start it with `sudo systemctl start trellisd`.',
  },
  permission_denied: {
    kind: 'permission_denied',
    message: 'You may not control the Trellis helper: your user is not in the `trellis` group.',
  },
  version_mismatch: {
    kind: 'version_mismatch',
    message: 'The Trellis helper speaks IPC version 2 and this app speaks version 1; install the same Trellis version for both.',
  },
  unresponsive: {
    kind: 'unresponsive',
    message: 'The Trellis helper accepted the connection but did not answer within 5 s.',
  },
  disconnected: {
    kind: 'disconnected',
    message: 'The Trellis helper closed the connection (broken pipe).',
  },
};

const ME = {
  key: 'q8l0uN3sQmYtW2b7cZkR1xA5fV9gH4jE6pD0yT3iKoM=',
  fingerprint: '3f9a 1c07 b2e4 77d0 5a1e 9c3b 0d8f 62aa',
};

export function baseStatus(): Status {
  return {
    helper_version: HELPER_VERSION,
    device_name: 'laptop',
    public_key: ME.key,
    fingerprint: ME.fingerprint,
    server: SERVER,
    server_connected: true,
    wants_up: true,
    state: { state: 'up' },
    network: {
      id: HOME_NETWORK_ID,
      name: 'home',
      range: '100.64.0.0/10',
      my_ip: '100.64.0.1',
      owner: true,
      peers_total: 3,
      peers_connected: 2,
    },
    notice: null,
  };
}

/** The three peers of "home": one direct, one relayed, one offline. */
export function homePeers(): PeerInfo[] {
  return [
    {
      name: 'desktop',
      key: 'Zm9vYmFyZGVza3RvcGtleTAwMDAwMDAwMDAwMDAwMDA=',
      fingerprint: 'a41c 9e02 77bd 10f3 c5e8 2b6d 93a0 4f1e',
      ip: '100.64.0.2',
      owner: false,
      online: true,
      state: { state: 'connected' },
      path: { kind: 'direct', local: 'host', remote: 'server_reflexive', remote_addr: '198.51.100.23:41641' },
      last_handshake_secs_ago: 3,
      rx_bytes: 48_234_112,
      tx_bytes: 9_871_001,
      rtt_micros: 4_200,
    },
    {
      name: 'phone',
      key: 'cGhvbmVwdWJsaWNrZXkwMDAwMDAwMDAwMDAwMDAwMDA=',
      fingerprint: '07d2 e19b 4c6a 8f30 d1b7 5e94 a2c8 3b61',
      ip: '100.64.0.3',
      owner: false,
      online: true,
      state: { state: 'connected' },
      path: { kind: 'relayed', local: 'relayed', remote: 'server_reflexive', remote_addr: '203.0.113.9:3478' },
      last_handshake_secs_ago: 41,
      rx_bytes: 1_204_660,
      tx_bytes: 733_120,
      rtt_micros: 63_500,
    },
    {
      name: 'raspberry',
      key: 'cmFzcGJlcnJ5cHVibGlja2V5MDAwMDAwMDAwMDAwMDA=',
      fingerprint: 'c0de 5a11 9b2f 0e47 61d3 a8c9 f402 7b5e',
      ip: '100.64.0.4',
      owner: false,
      online: false,
      state: { state: 'offline' },
      path: null,
      last_handshake_secs_ago: null,
      rx_bytes: 0,
      tx_bytes: 0,
      rtt_micros: null,
    },
  ];
}

/** The peers of "friends", the network a successful mock join lands in. */
/** The network "friends" as its member sees it (joined with a code, not its owner). */
export function friendsNetwork(peersConnected: number): NetworkSummary {
  return {
    id: FRIENDS_NETWORK_ID,
    name: 'friends',
    range: '100.64.0.0/10',
    my_ip: '100.64.0.7',
    owner: false,
    peers_total: 1,
    peers_connected: peersConnected,
  };
}

export function friendsPeers(): PeerInfo[] {
  return [
    {
      name: 'alice-laptop',
      key: 'YWxpY2VsYXB0b3BwdWJsaWNrZXkwMDAwMDAwMDAwMDA=',
      fingerprint: '91e0 2d4c 7a35 b8f6 0c19 e2a7 5d83 46bf',
      ip: '100.64.0.1',
      owner: true,
      online: true,
      state: { state: 'connected' },
      path: { kind: 'direct', local: 'host', remote: 'host', remote_addr: '198.51.100.20:41641' },
      last_handshake_secs_ago: 1,
      rx_bytes: 20_480,
      tx_bytes: 18_944,
      rtt_micros: 800,
    },
  ];
}

export function openInvites(nowSecs: number): InviteInfo[] {
  return [
    { id: 'K7QF', network: HOME_NETWORK_ID, created_at: nowSecs - 600, expires_at: nowSecs + 3000, max_uses: 1, uses: 0 },
    {
      id: 'X2M9',
      network: HOME_NETWORK_ID,
      created_at: nowSecs - 86_400,
      expires_at: nowSecs + 6 * 86_400,
      max_uses: 5,
      uses: 2,
    },
  ];
}

export const DEFAULT_SETTINGS: AppSettings = {
  startAtLogin: true,
  connectOnStart: true,
  defaultServer: SERVER,
};

export interface ScenarioState {
  helperError: AppError | null;
  /** What app_info says about installing the helper (the AppImage and macOS offer it). */
  helperSetup: string | null;
  status: Status;
  peers: PeerInfo[];
  invites: InviteInfo[];
  settings: AppSettings;
}

/** The mock helper's whole state at the start of `scenario`. */
export function scenarioState(scenario: Scenario, nowSecs: number): ScenarioState {
  const status = baseStatus();
  const state: ScenarioState = {
    helperError: HELPER_ERRORS[scenario] ?? null,
    helperSetup: scenario === 'not_installed_appimage' ? HELPER_SETUP : null,
    status,
    peers: homePeers(),
    invites: openInvites(nowSecs),
    settings: { ...DEFAULT_SETTINGS },
  };
  switch (scenario) {
    case 'fresh':
      status.network = null;
      status.server = null;
      status.server_connected = false;
      status.wants_up = false;
      status.state = { state: 'down' };
      state.peers = [];
      state.invites = [];
      break;
    case 'removed':
      status.network = null;
      status.server_connected = false;
      status.notice = 'this device was removed from network "home" by its owner';
      // The helper reports a wanted-up tunnel that cannot run as needing attention.
      status.state = { state: 'needs_attention', reason: status.notice };
      state.peers = [];
      state.invites = [];
      break;
    case 'member':
      status.network = friendsNetwork(1);
      state.peers = friendsPeers();
      state.invites = [];
      break;
    case 'connecting':
      status.state = { state: 'connecting' };
      status.server_connected = false;
      status.network!.peers_connected = 0;
      state.peers = state.peers.map((p) => ({
        ...p,
        state: { state: p.online ? 'connecting' : 'offline' },
        path: null,
        rtt_micros: null,
      }));
      break;
    case 'attention':
      status.server_connected = false;
      status.notice = 'the signal server is unreachable; reconnecting';
      status.state = { state: 'needs_attention', reason: status.notice };
      status.network!.peers_connected = 0;
      state.peers = state.peers.map((p) => ({ ...p, online: false, state: { state: 'offline' }, path: null, rtt_micros: null }));
      break;
  }
  return state;
}
