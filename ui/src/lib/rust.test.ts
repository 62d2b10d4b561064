import { describe, expect, it } from 'vitest';
import { asciiLower, debugChar, debugStr, rustTrim } from './rust';

// Expected values were printed by rustc (format!("{:?}", ..), str::trim).
describe('Rust std look-alikes', () => {
  it('quotes chars like Debug', () => {
    expect(['\u00a0', "'", '"', '\t', '\ufeff', '\u0085', 'ü', '\u2028', '\u0301', '\u200b'].map(debugChar).join(' ')).toBe(
      `'\\u{a0}' '\\'' '"' '\\t' '\\u{feff}' '\\u{85}' 'ü' '\\u{2028}' '\\u{301}' '\\u{200b}'`,
    );
  });
  it('quotes strs like Debug', () => {
    expect(debugStr(`a"b'\u00a0`)).toBe(`"a\\"b'\\u{a0}"`);
    expect(debugStr('\u0301x\u0301')).toBe('"\\u{301}x\\u{301}"');
  });
  it('trims White_Space only', () => {
    expect(rustTrim('\u0085 x \u3000')).toBe('x');
    expect(rustTrim('\ufeffx')).toBe('\ufeffx');
  });
  it('lowercases ASCII only', () => {
    expect(asciiLower('ABC\u212A')).toBe('abc\u212A');
  });
});
