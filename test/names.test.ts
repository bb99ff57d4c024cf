import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { canonicalDeviceName, GPU_ALIASES, parseDeviceName, UnknownDeviceError } from '../src/devices/names.ts';

describe('device names (SPEC §1)', () => {
  it.each([
    ['cpu', 'cpu'], ['CPU', 'cpu'], [' cpu ', 'cpu'],
    ['gpu:0', 'gpu:0'], ['cuda:1', 'gpu:1'], ['XPU:2', 'gpu:2'], ['directml:3', 'gpu:3'],
    ['mlu:4', 'gpu:4'], ['npu:5', 'gpu:5'], ['mps', 'gpu:0'], ['cuda : 1', 'gpu:1'],
  ])('%j is %s', (text, canonical) => {
    expect(canonicalDeviceName(parseDeviceName(text))).toBe(canonical);
  });

  it.each(['gpu', 'gpu:', 'gpu:x', 'tpu:0', 'cuda:-1', 'cuda:1.5', '', 'cpu:0'])('%j is a typed UnknownDeviceError', (text) => {
    expect(() => parseDeviceName(text)).toThrow(UnknownDeviceError);
    expect(() => parseDeviceName(text)).toThrow(`"${text}" is not a device name`);
  });

  it('every alias, any index, any case and spacing maps to gpu:N (fuzzed)', () => {
    fc.assert(fc.property(fc.constantFrom(...GPU_ALIASES), fc.nat(64), fc.boolean(), fc.constantFrom('', ' ', '  '),
      (alias, index, upper, pad) => {
        const text = `${pad}${upper ? alias.toUpperCase() : alias}${pad}:${pad}${index}${pad}`;
        expect(parseDeviceName(text)).toEqual({ kind: 'gpu', index });
      }), { numRuns: 1000 });
  });
});
