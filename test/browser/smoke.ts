// Loaded by test/browser.test.ts in headless Chromium: the device layer on navigator.gpu.
import { BufferTooLargeError, DeviceLostEvent, openDevices, selfTest } from '../../src/index.ts';
import { SafetensorsFile } from '../../src/formats/safetensors.ts';
import { httpSource } from '../../src/formats/source.ts';

/** A fixture read by HTTP Range requests from the dev server: names and a checksum per tensor. */
async function readFixture(url: string) {
  const file = await SafetensorsFile.open(await httpSource(url));
  const sums: Record<string, number> = {};
  for (const name of file.tensors.keys()) sums[name] = (await file.readF32(name)).reduce((a, b) => a + b, 0);
  return sums;
}

async function smoke() {
  const set = await openDevices();
  const gpu = set.gpus[0];
  if (!gpu) throw new Error('no GPU');
  const description = set.describe();
  const check = await selfTest(gpu, 4099);
  const held = await gpu.createBuffer({ label: 'held', size: 1 << 20, usage: GPUBufferUsage.STORAGE });
  const usedWhileHeld = gpu.ledger.used;
  held.destroy();
  let tooLarge = '';
  try {
    await gpu.createBuffer({ label: 'huge', size: gpu.limits.maxBufferSize + 4, usage: GPUBufferUsage.STORAGE });
  } catch (error) {
    tooLarge = error instanceof BufferTooLargeError ? error.code : `untyped: ${error}`;
  }
  const lost = new Promise<DeviceLostEvent>((resolve) => set.onDeviceLost(resolve));
  gpu.device.destroy();
  const event = await lost;
  await set.close();
  const fixture = new URLSearchParams(location.search).get('fixture');
  return {
    fixtureSums: fixture ? await readFixture(fixture) : null,
    runtime: set.runtime, gpus: description.gpus, cpu: description.cpu, check,
    usedWhileHeld, usedAfterFree: gpu.ledger.used, tooLarge, lostReason: event.reason, closed: set.closed,
  };
}

const log = document.getElementById('log')!;
smoke().then((result) => {
  log.textContent = JSON.stringify(result, null, 2);
  (window as unknown as { smokeResult: unknown }).smokeResult = result;
}, (error: Error) => {
  log.textContent = `error: ${error.stack ?? error}`;
  (window as unknown as { smokeResult: unknown }).smokeResult = { error: String(error.stack ?? error) };
});
