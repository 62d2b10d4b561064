// The one interface the screens use to reach the Rust side. It mirrors the app contract
// (/work/notes/app-contract.md): every command, and the three events. Two implementations:
// `tauri.ts` (the real app) and `mock.ts` (a browser, screen tests, design work).

import type {
  AppInfo,
  AppSettings,
  CreatedInvite,
  HelperConnection,
  InviteInfo,
  IpcEvent,
  NavigateEvent,
  PeerInfo,
  Status,
} from '../types';

export interface BackendEvents {
  'helper-event': IpcEvent;
  'helper-connection': HelperConnection;
  navigate: NavigateEvent;
}

export type EventName = keyof BackendEvents;
export type Unsubscribe = () => void;

/** Every method rejects with an AppError (see types.ts), never with anything else. */
export interface Backend {
  getStatus(): Promise<Status>;
  getPeers(): Promise<PeerInfo[]>;
  connect(): Promise<Status>;
  disconnect(): Promise<Status>;
  createNetwork(name: string, server: string | null): Promise<Status>;
  joinNetwork(ticket: string): Promise<Status>;
  leaveNetwork(): Promise<null>;
  createInvite(maxUses: number | null, expiresInSecs: number | null): Promise<CreatedInvite>;
  listInvites(): Promise<InviteInfo[]>;
  revokeInvite(id: string): Promise<null>;
  renameDevice(name: string): Promise<null>;
  setServer(server: string): Promise<null>;
  removePeer(peer: string): Promise<null>;
  getSettings(): Promise<AppSettings>;
  setSettings(settings: AppSettings): Promise<AppSettings>;
  copyText(text: string): Promise<null>;
  appInfo(): Promise<AppInfo>;
  /** Installs the helper this app carries (after an administrator prompt); what was done. */
  installHelper(): Promise<string[]>;
  /** Resolves once the listener is registered, so no event can slip past. */
  on<E extends EventName>(event: E, handler: (payload: BackendEvents[E]) => void): Promise<Unsubscribe>;
}

/** True inside the Tauri webview (its IPC bridge is injected before any script runs). */
export function inTauri(): boolean {
  return typeof window !== 'undefined' && '__TAURI_INTERNALS__' in window;
}

/**
 * The backend for this page: the mock when the URL says `?mock=<scenario>` or when there
 * is no Tauri (a plain browser), the real one otherwise. Imports lazily so the mock's
 * code and data stay out of the way of the real app's startup.
 */
export async function pickBackend(search: string = window.location.search): Promise<Backend> {
  const scenario = new URLSearchParams(search).get('mock');
  if (scenario !== null || !inTauri()) {
    const { MockBackend } = await import('./mock');
    const mock = new MockBackend(scenario || 'connected', { latencyMs: 250, live: true });
    // Screen tests and curious developers can drive the mock from the console.
    (window as unknown as { __TRELLIS_MOCK__: unknown }).__TRELLIS_MOCK__ = mock;
    return mock;
  }
  const { TauriBackend } = await import('./tauri');
  return new TauriBackend();
}
