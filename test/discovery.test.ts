// Discovery logic that needs no GPU: parsing what the platform and Dawn print, and
// planning which Dawn instances to create.
import { describe, expect, it } from 'vitest';
import { vendorName } from '../src/devices/adapter.ts';
import { explicitDawnTargets, groupAdapters, parseAdapterListing, planDawnTargets } from '../src/devices/dawn.ts';
import { WebGpuUnavailableError } from '../src/devices/errors.ts';
import { driPrimeTag, normalizeBusId, parseNvidiaSmi, type PciGpu } from '../src/devices/pci.ts';
import { driPrimeCandidates, pickGrowth } from '../src/devices/twins.ts';
import { gpuCapacity, parseMemoryOverrides, DEFAULT_CAPACITY } from '../src/devices/capacity.ts';
import { UnknownDeviceError } from '../src/devices/names.ts';

const H200 = 'NVIDIA H200';
const smi = `00000000:00:07.0, ${H200}, 143771\n00000000:00:06.0, ${H200}, 143771\n00000000:3B:00.0, NVIDIA L4, 23034\n`;

describe('PCI bus ids', () => {
  it.each([
    ['00000000:3B:00.0', '0000:3b:00.0'],
    ['0000:3b:00.0', '0000:3b:00.0'],
    ['3b:00.1', '0000:3b:00.1'],
    ['0001:C1:1F.7', '0001:c1:1f.7'],
  ])('normalises %s to %s', (text, id) => expect(normalizeBusId(text)).toBe(id));

  it.each(['', 'gpu0', '0000:3b:00', '0000:3b:00.9'])('rejects %j', (text) => expect(normalizeBusId(text)).toBeNull());

  it('parses nvidia-smi and sorts by bus: PCI order is gpu order', () => {
    const gpus = parseNvidiaSmi(smi);
    expect(gpus.map((g) => g.busId)).toEqual(['0000:00:06.0', '0000:00:07.0', '0000:3b:00.0']);
    expect(gpus[0]).toMatchObject({ name: H200, vendorId: 0x10de, memoryBytes: 143771 * 1024 ** 2, memorySource: 'nvidia-smi' });
  });

  it('names a GPU for the device-select layer as pci-dddd_bb_ss_f', () => {
    expect(driPrimeTag('0000:3b:00.0')).toBe('pci-0000_3b_00_0');
  });
});

describe("Dawn's adapter listing", () => {
  const message = `no suitable backends found
Available adapters:
 * backend: 'vulkan', name: 'NVIDIA H200'
 * backend: 'opengles', name: 'NVIDIA H200'
 * backend: 'vulkan', name: 'SwiftShader Device (Subzero)'
 * backend: 'null', name: 'Null backend'`;

  it('parses every line', () => {
    expect(parseAdapterListing(message)).toHaveLength(4);
  });

  it('keeps each name once, under the platform\'s preferred backend, and drops the null backend', () => {
    expect(groupAdapters(parseAdapterListing(message), 'linux')).toEqual([
      { name: H200, backend: 'vulkan', count: 1 },
      { name: 'SwiftShader Device (Subzero)', backend: 'vulkan', count: 1 },
    ]);
  });

  it('prefers d3d12 on Windows and metal on macOS', () => {
    const listing = [{ backend: 'vulkan', name: 'X' }, { backend: 'd3d12', name: 'X' }, { backend: 'metal', name: 'Y' }];
    expect(groupAdapters(listing, 'win32').map((g) => g.backend)).toEqual(['d3d12', 'metal']);
    expect(groupAdapters(listing, 'darwin').map((g) => g.backend)).toEqual(['vulkan', 'metal']);
  });
});

describe('planning Dawn instances', () => {
  const pci = parseNvidiaSmi(smi);
  const groups = [{ name: H200, backend: 'vulkan', count: 1 }, { name: 'NVIDIA L4', backend: 'vulkan', count: 1 }];

  it('gives each of several identical GPUs its own target, told apart by bus id', () => {
    const warnings: string[] = [];
    const targets = planDawnTargets(groups, pci, warnings);
    expect(targets.map((t) => [t.name, t.pci?.busId, t.twins.length])).toEqual([
      [H200, '0000:00:06.0', 2], [H200, '0000:00:07.0', 2], ['NVIDIA L4', '0000:3b:00.0', 0],
    ]);
    expect(warnings).toEqual([]);
  });

  it('opens one and warns when twins have no bus ids', () => {
    const warnings: string[] = [];
    const targets = planDawnTargets([{ name: 'GPU X', backend: 'vulkan', count: 2 }], [], warnings);
    expect(targets).toHaveLength(1);
    expect(warnings[0]).toContain('2 adapters are named "GPU X"');
  });

  it('explicit selectors: names may repeat; pci:<id> picks one twin; unknown ones are typed errors', () => {
    const targets = explicitDawnTargets(['nvidia l4', 'NVIDIA L4', 'pci:00000000:00:07.0'], groups, pci);
    expect(targets.map((t) => [t.name, t.pci?.busId])).toEqual([
      ['NVIDIA L4', '0000:3b:00.0'], ['NVIDIA L4', '0000:3b:00.0'], [H200, '0000:00:07.0'],
    ]);
    expect(() => explicitDawnTargets(['Radeon'], groups, pci)).toThrow(WebGpuUnavailableError);
    expect(() => explicitDawnTargets(['Radeon'], groups, pci)).toThrow('Dawn has no adapter of that name');
    expect(() => explicitDawnTargets(['pci:0000:99:00.0'], groups, pci)).toThrow('no GPU with that PCI bus id');
  });
});

describe('telling identical GPUs apart', () => {
  it('tries every twin\'s tag, then the numeric forms, then the default', () => {
    const twins = parseNvidiaSmi(smi).filter((g) => g.name === H200);
    expect(driPrimeCandidates(twins)).toEqual(['pci-0000_00_06_0', 'pci-0000_00_07_0', '1', null]);
  });

  it('attributes a probe to the GPU whose memory grew by at least the threshold', () => {
    const before = new Map([['a', 100], ['b', 100]]);
    expect(pickGrowth(['a', 'b'], before, new Map([['a', 117], ['b', 356]]), 128)).toBe('b');
    expect(pickGrowth(['a', 'b'], before, new Map([['a', 150], ['b', 110]]), 128)).toBeNull();
  });
});

describe('capacities', () => {
  const pci: PciGpu = { busId: '0000:00:06.0', name: H200, vendorId: 0x10de, memoryBytes: 1000, memorySource: 'nvidia-smi' };

  it('user first, then the platform, then the documented default', () => {
    const overrides = parseMemoryOverrides('cuda:0=24gb, cpu=.5tb');
    expect(gpuCapacity('gpu:0', overrides, pci)).toEqual({ bytes: 24 * 1024 ** 3, source: 'user' });
    expect(gpuCapacity('gpu:1', overrides, pci)).toEqual({ bytes: 1000, source: 'nvidia-smi' });
    expect(gpuCapacity('gpu:1', overrides, null)).toEqual({ bytes: DEFAULT_CAPACITY.gpu, source: 'default' });
    expect(overrides.get('cpu')).toBe(512 * 1024 ** 3);
  });

  it('accepts the option object form and rejects unknown devices with a typed error', () => {
    expect(parseMemoryOverrides({ 'GPU:1': '2gb', cpu: 42 })).toEqual(new Map([['gpu:1', 2 * 1024 ** 3], ['cpu', 42]]));
    expect(() => parseMemoryOverrides('tpu:0=1gb')).toThrow(UnknownDeviceError);
  });
});

describe('vendor names', () => {
  it.each([['nvidia', 'nvidia'], ['4318', 'nvidia'], ['6880', 'google'], ['0x1002', 'amd'], ['12345', '0x3039']])('%s → %s', (v, name) => {
    expect(vendorName(v)).toBe(name);
  });
});
