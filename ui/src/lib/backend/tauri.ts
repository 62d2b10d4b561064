// The real backend: Tauri commands and events, named and shaped as the app contract says.
// Argument names are camelCase: Tauri maps them to the Rust commands' snake_case names.

import { invoke } from '@tauri-apps/api/core';
import { listen } from '@tauri-apps/api/event';
import { asAppError } from '../errors';
import type { AppInfo, AppSettings, CreatedInvite, InviteInfo, PeerInfo, Status } from '../types';
import type { Backend, BackendEvents, EventName, Unsubscribe } from './index';

async function call<T>(command: string, args?: Record<string, unknown>): Promise<T> {
  try {
    return await invoke<T>(command, args);
  } catch (e) {
    // A rejection that is not an AppError (a bug, a missing command) still reads as one.
    throw asAppError(e);
  }
}

export class TauriBackend implements Backend {
  getStatus = () => call<Status>('get_status');
  getPeers = () => call<PeerInfo[]>('get_peers');
  connect = () => call<Status>('connect');
  disconnect = () => call<Status>('disconnect');
  createNetwork = (name: string, server: string | null) => call<Status>('create_network', { name, server });
  joinNetwork = (ticket: string) => call<Status>('join_network', { ticket });
  leaveNetwork = () => call<null>('leave_network');
  createInvite = (maxUses: number | null, expiresInSecs: number | null) =>
    call<CreatedInvite>('create_invite', { maxUses, expiresInSecs });
  listInvites = () => call<InviteInfo[]>('list_invites');
  revokeInvite = (id: string) => call<null>('revoke_invite', { id });
  renameDevice = (name: string) => call<null>('rename_device', { name });
  setServer = (server: string) => call<null>('set_server', { server });
  removePeer = (peer: string) => call<null>('remove_peer', { peer });
  getSettings = () => call<AppSettings>('get_settings');
  setSettings = (settings: AppSettings) => call<AppSettings>('set_settings', { settings });
  copyText = (text: string) => call<null>('copy_text', { text });
  appInfo = () => call<AppInfo>('app_info');
  installHelper = () => call<string[]>('install_helper');

  async on<E extends EventName>(event: E, handler: (payload: BackendEvents[E]) => void): Promise<Unsubscribe> {
    return listen<BackendEvents[E]>(event, (e) => handler(e.payload));
  }
}
