// Invite codes and tickets, parsed exactly as protocol/src/invite.rs parses them
// (InviteCode, ServerAddr and InviteTicket's FromStr), so the join form can tell a
// person what is wrong before anything reaches the helper — in the helper's words.
//
// A code is 16 symbols of Crockford base32 shown as XXXX-XXXX-XXXX-XXXX. Case does not
// matter, dashes and spaces are optional, O reads as 0 and I/L as 1. A ticket may add
// `@host[:port]` or `@ws://host:port` and may come as a link `trellis://join/...`.

import { asciiLower, asciiUpper, debugChar, debugStr, rustTrim } from './rust';

export const ALPHABET = '0123456789ABCDEFGHJKMNPQRSTVWXYZ';
export const SYMBOLS = 16;
const GROUP = 4;
export const LINK_PREFIX = 'trellis://join/';
export const DEFAULT_SERVER_PORT = 8443;

/** Why a text is not an invite code, ticket or server address (InvalidInvite). */
export type InvalidInvite =
  | { kind: 'empty' }
  | { kind: 'length'; expected: number; found: number }
  | { kind: 'character'; found: string; position: number }
  | { kind: 'server'; text: string; reason: string };

export type Parsed<T> = { ok: true; value: T } | { ok: false; error: InvalidInvite };

/** The sentence Rust's Display gives for the same error. */
export function describeInvalid(e: InvalidInvite): string {
  switch (e.kind) {
    case 'empty':
      return 'the invite code is empty';
    case 'length':
      return `an invite code has ${e.expected} letters and digits; this one has ${e.found}`;
    case 'character':
      return `${debugChar(e.found)} (character ${e.position}) cannot be in an invite code; codes use digits and letters except U`;
    case 'server':
      return `the server address ${debugStr(e.text)} is invalid: ${e.reason}`;
  }
}

const fail = <T>(error: InvalidInvite): Parsed<T> => ({ ok: false, error });

/** InviteCode::from_str: the 16 canonical symbols (no dashes), or why not. */
export function parseCode(text: string): Parsed<string> {
  let symbols = '';
  let position = 0;
  // for..of walks code points, as Rust's chars() does, so positions agree.
  for (const c of rustTrim(text)) {
    position++;
    const upper = asciiUpper(c);
    if (upper === '-' || upper === ' ') continue;
    if (upper === 'O') symbols += '0';
    else if (upper === 'I' || upper === 'L') symbols += '1';
    else if (upper.length === 1 && ALPHABET.includes(upper)) symbols += upper;
    else return fail({ kind: 'character', found: c, position });
  }
  if (symbols.length === 0) return fail({ kind: 'empty' });
  if (symbols.length !== SYMBOLS) return fail({ kind: 'length', expected: SYMBOLS, found: symbols.length });
  return { ok: true, value: symbols };
}

/** "K7QF3M9TWX2CHN4R" → "K7QF-3M9T-WX2C-HN4R" */
export function formatCode(symbols: string): string {
  const groups: string[] = [];
  for (let i = 0; i < symbols.length; i += GROUP) groups.push(symbols.slice(i, i + GROUP));
  return groups.join('-');
}

export interface ServerAddress {
  /** wss:// when true, ws:// when false. */
  secure: boolean;
  host: string;
  port: number;
}

/** u16::from_str: an optional '+', then decimal digits, at most 65535. */
function parseU16(text: string): number | null {
  if (!/^\+?[0-9]+$/.test(text)) return null;
  const value = Number(text);
  return value <= 0xffff ? value : null;
}

/** ServerAddr::from_str */
export function parseServer(input: string): Parsed<ServerAddress> {
  const text = rustTrim(input);
  const bad = (reason: string) => fail<ServerAddress>({ kind: 'server', text, reason });
  const lower = asciiLower(text);
  let secure: boolean;
  let rest: string;
  const plain = ['ws://', 'http://'].find((p) => lower.startsWith(p));
  const tls = ['wss://', 'https://'].find((p) => lower.startsWith(p));
  if (plain) {
    [secure, rest] = [false, lower.slice(plain.length)];
  } else if (tls) {
    [secure, rest] = [true, lower.slice(tls.length)];
  } else if (lower.includes('://')) {
    return bad('only ws:// and wss:// are supported');
  } else {
    [secure, rest] = [true, lower];
  }
  rest = rest.replace(/\/+$/, '');
  let host: string;
  let port: string | null;
  if (rest.startsWith('[')) {
    const v6 = rest.slice(1);
    const close = v6.indexOf(']');
    if (close < 0) return bad("unclosed '['");
    host = v6.slice(0, close);
    if (!isIpv6(host)) return bad('not an IPv6 address inside [ ]');
    const after = v6.slice(close + 1);
    // Like Rust's strip_prefix(':'): anything else after ']' is ignored.
    port = after.startsWith(':') ? after.slice(1) : null;
  } else {
    const colon = rest.lastIndexOf(':');
    [host, port] = colon < 0 ? [rest, null] : [rest.slice(0, colon), rest.slice(colon + 1)];
  }
  if (host === '') return bad('no host');
  if (!host.includes(':') && !/^[a-z0-9.-]*$/.test(host)) {
    return bad("a host name has only letters, digits, '-' and '.'");
  }
  let portNumber = DEFAULT_SERVER_PORT;
  if (port !== null) {
    const parsed = parseU16(port);
    if (parsed === null || parsed === 0) return bad('the port is not a number from 1 to 65535');
    portNumber = parsed;
  }
  return { ok: true, value: { secure, host, port: portNumber } };
}

/** ServerAddr's Display: "host:port", "[v6]:port", with "ws://" when not secure. */
export function formatServer(server: ServerAddress): string {
  const hostPort = server.host.includes(':') ? `[${server.host}]:${server.port}` : `${server.host}:${server.port}`;
  return server.secure ? hostPort : `ws://${hostPort}`;
}

export interface Ticket {
  /** Canonical symbols, no dashes. */
  code: string;
  server: ServerAddress | null;
}

/** InviteTicket::from_str: "CODE", "CODE@server", or either behind trellis://join/. */
export function parseTicket(input: string): Parsed<Ticket> {
  let text = rustTrim(input);
  // eq_ignore_ascii_case: a non-ASCII character never matches the ASCII prefix.
  if (asciiLower(text.slice(0, LINK_PREFIX.length)) === LINK_PREFIX) {
    text = text.slice(LINK_PREFIX.length);
  }
  const at = text.indexOf('@');
  const code = parseCode(at < 0 ? text : text.slice(0, at));
  if (!code.ok) return code;
  if (at < 0) return { ok: true, value: { code: code.value, server: null } };
  const server = parseServer(text.slice(at + 1));
  if (!server.ok) return server;
  return { ok: true, value: { code: code.value, server: server.value } };
}

/** InviteTicket's Display: "K7QF-3M9T-WX2C-HN4R@host:port". */
export function formatTicket(ticket: Ticket): string {
  const code = formatCode(ticket.code);
  return ticket.server ? `${code}@${formatServer(ticket.server)}` : code;
}

/** The first group of a code, which is also the invite's id. */
export function locatorOf(code: string): string {
  return code.slice(0, GROUP);
}

// --- std::net::Ipv6Addr::from_str, re-done as its small recursive-descent parser. ---

/** Ipv4Addr: four decimal octets, no leading zeros, each at most 255. */
function readIpv4(s: string, at: number): number | null {
  let i = at;
  for (let octet = 0; octet < 4; octet++) {
    if (octet > 0) {
      if (s[i] !== '.') return null;
      i++;
    }
    const digits = /^[0-9]{1,3}/.exec(s.slice(i))?.[0];
    if (!digits || (digits.length > 1 && digits[0] === '0') || Number(digits) > 255) return null;
    i += digits.length;
  }
  return i;
}

/** Reads up to `limit` ':'-separated groups from `at`; returns [end, groups, endedWithIpv4]. */
function readGroups(s: string, at: number, limit: number): [number, number, boolean] {
  let i = at;
  for (let n = 0; n < limit; n++) {
    const start = n > 0 ? (s[i] === ':' ? i + 1 : -1) : i;
    if (start < 0) return [i, n, false];
    if (n < limit - 1) {
      const end = readIpv4(s, start);
      if (end !== null) return [end, n + 2, true];
    }
    const hex = /^[0-9a-fA-F]{1,4}/.exec(s.slice(start))?.[0];
    if (!hex) return [i, n, false];
    i = start + hex.length;
  }
  return [i, limit, false];
}

export function isIpv6(s: string): boolean {
  const [headEnd, headSize, headIpv4] = readGroups(s, 0, 8);
  if (headSize === 8) return headEnd === s.length;
  if (headIpv4 || s.slice(headEnd, headEnd + 2) !== '::') return false;
  // "::" stands for at least one zero group, so the tail has room for 7 - head.
  const [tailEnd] = readGroups(s, headEnd + 2, 8 - (headSize + 1));
  return tailEnd === s.length;
}
