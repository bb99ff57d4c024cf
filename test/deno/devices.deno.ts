// Runs under `deno test` (spawned by test/deno.test.ts): the device layer on Deno's own
// navigator.gpu (wgpu) and on Dawn through npm:webgpu.
import { openDevices, selfTest, BufferTooLargeError, DeviceLostEvent } from '../../deno/mod.ts';

function assert(condition: unknown, message: string): asserts condition {
  if (!condition) throw new Error(message);
}

for (const api of ['navigator', 'dawn'] as const) {
  Deno.test(`devices on ${api}: open, compute, ledger, typed errors, lost event, close`, async () => {
    const set = await openDevices({ api });
    try {
      assert(set.runtime === 'deno', `runtime is ${set.runtime}`);
      assert(set.gpus.length >= 1, `no GPU opened on ${api}`);
      const gpu = set.gpus[0]!;
      assert(gpu.api === api, `gpu:0 opened by ${gpu.api}`);
      assert(set.cpu.cores >= 1 && set.cpu.capacity.source === 'os', 'cpu device facts');
      const result = await selfTest(gpu, 4099);
      assert(result.ok && result.maxError === 0, `self-test failed: ${JSON.stringify(result)}`);
      assert(gpu.ledger.used === 0, `ledger not back to zero: ${gpu.ledger.used}`);
      let typed = false;
      try {
        await gpu.createBuffer({ label: 'huge', size: gpu.limits.maxBufferSize + 4, usage: GPUBufferUsage.STORAGE });
      } catch (error) {
        typed = error instanceof BufferTooLargeError && error.device === 'gpu:0';
      }
      assert(typed, 'allocation over maxBufferSize did not raise BufferTooLargeError');
      const lost = new Promise<DeviceLostEvent>((resolve) => set.onDeviceLost(resolve));
      gpu.device.destroy();
      const event = await lost;
      assert(event.device === gpu && event.reason === 'destroyed', `lost event: ${event.reason}`);
    } finally {
      await set.close();
    }
    assert(set.closed, 'set not closed');
  });
}
