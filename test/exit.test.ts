// A live Dawn instance keeps Node running: after close(), a program that used the library
// must end by itself, without process.exit().
import { expect, it } from 'vitest';
import { run, SWIFTSHADER } from './helpers.ts';

it('a program that opens two Dawn instances, computes and closes them exits by itself', async () => {
  const program = `
    const m = await import('./dist/src/index.js');
    const set = await m.openDevices({ adapters: [${JSON.stringify(SWIFTSHADER)}, ${JSON.stringify(SWIFTSHADER)}] });
    for (const gpu of set.gpus) if (!(await m.selfTest(gpu, 1000)).ok) throw new Error('self-test failed');
    await set.close();
    console.log('closed', set.gpus.length);`;
  const r = await run(process.execPath, ['--input-type=module', '-e', program], { timeoutMs: 15_000 });
  expect(r.signal, 'killed by the timeout: something kept the process alive').toBeNull();
  expect(r.code, r.stderr).toBe(0);
  expect(r.stdout.trim()).toBe('closed 2');
});
