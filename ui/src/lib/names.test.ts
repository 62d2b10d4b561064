import { describe, expect, it } from 'vitest';
import { deviceNameError, networkNameError } from './names';

describe('names (ids.rs)', () => {
  it('device names are DNS labels, case-insensitive', () => {
    expect(deviceNameError('Laptop-2')).toBeNull();
    expect(deviceNameError('  ')).toBe('device name is empty');
    expect(deviceNameError('a b')).toBe(`device name "a b" contains ' '; use letters, digits and '-'`);
    expect(deviceNameError('-a')).toBe(`device name "-a" must not start or end with '-'`);
    expect(deviceNameError('a'.repeat(64))).toBe('device name is 64 characters long; at most 63 are allowed');
    expect(deviceNameError('a'.repeat(63))).toBeNull();
  });
  it('network names are free text without control characters', () => {
    expect(networkNameError('  Home sweet home  ')).toBeNull();
    expect(networkNameError('')).toBe('network name is empty');
    expect(networkNameError('a\nb')).toBe(`network name "a\\nb" contains '\\n'; control characters are not allowed`);
    expect(networkNameError('é'.repeat(65))).toBe('network name is 65 characters long; at most 64 are allowed');
  });
});
