// The JSON the UI exchanges with the Rust side, written to match serde's output of
// protocol/src/ipc (Status, PeerInfo, IpcEvent, IpcErrorCode), protocol/src/signal.rs
// (InviteInfo, ErrorCode) and the app contract (AppError, AppSettings, events).
// Field names stay snake_case where serde emits them so; the app's own types are camelCase.

/** base64 of a 32-byte X25519 key. */
export type PublicKey = string;
/** "100.64.0.2" */
export type OverlayIp = string;
/** "100.64.0.0/10" */
export type OverlayNet = string;
/** "host:port" (TLS) or "ws://host:port" (plain, for testing). */
export type ServerAddr = string;

export type TunnelState =
  | { state: 'down' }
  | { state: 'connecting' }
  | { state: 'up' }
  | { state: 'needs_attention'; reason: string };

export interface NetworkSummary {
  id: string;
  name: string;
  range: OverlayNet;
  my_ip: OverlayIp;
  owner: boolean;
  peers_total: number;
  peers_connected: number;
}

export interface Status {
  helper_version: string;
  device_name: string;
  public_key: PublicKey;
  fingerprint: string;
  server: ServerAddr | null;
  server_connected: boolean;
  /** What the user asked for with connect/disconnect. */
  wants_up: boolean;
  state: TunnelState;
  network: NetworkSummary | null;
  /** Why the device is not in a network any more, or what went wrong lately. */
  notice: string | null;
  /** Higher is newer (see protocol Status::revision); an older status never replaces a newer. */
  revision?: number;
}

export type PeerState =
  | { state: 'offline' }
  | { state: 'connecting' }
  | { state: 'connected' }
  | { state: 'reconnecting' }
  | { state: 'failed'; reason: string };

export type PathKind = 'direct' | 'relayed';
export type CandidateKind = 'host' | 'server_reflexive' | 'peer_reflexive' | 'relayed';

export interface PathInfo {
  kind: PathKind;
  local: CandidateKind;
  remote: CandidateKind;
  /** "203.0.113.9:41000" or "[2001:db8::1]:41000" */
  remote_addr: string;
}

export interface PeerInfo {
  name: string;
  key: PublicKey;
  fingerprint: string;
  ip: OverlayIp;
  owner: boolean;
  /** Connected to the signal server. */
  online: boolean;
  state: PeerState;
  path: PathInfo | null;
  last_handshake_secs_ago: number | null;
  rx_bytes: number;
  tx_bytes: number;
  rtt_micros: number | null;
}

export interface InviteInfo {
  /** The non-secret first group of the code. */
  id: string;
  network: string;
  /** Unix seconds. */
  created_at: number;
  /** Unix seconds. */
  expires_at: number;
  max_uses: number;
  uses: number;
}

export type IpcEvent =
  | { event: 'status'; status: Status }
  | { event: 'peer_joined'; peer: PeerInfo }
  | { event: 'peer_changed'; peer: PeerInfo }
  | { event: 'peer_left'; name: string; key: PublicKey };

/** protocol::signal::ErrorCode: why the signal server refused. */
export type ServerErrorCode =
  | 'malformed'
  | 'too_large'
  | 'version_mismatch'
  | 'unauthenticated'
  | 'invalid_argument'
  | 'invite_unknown'
  | 'invite_expired'
  | 'invite_used_up'
  | 'invite_revoked'
  | 'rate_limited'
  | 'not_member'
  | 'not_owner'
  | 'already_member'
  | 'banned'
  | 'address_pool_exhausted'
  | 'network_full'
  | 'too_many_networks'
  | 'unknown_network'
  | 'unknown_device'
  | 'unknown_invite'
  | 'peer_unreachable'
  | 'owner_cannot_leave'
  | 'internal';

/** protocol::ipc::IpcErrorCode: a unit variant is a string, `Server` an object. */
export type IpcErrorCode =
  | 'malformed'
  | 'version_mismatch'
  | 'permission_denied'
  | 'no_network'
  | 'already_in_network'
  | 'no_server'
  | 'server_unreachable'
  | { server: ServerErrorCode }
  | 'unknown_peer'
  | 'timeout'
  | 'invalid_argument'
  | 'internal';

export type AppErrorKind =
  | 'not_running'
  | 'not_installed'
  | 'permission_denied'
  | 'version_mismatch'
  | 'unresponsive'
  | 'disconnected'
  | 'refused'
  | 'invalid_input'
  | 'internal';

/** What every command rejects with. */
export interface AppError {
  kind: AppErrorKind;
  /** A sentence for people that already says what to do. */
  message: string;
  /** Only for 'refused'. */
  code?: IpcErrorCode;
}

export interface AppSettings {
  startAtLogin: boolean;
  connectOnStart: boolean;
  /** From the installed config; read-only for the UI. */
  defaultServer: string | null;
}

export interface AppInfo {
  version: string;
  ipcVersion: number;
  endpoint: string;
  /** When this app can install the helper itself (AppImage, macOS): what that will do. */
  helperSetup: string | null;
}

export interface CreatedInvite {
  /** "CODE@server", what a person copies. */
  ticket: string;
  /** "trellis://join/CODE@server", what the QR code carries. */
  link: string;
  invite: InviteInfo;
}

export type HelperConnection =
  | { connected: true; helperVersion: string }
  | { connected: false; error: AppError };

export type View = 'main' | 'invite' | 'join' | 'settings';

export interface NavigateEvent {
  view: View;
}
