// The window's state and its link to the backend: what the helper last told us, whether
// it can be reached, and which panel shows. Screens read it and call its methods; the
// event-to-state logic itself lives in peers.ts, where it is unit-tested.

import type { Backend } from './backend';
import { asAppError, isHelperProblem } from './errors';
import { applyEvent, applyPeers, applyStatus, EMPTY, networkChanged, type LiveState } from './peers';
import type { AppError, AppInfo, AppSettings, IpcEvent, Status, View } from './types';

/** How long the first answer may take before the window stops waiting and says so. */
const FIRST_ANSWER_TIMEOUT_MS = 10_000;

export type Link =
  | { phase: 'waiting' }
  | { phase: 'ok' }
  | { phase: 'problem'; error: AppError };

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () =>
        reject({
          kind: 'unresponsive',
          message: `The Trellis helper did not answer within ${ms / 1000} s.`,
        } satisfies AppError),
      ms,
    );
    promise.then(resolve, reject).finally(() => clearTimeout(timer));
  });
}

export class AppModel {
  link = $state<Link>({ phase: 'waiting' });
  live = $state<LiveState>(EMPTY);
  settings = $state<AppSettings | null>(null);
  info = $state<AppInfo | null>(null);
  view = $state<View>('main');
  /** get_peers answered for the current network ("no peers" must not show before). */
  peersLoaded = $state(false);
  /** A refresh is running (the "Try again" button shows it). */
  refreshing = $state(false);

  constructor(readonly backend: Backend) {}

  get status(): Status | null {
    return this.live.status;
  }

  /** Subscribes first, then asks: an event sent meanwhile is not lost. */
  async start(): Promise<void> {
    await Promise.all([
      this.backend.on('helper-event', (e) => this.onHelperEvent(e)),
      this.backend.on('helper-connection', (c) => {
        if (c.connected) void this.refresh();
        else this.link = { phase: 'problem', error: c.error };
      }),
      this.backend.on('navigate', (n) => (this.view = n.view)),
    ]);
    // App-local commands: they work without the helper, so they load independently.
    this.backend.getSettings().then((s) => (this.settings = s), () => {});
    this.backend.appInfo().then((i) => (this.info = i), () => {});
    await this.refresh();
  }

  /** Asks the helper for everything again; the problem screen's "Try again". */
  async refresh(): Promise<void> {
    this.refreshing = true;
    try {
      // Both at once: one round trip less before the window shows the peers.
      const peers = this.backend.getPeers().catch(() => null);
      const status = await withTimeout(this.backend.getStatus(), FIRST_ANSWER_TIMEOUT_MS);
      this.live = applyStatus(this.live, status);
      this.link = { phase: 'ok' };
      const list = await peers;
      if (status.network && list) {
        this.live = applyPeers(this.live, list);
        this.peersLoaded = true;
      } else if (status.network) {
        void this.reloadPeers();
      }
    } catch (e) {
      this.link = { phase: 'problem', error: asAppError(e) };
    } finally {
      this.refreshing = false;
    }
  }

  onHelperEvent(event: IpcEvent): void {
    const before = this.live.status;
    this.live = applyEvent(this.live, event);
    // A new network (joined elsewhere, e.g. with the CLI) brings its own peers.
    if (event.event === 'status' && networkChanged(before, event.status)) this.networkSwitched(event.status);
  }

  /** A command answered with a fresh Status (connect, create, join): show it at once. */
  applyStatus(status: Status): void {
    const before = this.live.status;
    this.live = applyStatus(this.live, status);
    if (networkChanged(before, status)) this.networkSwitched(status);
  }

  private networkSwitched(status: Status): void {
    this.peersLoaded = false;
    if (status.network) void this.reloadPeers();
  }

  async reloadPeers(): Promise<void> {
    try {
      // Awaited first: `this.live` must be read after the answer, or events that came
      // meanwhile (a newer status) would be overwritten by the state from before.
      const peers = await this.backend.getPeers();
      this.live = applyPeers(this.live, peers);
      this.peersLoaded = true;
    } catch {
      // The status event that follows a lost helper shows the problem; peers can wait.
    }
  }

  /** The status after a command that answers `null` (rename, set_server, leave). */
  async reloadStatus(): Promise<void> {
    try {
      this.applyStatus(await this.backend.getStatus());
    } catch (e) {
      const error = asAppError(e);
      if (isHelperProblem(error)) this.link = { phase: 'problem', error };
    }
  }
}
