// The demo page: picks local model files, checks the allocation string on every keystroke
// (the library's own grammar, here on the page's thread) and draws the placement the planner
// gives (in the worker, where the weights' headers are), then loads and runs the model in
// the worker through comlink.
import * as Comlink from 'comlink';
import { parseAllocation } from '../src/allocation/grammar.ts';
import { AllocationError } from '../src/allocation/errors.ts';
import { formatBytes } from '../src/allocation/bytes.ts';
import type { DevicesInfo, Engine, MemoryRow, ModelInfo, PlanAnswer, PlanView } from './worker.ts';

const worker = new Worker(new URL('./worker.ts', import.meta.url), { type: 'module' });
const engine = Comlink.wrap<Engine>(worker);

const $ = <T extends HTMLElement = HTMLElement>(id: string): T => document.getElementById(id) as T;
const el = <K extends keyof HTMLElementTagNameMap>(tag: K, text?: string, className?: string): HTMLElementTagNameMap[K] => {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (className) e.className = className;
  return e;
};

const allocationInput = $<HTMLInputElement>('allocation');
const modeSelect = $<HTMLSelectElement>('mode');
const promptInput = $<HTMLInputElement>('prompt');
const promptAs = $<HTMLSelectElement>('prompt-as');
const stepsInput = $<HTMLInputElement>('steps');
const variantSelect = $<HTMLSelectElement>('variant');
const buttons = { load: $<HTMLButtonElement>('load'), run: $<HTMLButtonElement>('run'), unload: $<HTMLButtonElement>('unload'), reopen: $<HTMLButtonElement>('reopen') };

let devices: DevicesInfo | null = null;
let model: ModelInfo | null = null;
let picked: { folder: string; files: File[] } | null = null;
let allocationOk = false;
let busy = false;
let loaded = false;
let planSeq = 0;
/** The parsed allocation in words; the plan adds its execution and size. */
let summary = '';
/** The plan of the loaded model (what each device stores). */
let loadedPlan: PlanView | null = null;
const memoryAt: { load: MemoryRow[] | null; run: MemoryRow[] | null; now: MemoryRow[] | null } = { load: null, run: null, now: null };

// ---- problems: CSP violations and uncaught errors, on the page for everyone to see ----

const problems: string[] = [];
function problem(text: string): void {
  problems.push(text);
  $('problems').append(el('li', text));
}
document.addEventListener('securitypolicyviolation', (e) => problem(`CSP violation (page): ${e.effectiveDirective} blocked ${e.blockedURI || 'inline'}`));
window.addEventListener('error', (e) => problem(`error: ${e.message}`));
window.addEventListener('unhandledrejection', (e) => problem(`unhandled: ${String((e.reason as Error)?.message ?? e.reason)}`));
worker.addEventListener('error', (e) => problem(`worker error: ${e.message}`));
async function workerViolations(): Promise<void> {
  const seen = problems.filter((p) => p.startsWith('CSP violation (worker)')).length;
  for (const v of (await engine.violations()).slice(seen)) problem(`CSP violation (worker): ${v}`);
}

// ---- state shown on buttons ----

function setBusy(on: boolean, text = ''): void {
  busy = on;
  document.body.dataset.state = on ? 'busy' : 'ready';
  if (text || !on) $('run-status').textContent = text;
  refreshButtons();
}

function refreshButtons(): void {
  const runnable = model !== null && model.task !== null && allocationOk;
  buttons.load.disabled = busy || !runnable;
  buttons.run.disabled = busy || !runnable;
  buttons.unload.disabled = busy || !loaded;
  buttons.reopen.disabled = busy;
}

function showError(where: string, error: unknown): void {
  const message = (error as Error)?.message ?? String(error);
  $('run-status').textContent = `${where}: ${message}`;
  $('run-status').className = 'error';
}

// ---- devices ----

function deviceClass(name: string): string {
  return name === 'cpu' ? 'dev-cpu' : `dev-${Number(name.slice(4)) % 8}`;
}

function renderDevices(info: DevicesInfo, memory: MemoryRow[] | null): void {
  const body = $('devices').querySelector('tbody')!;
  body.replaceChildren();
  for (const d of info.devices) {
    const used = memory?.find((m) => m.name === d.name)?.used ?? d.used;
    const tr = el('tr');
    tr.dataset.device = d.name;
    const name = el('td', d.name);
    name.prepend(el('span', '', `swatch ${deviceClass(d.name)}`));
    tr.append(name, el('td', d.detail), el('td', `${formatBytes(d.capacity)} (${d.capacitySource})`), el('td', formatBytes(used)));
    body.append(tr);
  }
  const iso = $('isolation');
  iso.dataset.isolated = String(self.crossOriginIsolated);
  iso.dataset.cpuThreads = String(info.cpuThreads);
  iso.dataset.kernelThreads = String(info.kernelThreads);
  iso.textContent = self.crossOriginIsolated
    ? `Cross-origin isolated: yes. CPU threads: ${info.kernelThreads > 1 ? `on, the cpu device's kernels run on ${info.kernelThreads} threads` : `off (${info.kernelNote ?? 'one thread'})`}.`
    : `Cross-origin isolated: no, so the cpu device runs on one thread${info.kernelNote ? ` (${info.kernelNote})` : ''}. Serve the page with the headers COOP same-origin and COEP require-corp for threads.`;
  iso.className = info.kernelThreads > 1 ? 'ok' : 'warn';
}

async function openDevices(memory?: string): Promise<void> {
  setBusy(true, 'opening devices…');
  try {
    devices = await engine.openDevices(memory);
    loaded = false;
    loadedPlan = null;
    const gpus = devices.devices.length - 1;
    $('device-status').textContent = [`${gpus} GPU${gpus === 1 ? '' : 's'} and the cpu opened in a worker`, ...devices.warnings].join('; ');
    renderDevices(devices, null);
    if (picked) await openModel();
    validate();
  } catch (error) {
    $('device-status').textContent = `error: ${(error as Error).message}`;
  } finally {
    setBusy(false);
  }
}

// ---- model files ----

/** A picked folder's top level (subfolders of a model repository hold other things), by plain name. */
function filesOf(input: HTMLInputElement): { folder: string; files: File[] } {
  const all = [...(input.files ?? [])];
  const folderPick = all.some((f) => f.webkitRelativePath.includes('/'));
  if (!folderPick) return { folder: 'picked files', files: all };
  const top = all.filter((f) => f.webkitRelativePath.split('/').length === 2);
  return { folder: all[0]!.webkitRelativePath.split('/')[0]!, files: top };
}

async function openModel(variant?: string): Promise<void> {
  if (!picked) return;
  setBusy(true, 'reading headers…');
  loaded = false;
  loadedPlan = null;
  memoryAt.load = memoryAt.run = null;
  try {
    model = await engine.openModel(picked.folder, picked.files, variant);
    const m = model;
    const info = $('model-info');
    info.className = '';
    info.textContent = `${m.name}: ${m.family} (${m.format}, ${m.weightsFile}), ${m.blocks.length} blocks, ${m.tensors} tensors, ${formatBytes(m.totalBytes)}` +
      `; ${m.task === 'generate' ? 'text generation' : m.task === 'encode' ? 'text encoder' : 'this page does not run this family (plan only)'}` +
      `; tokenizer: ${m.tokenizer ? 'yes, text prompts' : m.tokenizerNote ?? 'none picked, token ids only'}`;
    info.dataset.family = m.family;
    const variants = [m.weightsFile, ...m.variants];
    $('variant-row').hidden = m.variants.length === 0;
    if (variant === undefined) variantSelect.replaceChildren(...variants.map((v) => el('option', v)));
    const textOption = promptAs.querySelector('option[value=text]') as HTMLOptionElement;
    textOption.disabled = !m.tokenizer;
    textOption.textContent = m.tokenizer ? 'text' : 'text (needs tokenizer.json)';
    if (!m.tokenizer) promptAs.value = 'ids';
    else if (!promptTouched) {
      promptAs.value = 'text';
      promptInput.value = 'Once upon a time';
    }
    void showPromptIds();
    $('steps-label').hidden = m.task !== 'generate';
    buttons.run.textContent = m.task === 'encode' ? 'Encode' : 'Run';
    $('output').textContent = '';
    $('speed').textContent = '';
    validate();
  } catch (error) {
    model = null;
    $('model-info').textContent = `cannot open these files: ${(error as Error).message}`;
    $('model-info').className = 'error';
    $('placement').replaceChildren();
    $('model-strip').replaceChildren();
  } finally {
    setBusy(false);
  }
}

for (const id of ['pick-folder', 'pick-files']) {
  const input = $<HTMLInputElement>(id);
  input.addEventListener('change', () => {
    if (!input.files?.length) return;
    picked = filesOf(input);
    void openModel();
  });
}
variantSelect.addEventListener('change', () => {
  const v = variantSelect.value;
  const m = /^(?:model|diffusion_pytorch_model)\.(.+)\.(?:safetensors|gguf)$/.exec(v);
  void openModel(m ? m[1] : '');
});

// ---- allocation: live validation and the placement picture ----

function showAllocationError(text: string, message: string, position: number | null, hint?: string): void {
  $('alloc-error').hidden = false;
  const shown = $('alloc-text');
  shown.replaceChildren();
  if (position !== null) {
    const p = Math.min(position, text.length);
    const mark = el('mark', text.slice(p, p + 1) || ' ');
    shown.append(text.slice(0, p), mark, text.slice(p + 1));
    $('alloc-caret').textContent = `${' '.repeat(p)}^`;
    $('alloc-error').dataset.position = String(position);
  } else {
    shown.textContent = text;
    $('alloc-caret').textContent = '';
    delete $('alloc-error').dataset.position;
  }
  $('alloc-message').textContent = message;
  $('alloc-hint').textContent = hint ? `hint: ${hint}` : '';
  allocationInput.setAttribute('aria-invalid', 'true');
  $('alloc-summary').textContent = '';
  $('placement').classList.add('stale');
  $('model-strip').classList.add('stale');
}

function clearAllocationError(): void {
  $('alloc-error').hidden = true;
  allocationInput.removeAttribute('aria-invalid');
}

function validate(): void {
  const text = allocationInput.value;
  const seq = ++planSeq;
  try {
    const parsed = parseAllocation(text, devices ? { devices: devices.devices.map((d) => d.name) } : undefined);
    clearAllocationError();
    allocationOk = true;
    summary = parsed.mode === 'simple'
      ? 'empty: simple mode, everything on the compute device'
      : `${parsed.mode} mode; ${parsed.wildcard ? `${parsed.wildcard} takes what is left` : 'no wildcard'}`;
    $('alloc-summary').textContent = summary;
  } catch (error) {
    allocationOk = false;
    refreshButtons();
    if (error instanceof AllocationError) showAllocationError(text, error.problem, error.position, error.hint);
    else showAllocationError(text, (error as Error).message, null);
    return;
  }
  refreshButtons();
  if (!model || !devices) return;
  void engine.plan(text, modeSelect.value as 'auto').then((answer) => {
    if (seq === planSeq) renderPlan(text, answer);
  });
}

function renderPlan(text: string, answer: PlanAnswer): void {
  if (!answer.ok) {
    allocationOk = false;
    refreshButtons();
    showAllocationError(text, answer.message.split('\n')[0]!, answer.position,
      /hint: (.*)$/s.exec(answer.message)?.[1]);
    return;
  }
  clearAllocationError();
  drawPlacement(answer.plan);
}

const EXEC_TEXT: Record<string, string> = { resident: 'runs here', stream: 'streamed to the compute device', pipeline: 'runs here (pipeline)' };

function drawPlacement(p: PlanView): void {
  $('placement').classList.remove('stale');
  $('model-strip').classList.remove('stale');
  // The model in order, each block's width its share of the bytes, coloured by where it is stored.
  const strip = $('model-strip');
  strip.replaceChildren(...p.blocks.map((b) => {
    const s = el('span', '', `seg ${deviceClass(b.device)}`);
    s.style.flexGrow = String(Math.max(b.bytes, 1));
    s.title = `${b.name}: ${formatBytes(b.bytes)} on ${b.device}`;
    return s;
  }));
  // A bar per device: its capacity, what is already in use, the reserve, and this model's blocks.
  const names = new Set([...p.devices.map((d) => d.name), ...(devices?.devices.map((d) => d.name) ?? [])]);
  const rows = [...names].map((name) => {
    const d = p.devices.find((x) => x.name === name);
    const info = devices?.devices.find((x) => x.name === name);
    const capacity = d?.capacity ?? info?.capacity ?? 0;
    const row = el('div', undefined, 'device');
    row.dataset.device = name;
    row.dataset.capacity = String(capacity);
    row.dataset.bytes = String(d?.bytes ?? 0);
    const head = el('div', undefined, 'device-head');
    const label = el('strong', name);
    label.prepend(el('span', '', `swatch ${deviceClass(name)}`));
    const share = d === undefined ? 'not in the plan' : d.share === null ? 'takes what is left' : `share ${formatBytes(d.share)}`;
    head.append(label, el('span', `stores ${formatBytes(d?.bytes ?? 0)} of ${formatBytes(capacity)}; ${share}` +
      `${d && d.used ? `; ${formatBytes(d.used)} in use` : ''}${d && d.reserve ? `; ${formatBytes(d.reserve)} reserved` : ''}`, 'note'));
    const bar = el('div', undefined, 'bar');
    const pct = (bytes: number) => `${Math.min(100, (100 * bytes) / Math.max(capacity, 1))}%`;
    if (d?.used) {
      const used = el('span', '', 'used');
      used.style.width = pct(d.used);
      bar.append(used);
    }
    const fill = el('span', '', `fill ${deviceClass(name)}`);
    fill.style.width = pct(d?.bytes ?? 0);
    bar.append(fill);
    if (d?.reserve) {
      const reserve = el('span', '', 'reserve');
      reserve.style.width = pct(d.reserve);
      bar.append(reserve);
    }
    const blocks = el('div', undefined, 'blocks');
    for (const b of p.blocks.filter((x) => x.device === name)) {
      const chip = el('span', b.name, `block exec-${b.exec} ${deviceClass(name)}`);
      chip.dataset.block = b.name;
      chip.dataset.exec = b.exec;
      chip.title = `${b.name} (${b.kind}): ${formatBytes(b.bytes)}, ${EXEC_TEXT[b.exec] ?? b.exec}${b.exec === 'stream' ? ` (${b.execDevice})` : ''}; ${b.reason}`;
      blocks.append(chip);
    }
    if (!blocks.childElementCount) blocks.append(el('span', 'no blocks', 'note'));
    row.append(head, bar, blocks);
    return row;
  });
  $('placement').replaceChildren(...rows);
  $('placement').dataset.allocation = p.allocation;
  $('plan-warnings').replaceChildren(...p.warnings.map((w) => el('li', `warning: ${w}`)));
  const reload = loaded && loadedPlan && (loadedPlan.allocation !== p.allocation || loadedPlan.mode !== p.mode)
    ? `; the loaded model uses "${loadedPlan.allocation}": Run loads it again` : '';
  $('alloc-summary').textContent = `${summary}; ${p.mode} execution on ${p.compute}; ${p.blocks.length} blocks, ${formatBytes(p.totalBytes)}${reload}`;
}

allocationInput.addEventListener('input', validate);
modeSelect.addEventListener('change', validate);

// ---- the prompt's token ids, as the user types ----

let promptSeq = 0;
async function showPromptIds(): Promise<void> {
  const seq = ++promptSeq;
  const line = $('prompt-ids');
  if (!model) {
    line.textContent = '';
    return;
  }
  const r = await engine.tokenize(promptInput.value, promptAs.value as 'ids');
  if (seq !== promptSeq) return;
  if ('error' in r) {
    line.textContent = r.error;
    line.className = 'note error';
    delete line.dataset.ids;
  } else {
    line.textContent = `${r.ids.length} token${r.ids.length === 1 ? '' : 's'}: ${r.ids.join(', ')}`;
    line.className = 'note';
    line.dataset.ids = r.ids.join(',');
  }
}
let promptTouched = false;
promptInput.addEventListener('input', () => {
  promptTouched = true;
  void showPromptIds();
});
promptAs.addEventListener('change', () => void showPromptIds());

// ---- load, run, unload ----

function renderMemory(): void {
  const body = $('memory-table').querySelector('tbody')!;
  body.replaceChildren();
  const now = memoryAt.now ?? [];
  for (const row of now) {
    const at = (list: MemoryRow[] | null) => {
      const r = list?.find((x) => x.name === row.name);
      return r ? formatBytes(r.used) : '';
    };
    const tr = el('tr');
    tr.dataset.device = row.name;
    tr.dataset.used = String(row.used);
    tr.dataset.model = String(row.model);
    const stores = loadedPlan?.devices.find((d) => d.name === row.name)?.bytes;
    const wasm = row.wasm ? `; WebAssembly memory ${formatBytes(row.wasm.used)} used of ${formatBytes(row.wasm.committed)} committed` : '';
    if (row.wasm) tr.dataset.wasmUsed = String(row.wasm.used);
    tr.append(el('td', row.name), el('td', formatBytes(row.capacity)), el('td', stores === undefined ? '' : formatBytes(stores)),
      el('td', at(memoryAt.load)), el('td', at(memoryAt.run)), el('td', `${formatBytes(row.used)} / ${formatBytes(row.capacity)}${wasm}`), el('td', formatBytes(row.model)));
    body.append(tr);
  }
  if (devices) renderDevices(devices, now);
}

async function load(): Promise<void> {
  const r = await engine.load(allocationInput.value, modeSelect.value as 'auto');
  loaded = true;
  loadedPlan = r.plan;
  memoryAt.load = r.memory;
  memoryAt.run = null;
  memoryAt.now = r.memory;
  drawPlacement(r.plan);
  renderMemory();
  $('run-status').textContent = `loaded in ${r.ms.toFixed(0)} ms`;
}

buttons.load.addEventListener('click', async () => {
  setBusy(true, 'loading…');
  $('run-status').className = '';
  try {
    await load();
    setBusy(false, $('run-status').textContent ?? '');
  } catch (error) {
    setBusy(false);
    showError('load', error);
  }
  await workerViolations();
});

buttons.run.addEventListener('click', async () => {
  if (!model) return;
  setBusy(true, 'loading…');
  $('run-status').className = '';
  const output = $('output');
  output.textContent = '';
  delete output.dataset.tokens;
  try {
    const current = await engine.loaded();
    if (!current || current.allocation !== allocationInput.value || current.mode !== modeSelect.value) await load();
    $('run-status').textContent = model.task === 'encode' ? 'encoding…' : 'generating…';
    if (model.task === 'generate') {
      const g = await engine.generate(promptInput.value, promptAs.value as 'ids', Number(stepsInput.value) || 1);
      output.dataset.tokens = g.tokens.join(',');
      if (g.text !== null) output.dataset.text = g.text;
      else delete output.dataset.text;
      output.textContent = [`prompt ids: ${g.prompt.join(', ')}`, `generated:  ${g.tokens.join(', ')}`,
        ...(g.text !== null ? [`prompt:     ${JSON.stringify(g.promptText)}`, `text:       ${JSON.stringify(g.text)}`] : [])].join('\n');
      $('speed').textContent = `${g.tokens.length} tokens in ${(g.prefillMs + g.decodeMs).toFixed(0)} ms: ${g.tokensPerSecond.toFixed(1)} tokens/s` +
        ` (prefill ${g.prefillMs.toFixed(0)} ms for ${g.prompt.length} prompt tokens${g.decodeTokensPerSecond !== null ? `; decode ${g.decodeTokensPerSecond.toFixed(1)} tokens/s` : ''})`;
      memoryAt.run = memoryAt.now = g.memory;
    } else {
      const e = await engine.encode(promptInput.value, promptAs.value as 'ids');
      output.dataset.outputs = e.outputs.map((o) => o.name).join(',');
      output.textContent = [`prompt ids: ${e.prompt.join(', ')}`,
        ...e.outputs.map((o) => `${o.name} [${o.shape.join(', ')}]: ${o.first.map((v) => v.toFixed(4)).join(', ')}, …`)].join('\n');
      $('speed').textContent = `one pass over ${e.prompt.length} tokens in ${e.ms.toFixed(0)} ms: ${(e.prompt.length / (e.ms / 1000)).toFixed(1)} tokens/s`;
      memoryAt.run = memoryAt.now = e.memory;
    }
    renderMemory();
    setBusy(false, 'done');
  } catch (error) {
    setBusy(false);
    showError('run', error);
  }
  await workerViolations();
});

buttons.unload.addEventListener('click', async () => {
  setBusy(true, 'unloading…');
  try {
    memoryAt.now = await engine.unload();
    loaded = false;
    loadedPlan = null;
    renderMemory();
    setBusy(false, 'unloaded');
  } catch (error) {
    setBusy(false);
    showError('unload', error);
  }
});

buttons.reopen.addEventListener('click', () => {
  memoryAt.load = memoryAt.run = memoryAt.now = null;
  renderMemory();
  void openDevices($<HTMLInputElement>('memory').value);
});

void openDevices().then(workerViolations);
