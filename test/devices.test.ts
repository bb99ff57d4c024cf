// The device layer on real WebGPU: Dawn on SwiftShader (Vulkan on the CPU).
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  BufferTooLargeError,
  CapacityExceededError,
  DeviceLostError,
  DeviceLostEvent,
  DeviceNotFoundError,
  DevicesClosedError,
  GpuValidationError,
  openDevices,
  selfTest,
  type DeviceSet,
} from '../src/index.ts';
import { SWIFTSHADER } from './helpers.ts';

const MIB = 1024 * 1024;

describe('one Dawn instance (SwiftShader)', () => {
  let set: DeviceSet;
  beforeAll(async () => {
    set = await openDevices({ memory: { 'gpu:0': '64mb' } });
  });
  afterAll(async () => {
    await set.close();
  });

  it('opens SwiftShader as gpu:0 with the adapter\'s maximum limits, and the cpu', () => {
    expect(set.runtime).toBe('node');
    expect(set.gpus).toHaveLength(1);
    const gpu = set.gpus[0]!;
    expect(gpu).toMatchObject({ name: 'gpu:0', adapterName: SWIFTSHADER, api: 'dawn', backend: 'vulkan', fallback: true });
    expect(gpu.capacity).toEqual({ bytes: 64 * MIB, source: 'user' });
    // The WebGPU defaults are 256 MiB and 128 MiB: asking for the maximum gets SwiftShader's 1 GiB.
    expect(gpu.limits.maxBufferSize).toBe(1024 * MIB);
    expect(gpu.limits.maxStorageBufferBindingSize).toBe(1024 * MIB);
    expect(gpu.hasFeature('subgroups')).toBe(true);
    expect(gpu.hasFeature('shader-f16')).toBe(false);
    expect(set.cpu.cores).toBeGreaterThanOrEqual(1);
    expect(set.cpu.capacity.source).toBe('os');
    expect(typeof set.cpu.wasmSimd).toBe('boolean');
  });

  it('resolves every alias of a device and names the missing ones', () => {
    expect(set.get('cuda:0')).toBe(set.gpus[0]);
    expect(set.get('MPS')).toBe(set.gpus[0]);
    expect(set.get('cpu')).toBe(set.cpu);
    expect(() => set.get('gpu:3')).toThrow(DeviceNotFoundError);
    expect(() => set.get('gpu:3')).toThrow('device "gpu:3" is not present on this machine (open: gpu:0, cpu)');
  });

  it('computes: the add kernel matches the host bit for bit', async () => {
    const result = await selfTest(set.gpus[0]!, 70_001);
    expect(result).toMatchObject({ ok: true, maxError: 0, elements: 70_001 });
  });

  it('keeps an exact ledger: every allocation counted, every free returns it to zero', async () => {
    const gpu = set.gpus[0]!;
    const usage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST;
    const sizes = [4, 1000, 65536, 3 * MIB];
    const buffers = await Promise.all(sizes.map((size, i) => gpu.createBuffer({ label: `b${i}`, size, usage })));
    expect(gpu.ledger.used).toBe(sizes.reduce((a, b) => a + b, 0));
    expect(gpu.ledger.count).toBe(4);
    buffers[1]!.destroy();
    buffers[1]!.destroy(); // idempotent
    expect(gpu.ledger.used).toBe(4 + 65536 + 3 * MIB);
    for (const b of buffers) b.destroy();
    expect(gpu.ledger.used).toBe(0);
    expect(gpu.ledger.peak).toBe(sizes.reduce((a, b) => a + b, 0));
  });

  it('refuses a buffer over maxBufferSize with a typed error before calling WebGPU', async () => {
    const gpu = set.gpus[0]!;
    const size = gpu.limits.maxBufferSize + 4;
    const attempt = gpu.createBuffer({ label: 'weights.huge', size, usage: GPUBufferUsage.STORAGE });
    await expect(attempt).rejects.toThrow(BufferTooLargeError);
    await expect(attempt).rejects.toThrow('gpu:0: cannot allocate buffer "weights.huge" of 1.00 GiB: over the adapter\'s maxBufferSize of 1.00 GiB');
    expect(gpu.ledger.used).toBe(0);
  });

  it('refuses what the capacity cannot hold, saying how much is in use and how much is short', async () => {
    const gpu = set.gpus[0]!;
    const held = await gpu.createBuffer({ label: 'held', size: 48 * MIB, usage: GPUBufferUsage.STORAGE });
    const attempt = gpu.createBuffer({ label: 'more', size: 32 * MIB, usage: GPUBufferUsage.STORAGE });
    await expect(attempt).rejects.toThrow(CapacityExceededError);
    await expect(attempt).rejects.toThrow('48.0 MiB of its 64.0 MiB capacity (from user) are in use, 16.0 MiB short');
    held.destroy();
    expect(gpu.ledger.used).toBe(0);
  });

  it('turns a WebGPU validation failure into a typed error and leaves the ledger untouched', async () => {
    const gpu = set.gpus[0]!;
    // MAP_READ may only be combined with COPY_DST.
    const attempt = gpu.createBuffer({ label: 'bad usage', size: 256, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.STORAGE });
    await expect(attempt).rejects.toThrow(GpuValidationError);
    await expect(attempt).rejects.toThrow(/gpu:0: cannot allocate buffer "bad usage" of 256 B: WebGPU rejected it: .*usage/i);
    expect(gpu.ledger.used).toBe(0);
  });
});

describe('device loss and close', () => {
  it('device.destroy() fires a typed lost event; the device then refuses allocations', async () => {
    const set = await openDevices();
    try {
      const gpu = set.gpus[0]!;
      const held = await gpu.createBuffer({ label: 'held', size: 1024, usage: GPUBufferUsage.STORAGE });
      const lost = new Promise<DeviceLostEvent>((resolve) => set.onDeviceLost(resolve));
      gpu.device.destroy();
      const event = await lost;
      expect(event).toBeInstanceOf(DeviceLostEvent);
      expect(event.device).toBe(gpu);
      expect(event.reason).toBe('destroyed');
      expect(gpu.lost?.reason).toBe('destroyed');
      expect(gpu.ledger.used).toBe(0); // a lost device has freed everything
      held.destroy();
      await expect(gpu.createBuffer({ label: 'after', size: 16, usage: GPUBufferUsage.STORAGE })).rejects.toThrow(DeviceLostError);
    } finally {
      await set.close();
    }
  });

  it('close() destroys every device without firing lost events, is idempotent, and get() then fails typed', async () => {
    const set = await openDevices();
    let events = 0;
    set.onDeviceLost(() => events++);
    await set.close();
    await set.close();
    expect(set.closed).toBe(true);
    expect(set.gpus[0]!.lost?.reason).toBe('destroyed');
    expect(events).toBe(0);
    expect(() => set.get('gpu:0')).toThrow(DevicesClosedError);
  });

  it('cpuOnly opens the cpu device alone', async () => {
    const set = await openDevices({ cpuOnly: true, memory: 'cpu=8gb' });
    expect(set.gpus).toHaveLength(0);
    expect(set.cpu.capacity).toEqual({ bytes: 8 * 1024 ** 3, source: 'user' });
    await set.close();
  });
});

describe('two Dawn instances: how every multi-GPU test runs here', () => {
  it('opens SwiftShader twice as gpu:0 and gpu:1, separate devices that both compute', async () => {
    const set = await openDevices({ adapters: [SWIFTSHADER, SWIFTSHADER], memory: 'gpu:1=2gb' });
    try {
      expect(set.gpus.map((g) => g.name)).toEqual(['gpu:0', 'gpu:1']);
      const [a, b] = set.gpus as [typeof set.gpus[0], typeof set.gpus[0]];
      expect(a.device).not.toBe(b.device);
      expect(b.capacity).toEqual({ bytes: 2 * 1024 ** 3, source: 'user' });
      const held = await a.createBuffer({ label: 'only on gpu:0', size: 4096, usage: GPUBufferUsage.STORAGE });
      expect([a.ledger.used, b.ledger.used]).toEqual([4096, 0]);
      held.destroy();
      const results = await Promise.all(set.gpus.map((g) => selfTest(g, 10_007)));
      expect(results.map((r) => [r.device, r.ok])).toEqual([['gpu:0', true], ['gpu:1', true]]);
      // Losing one leaves the other working.
      const lost = new Promise<DeviceLostEvent>((resolve) => set.onDeviceLost(resolve));
      a.device.destroy();
      expect((await lost).device.name).toBe('gpu:0');
      expect((await selfTest(b, 1000)).ok).toBe(true);
    } finally {
      await set.close();
    }
  });
});
