// One command as a button sees it: running or not, and how the last run failed. Each
// form owns its actions, so an error shows next to what caused it and the form keeps
// its input (nothing is reset when a command fails).

import { asAppError } from './errors';
import type { AppError } from './types';

export class Action<Args extends unknown[], T> {
  busy = $state(false);
  error = $state<AppError | null>(null);

  constructor(private readonly fn: (...args: Args) => Promise<T>) {}

  /** The result, or undefined when the command failed (then `error` says why). */
  async run(...args: Args): Promise<T | undefined> {
    this.busy = true;
    this.error = null;
    try {
      return await this.fn(...args);
    } catch (e) {
      this.error = asAppError(e);
      return undefined;
    } finally {
      this.busy = false;
    }
  }

  clear(): void {
    this.error = null;
  }
}
