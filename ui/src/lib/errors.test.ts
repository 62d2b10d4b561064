import { describe, expect, it } from 'vitest';
import { asAppError, helperAdvice, isHelperProblem, isRefusal } from './errors';

describe('errors', () => {
  it('tells helper problems from refusals', () => {
    expect(isHelperProblem({ kind: 'not_running', message: '' })).toBe(true);
    expect(isHelperProblem({ kind: 'refused', message: '', code: 'no_network' })).toBe(false);
  });
  it('matches refusal codes, including server ones', () => {
    const expired = { kind: 'refused' as const, message: 'x', code: { server: 'invite_expired' as const } };
    expect(isRefusal(expired, { server: 'invite_expired' })).toBe(true);
    expect(isRefusal(expired, { server: 'invite_revoked' })).toBe(false);
    expect(isRefusal({ kind: 'refused', message: '', code: 'already_in_network' }, 'already_in_network')).toBe(true);
    expect(isRefusal(null, 'already_in_network')).toBe(false);
  });
  it('gives concrete steps', () => {
    expect(helperAdvice('permission_denied').steps.map((s) => s.command ?? '')).toContain('sudo usermod -aG trellis $USER');
    expect(helperAdvice('not_running').steps.map((s) => s.command ?? '')).toContain('sudo systemctl start trellisd');
  });
  it('turns anything thrown into an AppError', () => {
    expect(asAppError(new Error('boom'))).toEqual({ kind: 'internal', message: 'boom' });
    expect(asAppError('text')).toEqual({ kind: 'internal', message: 'text' });
    const e = { kind: 'refused', message: 'm', code: 'timeout' };
    expect(asAppError(e)).toBe(e);
  });
});
