import { describe, expect, it } from 'vitest';
import {
  describeInvalid,
  formatCode,
  formatServer,
  formatTicket,
  isIpv6,
  parseCode,
  parseServer,
  parseTicket,
  type Parsed,
} from './invite';

/** The error sentence, or fails the test when the text parsed. */
function sentence<T>(result: Parsed<T>): string {
  if (result.ok) throw new Error(`expected an error, got ${JSON.stringify(result.value)}`);
  return describeInvalid(result.error);
}

describe('invite codes (InviteCode::from_str)', () => {
  it('accepts the canonical form', () => {
    expect(parseCode('K7QF-3M9T-WX2C-HN4R')).toEqual({ ok: true, value: 'K7QF3M9TWX2CHN4R' });
  });

  it('is forgiving about case, dashes and spaces, like the Rust tests', () => {
    expect(parseCode('k7qf3m9twx2chn4r')).toEqual({ ok: true, value: 'K7QF3M9TWX2CHN4R' });
    expect(parseCode(' k7qf 3m9t wx2c hn4r ')).toEqual({ ok: true, value: 'K7QF3M9TWX2CHN4R' });
    expect(parseCode('K7QF--3M9T WX2C-HN4R')).toEqual({ ok: true, value: 'K7QF3M9TWX2CHN4R' });
  });

  it('reads the look-alikes O, I, L as 0, 1, 1', () => {
    const parsed = parseCode('OIL0-0000-0000-0000');
    expect(parsed).toEqual({ ok: true, value: '0110000000000000' });
    expect(formatCode('0110000000000000')).toBe('0110-0000-0000-0000');
    expect(parseCode('oil0-0000-0000-000l')).toEqual({ ok: true, value: '0110000000000001' });
  });

  it('gives the same sentences as Rust for empty and wrong lengths', () => {
    expect(sentence(parseCode(''))).toBe('the invite code is empty');
    expect(sentence(parseCode('  - - '))).toBe('the invite code is empty');
    expect(sentence(parseCode('K7QF-3M9T-WX2C'))).toBe('an invite code has 16 letters and digits; this one has 12');
    expect(sentence(parseCode('K7QF-3M9T-WX2C-HN4R-A'))).toBe('an invite code has 16 letters and digits; this one has 17');
  });

  it('names a bad character and its position, counting dashes like Rust', () => {
    expect(sentence(parseCode('K7QF-3M9T-WX2C-HN4U'))).toBe(
      "'U' (character 19) cannot be in an invite code; codes use digits and letters except U",
    );
    expect(parseCode('K7QF-3M9T-WX2C-HN4!')).toEqual({ ok: false, error: { kind: 'character', found: '!', position: 19 } });
    // Positions count after trimming, in characters (code points), not UTF-16 units.
    expect(parseCode('  ü7QF')).toEqual({ ok: false, error: { kind: 'character', found: 'ü', position: 1 } });
    expect(parseCode('😀K7QF')).toEqual({ ok: false, error: { kind: 'character', found: '😀', position: 1 } });
    expect(parseCode('K7😀')).toEqual({ ok: false, error: { kind: 'character', found: '😀', position: 3 } });
  });

  it('quotes characters as Rust Debug does', () => {
    expect(sentence(parseCode("K7QF'"))).toBe("'\\'' (character 5) cannot be in an invite code; codes use digits and letters except U");
    expect(sentence(parseCode('K7\tQF'))).toBe("'\\t' (character 3) cannot be in an invite code; codes use digits and letters except U");
    expect(sentence(parseCode('K7\u00a0QF'))).toMatch(/^'\\u\{a0\}' \(character 3\)/);
  });

  it('does not fold non-ASCII look-alikes (Kelvin sign, dotless i)', () => {
    expect(parseCode('\u212A7QF-3M9T-WX2C-HN4R').ok).toBe(false);
    expect(parseCode('ı7QF-3M9T-WX2C-HN4R').ok).toBe(false);
  });

  it('trims Unicode white space as Rust does, but not U+FEFF', () => {
    expect(parseCode('\u3000K7QF-3M9T-WX2C-HN4R\u0085').ok).toBe(true);
    expect(parseCode('\ufeffK7QF-3M9T-WX2C-HN4R').ok).toBe(false);
  });
});

describe('server addresses (ServerAddr::from_str)', () => {
  const ok = (text: string) => {
    const parsed = parseServer(text);
    if (!parsed.ok) throw new Error(describeInvalid(parsed.error));
    return formatServer(parsed.value);
  };

  it('defaults to TLS and port 8443', () => {
    expect(ok('vpn.example.org')).toBe('vpn.example.org:8443');
    expect(ok('VPN.Example.org:9000/')).toBe('vpn.example.org:9000');
    expect(ok('https://vpn.example.org')).toBe('vpn.example.org:8443');
    expect(ok('wss://h:1')).toBe('h:1');
  });

  it('keeps ws:// (and http://) as plain WebSocket', () => {
    expect(ok('ws://203.0.113.5:9000')).toBe('ws://203.0.113.5:9000');
    expect(ok('http://h')).toBe('ws://h:8443');
  });

  it('handles IPv6 in brackets', () => {
    expect(ok('[2001:db8::1]:7000')).toBe('[2001:db8::1]:7000');
    expect(ok('[::1]')).toBe('[::1]:8443');
    expect(sentence(parseServer('[2001:db8::1'))).toBe(`the server address "[2001:db8::1" is invalid: unclosed '['`);
    expect(sentence(parseServer('[nope]:1'))).toBe('the server address "[nope]:1" is invalid: not an IPv6 address inside [ ]');
  });

  it('accepts a port as Rust u16 does (leading +) and rejects 0 and 65536', () => {
    expect(ok('h:+80')).toBe('h:80');
    expect(ok('h:00080')).toBe('h:80');
    for (const bad of ['h:0', 'h:65536', 'h:99999', 'h:', 'h:x', 'h:-1']) {
      expect(sentence(parseServer(bad))).toBe(`the server address "${bad}" is invalid: the port is not a number from 1 to 65535`);
    }
  });

  it('rejects other schemes, empty hosts and odd host names with Rust words', () => {
    expect(sentence(parseServer('ftp://host'))).toBe('the server address "ftp://host" is invalid: only ws:// and wss:// are supported');
    expect(sentence(parseServer(''))).toBe('the server address "" is invalid: no host');
    expect(sentence(parseServer(':80'))).toBe('the server address ":80" is invalid: no host');
    expect(sentence(parseServer('bad_host'))).toBe(
      `the server address "bad_host" is invalid: a host name has only letters, digits, '-' and '.'`,
    );
  });
});

describe('IPv6 (std::net::Ipv6Addr::from_str)', () => {
  it('accepts what Rust accepts', () => {
    for (const ok of ['::', '::1', '1::', '2001:db8::1', '1:2:3:4:5:6:7:8', '::ffff:1.2.3.4', '1:2:3:4:5:6:1.2.3.4', '1:2:3:4:5:6:7::', '::2:3:4:5:6:7:8']) {
      expect(isIpv6(ok), ok).toBe(true);
    }
  });
  it('rejects what Rust rejects', () => {
    for (const bad of ['', ':', '1:2:3:4:5:6:7', '1:2:3:4:5:6:7:8:9', '1::2::3', '12345::', '::1.2.3.04', '1.2.3.4::', 'g::', '1:2:3:4:5:6:7:8::', '::1:2:3:4:5:6:7:8']) {
      expect(isIpv6(bad), bad).toBe(false);
    }
  });
});

describe('tickets (InviteTicket::from_str)', () => {
  it('parses a bare code, CODE@server and the link form', () => {
    expect(parseTicket('K7QF-3M9T-WX2C-HN4R')).toEqual({ ok: true, value: { code: 'K7QF3M9TWX2CHN4R', server: null } });
    const at = parseTicket('K7QF-3M9T-WX2C-HN4R@vpn.example.org');
    expect(at.ok && formatTicket(at.value)).toBe('K7QF-3M9T-WX2C-HN4R@vpn.example.org:8443');
    const link = parseTicket('  TRELLIS://JOIN/k7qf3m9twx2chn4r@ws://203.0.113.5:9000 ');
    expect(link.ok && formatTicket(link.value)).toBe('K7QF-3M9T-WX2C-HN4R@ws://203.0.113.5:9000');
  });

  it('reports the code error before the server error, with positions inside the code', () => {
    expect(sentence(parseTicket('K7QF-3M9T-WX2C-HN4U@bad_host'))).toMatch(/^'U' \(character 19\)/);
    expect(sentence(parseTicket('trellis://join/K7QF'))).toBe('an invite code has 16 letters and digits; this one has 4');
  });

  it('rejects bad servers as Rust does', () => {
    expect(sentence(parseTicket('K7QF-3M9T-WX2C-HN4R@'))).toBe('the server address "" is invalid: no host');
    expect(parseTicket('K7QF-3M9T-WX2C-HN4R@host:99999').ok).toBe(false);
    expect(parseTicket('K7QF-3M9T-WX2C-HN4R@ftp://host').ok).toBe(false);
    expect(parseTicket('K7QF-3M9T-WX2C-HN4R@bad_host').ok).toBe(false);
  });

  it('round-trips its own display and link forms', () => {
    const value = { code: 'ABCDEFGHJKMNPQRS', server: { secure: false, host: 'relay-1.example', port: 443 } };
    const shown = formatTicket(value);
    expect(parseTicket(shown)).toEqual({ ok: true, value });
    expect(parseTicket(`trellis://join/${shown}`)).toEqual({ ok: true, value });
  });
});
