// Small pieces of Rust's standard library that the protocol's parsers use, re-done in
// TypeScript so that the UI rejects exactly what the helper would reject, with the same
// sentence. JavaScript's own trim/toUpperCase/JSON quoting differ in edge cases.

// char::is_whitespace is Unicode White_Space; JS's \s also matches U+FEFF and misses U+0085.
const WHITE_SPACE = /[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]/;

export function isRustWhitespace(c: string): boolean {
  return c.length === 1 && WHITE_SPACE.test(c);
}

/** str::trim */
export function rustTrim(s: string): string {
  let start = 0;
  let end = s.length;
  while (start < end && isRustWhitespace(s[start])) start++;
  while (end > start && isRustWhitespace(s[end - 1])) end--;
  return s.slice(start, end);
}

/** to_ascii_uppercase: only a-z change (toUpperCase would also fold e.g. 'ß'). */
export function asciiUpper(s: string): string {
  return s.replace(/[a-z]/g, (c) => c.toUpperCase());
}

/** to_ascii_lowercase: only A-Z change (toLowerCase would map the Kelvin sign to 'k'). */
export function asciiLower(s: string): string {
  return s.replace(/[A-Z]/g, (c) => c.toLowerCase());
}

/** Characters Rust's Debug prints as \u{..}: controls, formats, unassigned, separators
 * (an approximation of core's is_printable tables that agrees on everything common). */
const UNPRINTABLE = /[\p{C}\p{Z}]/u;
const GRAPHEME_EXTEND = /\p{Grapheme_Extend}/u;

function escapeChar(c: string, quote: '"' | "'"): string {
  switch (c) {
    case '\0':
      return '\\0';
    case '\t':
      return '\\t';
    case '\r':
      return '\\r';
    case '\n':
      return '\\n';
    case '\\':
      return '\\\\';
    case quote:
      return '\\' + quote;
  }
  if (c !== ' ' && (UNPRINTABLE.test(c) || GRAPHEME_EXTEND.test(c))) {
    return `\\u{${c.codePointAt(0)!.toString(16)}}`;
  }
  return c;
}

/** format!("{:?}", c) for a char: 'U', '\n', '\u{a0}'. */
export function debugChar(c: string): string {
  return `'${escapeChar(c, "'")}'`;
}

/** format!("{:?}", s) for a str: "text" with quotes and backslashes escaped. */
export function debugStr(s: string): string {
  let out = '';
  for (const c of s) out += escapeChar(c, '"');
  return `"${out}"`;
}
