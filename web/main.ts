import * as Comlink from 'comlink';
import type { Engine } from './worker.ts';

const engine = Comlink.wrap<Engine>(new Worker(new URL('./worker.ts', import.meta.url), { type: 'module' }));
const status = document.getElementById('status')!;
const body = document.querySelector('#devices tbody')!;

const yesNo = (b: boolean | null) => (b === null ? '' : b ? 'yes' : 'no');

async function show(): Promise<void> {
  const { rows, warnings } = await engine.listDevices();
  for (const row of rows) {
    const tr = document.createElement('tr');
    for (const text of [row.name, row.adapter, row.vendor, row.capacity, row.maxBufferSize, yesNo(row.shaderF16), yesNo(row.subgroups)]) {
      const td = document.createElement('td');
      td.textContent = text;
      tr.append(td);
    }
    body.append(tr);
  }
  const gpus = rows.length - 1;
  status.textContent = [`${gpus} GPU${gpus === 1 ? '' : 's'} opened in a worker`, ...warnings].join('; ');
}

show().catch((error: Error) => {
  status.textContent = `error: ${error.message}`;
});
