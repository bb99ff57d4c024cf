/**
 * Device script for GPU machines: proves that each gpu:N is the physical GPU at the PCI
 * bus id it claims, by allocating a different amount on each and reading every GPU's
 * memory.used from nvidia-smi. Also runs the compute self-test on each.
 *
 *   bash .gpu/run.sh dist/bench/devices-check.js [out.json]
 */
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { openDevices, selfTest, type TrackedBuffer } from '../src/index.ts';

const GIB = 1024 ** 3;

function memoryUsedByBus(): Map<string, number> {
  const csv = execFileSync('nvidia-smi', ['--query-gpu=pci.bus_id,memory.used', '--format=csv,noheader,nounits'], { encoding: 'utf8' });
  const used = new Map<string, number>();
  for (const line of csv.trim().split('\n')) {
    const [bus, mib] = line.split(',').map((s) => s.trim());
    used.set(bus!.toLowerCase().slice(-12), Number(mib));
  }
  return used;
}

const set = await openDevices();
const report: Record<string, unknown> = { devices: set.describe() };
try {
  const before = memoryUsedByBus();
  const held: TrackedBuffer[] = [];
  for (const gpu of set.gpus) {
    // gpu:N holds N+1 GiB, so each bus id must show its own distinct increase.
    for (let i = 0; i <= gpu.index; i++) {
      const b = await gpu.createBuffer({ label: `probe.${i}`, size: GIB, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
      gpu.device.queue.writeBuffer(b.buffer, 0, new Uint8Array(4096));
      held.push(b);
    }
    await gpu.device.queue.onSubmittedWorkDone();
  }
  const after = memoryUsedByBus();
  const mapping = set.gpus.map((gpu) => {
    const bus = gpu.pciBusId ?? '';
    const deltaMiB = (after.get(bus) ?? NaN) - (before.get(bus) ?? NaN);
    return { device: gpu.name, pciBusId: gpu.pciBusId, allocatedGiB: gpu.index + 1, nvidiaSmiDeltaMiB: deltaMiB,
      distinct: Math.abs(deltaMiB - (gpu.index + 1) * 1024) < 512 };
  });
  report.mapping = mapping;
  for (const b of held) b.destroy();
  report.ledgerAfterFree = set.gpus.map((g) => g.ledger.used);
  report.selfTests = [];
  for (const gpu of set.gpus) (report.selfTests as unknown[]).push(await selfTest(gpu, 10_000_003));
  console.log(JSON.stringify(report, null, 2));
} finally {
  await set.close();
}
if (process.argv[2]) writeFileSync(process.argv[2], JSON.stringify(report, null, 2));
