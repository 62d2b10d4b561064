// Device and network names, checked as protocol/src/ids.rs checks them (DeviceName and
// NetworkName's FromStr), so forms can point out a bad name while it is typed.

import { asciiLower, debugChar, debugStr, rustTrim } from './rust';

export const DEVICE_NAME_MAX = 63;
export const NETWORK_NAME_MAX = 64;

/** Why `text` is not a valid device name (a DNS label), or null when it is. */
export function deviceNameError(text: string): string | null {
  const what = 'device name';
  const name = asciiLower(rustTrim(text));
  if (name === '') return `${what} is empty`;
  const len = [...name].length;
  if (len > DEVICE_NAME_MAX) return `${what} is ${len} characters long; at most ${DEVICE_NAME_MAX} are allowed`;
  const bad = [...name].find((c) => !/^[a-z0-9-]$/.test(c));
  if (bad !== undefined) return `${what} ${debugStr(text)} contains ${debugChar(bad)}; use letters, digits and '-'`;
  if (name.startsWith('-') || name.endsWith('-')) return `${what} ${debugStr(text)} must not start or end with '-'`;
  return null;
}

/** Why `text` is not a valid network name (free text, no control characters), or null. */
export function networkNameError(text: string): string | null {
  const what = 'network name';
  const name = rustTrim(text);
  if (name === '') return `${what} is empty`;
  const len = [...name].length;
  if (len > NETWORK_NAME_MAX) return `${what} is ${len} characters long; at most ${NETWORK_NAME_MAX} are allowed`;
  const bad = [...name].find((c) => /\p{Cc}/u.test(c));
  if (bad !== undefined) return `${what} ${debugStr(text)} contains ${debugChar(bad)}; control characters are not allowed`;
  return null;
}
