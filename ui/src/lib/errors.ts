// AppError helpers: which errors mean "the helper is out of reach" and what a person can
// do about each. The Rust side's message already says what happened; the advice here
// adds the concrete steps for this platform.

import type { AppError, AppErrorKind, IpcErrorCode } from './types';

export const HELPER_PROBLEMS: readonly AppErrorKind[] = [
  'not_installed',
  'not_running',
  'permission_denied',
  'version_mismatch',
  'unresponsive',
  'disconnected',
];

export function isHelperProblem(error: AppError): boolean {
  return HELPER_PROBLEMS.includes(error.kind);
}

/** Anything a command rejected with, as an AppError (a bug must not surface as [object Object]). */
export function asAppError(e: unknown): AppError {
  if (e && typeof e === 'object' && 'kind' in e && 'message' in e) return e as AppError;
  if (e instanceof Error) return { kind: 'internal', message: e.message };
  return { kind: 'internal', message: String(e) };
}

export interface Advice {
  title: string;
  /** Steps, each either plain text or a command to type. */
  steps: { text: string; command?: string }[];
}

export function helperAdvice(kind: AppErrorKind): Advice {
  switch (kind) {
    case 'not_installed':
      return {
        title: 'The Trellis helper is not installed',
        steps: [
          { text: 'Trellis needs its helper service (trellisd) to manage the VPN. Install the Trellis package for your system, for example:' },
          { text: '', command: 'sudo apt install ./trellis_*.deb' },
        ],
      };
    case 'not_running':
      return {
        title: 'The Trellis helper is not running',
        steps: [{ text: 'Start the helper service:' }, { text: '', command: 'sudo systemctl start trellisd' }],
      };
    case 'permission_denied':
      return {
        title: 'Not allowed to use the helper',
        steps: [
          { text: 'Add your user to the trellis group:' },
          { text: '', command: 'sudo usermod -aG trellis $USER' },
          { text: 'Then log out and back in, so the new group takes effect.' },
        ],
      };
    case 'version_mismatch':
      return {
        title: 'The helper is another version',
        steps: [{ text: 'Install the same Trellis version for the app and the helper, then restart the helper:' }, { text: '', command: 'sudo systemctl restart trellisd' }],
      };
    case 'unresponsive':
      return {
        title: 'The helper does not answer',
        steps: [{ text: 'Restart the helper service:' }, { text: '', command: 'sudo systemctl restart trellisd' }],
      };
    case 'disconnected':
      return {
        title: 'Lost the connection to the helper',
        steps: [{ text: 'The app reconnects by itself. If this stays, check the helper:' }, { text: '', command: 'systemctl status trellisd' }],
      };
    default:
      return { title: 'Something went wrong', steps: [] };
  }
}

/** True when a refusal has this code, e.g. isRefusal(e, 'already_in_network'). */
export function isRefusal(error: AppError | null, code: IpcErrorCode): boolean {
  if (!error || error.kind !== 'refused' || error.code === undefined) return false;
  return JSON.stringify(error.code) === JSON.stringify(code);
}
