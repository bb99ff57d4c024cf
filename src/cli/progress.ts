/**
 * The CLI's progress bars, on stderr through cli-progress: weights loaded (bytes read of the
 * model's total) and tokens generated (of N, tokens/s), each with its elapsed time. Shown when
 * stderr is a terminal, or with --progress (then as plain lines every second where stderr is a
 * pipe or a file); never with --quiet. stdout stays the command's output alone.
 */
import { formatBytes } from '../allocation/bytes.ts';
import { WeightSet, type WeightTensor } from '../formats/weights.ts';

export interface ProgressBar {
  /** Sets the value (bytes, tokens) and redraws when due. */
  update(value: number): void;
  /** Draws the final state and ends the line. */
  stop(): void;
}

const NONE: ProgressBar = { update() {}, stop() {} };

export interface BarOptions {
  /** Default process.stderr. */
  readonly stream?: NodeJS.WritableStream;
  /** Erase the bar when it stops (default: leave its last state on its line). */
  readonly clear?: boolean;
}

/** Whether to draw bars: --quiet wins, then --progress, else only on a terminal. */
export function progressWanted(o: { progress?: boolean; quiet?: boolean }, stream: { isTTY?: boolean } = process.stderr): boolean {
  if (o.quiet) return false;
  return o.progress === true || stream.isTTY === true;
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

/**
 * A bar of `total` units: `label [=====-----] 42% | what | elapsed`, where `what` is the
 * caller's text for the value and the elapsed time (bytes of bytes, tokens and tokens/s).
 */
export async function progressBar(enabled: boolean, label: string, total: number,
  describe: (value: number, total: number, elapsedMs: number) => string, o: BarOptions = {}): Promise<ProgressBar> {
  if (!enabled) return NONE;
  const stream = o.stream ?? process.stderr;
  // Loaded only when a bar is drawn: the package is CommonJS and Node-only.
  const { default: cliProgress } = await import('cli-progress');
  const bar = new cliProgress.SingleBar({
    stream,
    // Where the stream is not a terminal, each draw is its own line already: no blank line at the end.
    clearOnComplete: o.clear === true || !(stream as { isTTY?: boolean }).isTTY,
    format: (options, params) => {
      const elapsed = (params.stopTime ?? Date.now()) - params.startTime;
      const pct = `${Math.floor(params.progress * 100)}%`.padStart(4);
      return `${label} [${cliProgress.Format.BarFormat(params.progress, options)}] ${pct} | ${describe(params.value, params.total, elapsed)} | ${seconds(elapsed)}`;
    },
    barsize: 30,
    barCompleteChar: '█',
    barIncompleteChar: '░',
    hideCursor: false,
    // true: cut the line to the terminal's width, and leave the terminal's own wrapping alone.
    linewrap: true,
    // Its SIGINT handler would keep Ctrl-C from ending the process.
    gracefulExit: false,
    noTTYOutput: true,
    notTTYSchedule: 1000,
    fps: 10,
    emptyOnZero: true,
  });
  bar.start(Math.max(total, 1), 0);
  let last = 0;
  return {
    update(value) {
      last = Math.min(value, total);
      bar.update(last);
    },
    stop() {
      bar.update(last);
      bar.stop();
    },
  };
}

/**
 * The loading bar: bytes of the model's weights read so far, of all its bytes. Until the first
 * read it says "planning": auto mode measures the devices first (seconds on a software GPU).
 */
export function loadingBar(enabled: boolean, totalBytes: number, o?: BarOptions): Promise<ProgressBar> {
  return progressBar(enabled, 'loading   ', totalBytes, (v, t) => (v === 0 ? `planning (${formatBytes(t)} to read)` : `${formatBytes(v)} / ${formatBytes(t)}`), o);
}

/** The generation bar: tokens of N and tokens/s. */
export function generationBar(enabled: boolean, tokens: number, o?: BarOptions): Promise<ProgressBar> {
  return progressBar(enabled, 'generating', tokens, (v, t, ms) => `${v}/${t} tokens${v > 0 && ms > 0 ? `, ${(v / (ms / 1000)).toFixed(1)} tokens/s` : ''}`, o);
}

/**
 * The same weights, counting the bytes each tensor read delivers (loadModel reads every
 * tensor it places through these methods, once per device it goes to): progress without a
 * hook in the loader.
 */
export function countReads(weights: WeightSet, onRead: (bytes: number) => void): WeightSet {
  const tensors = new Map<string, WeightTensor>();
  for (const [name, t] of weights.tensors) {
    const counted = <T>(p: Promise<T>): Promise<T> => p.then((v) => {
      onRead(t.byteLength);
      return v;
    });
    tensors.set(name, {
      ...t,
      readRaw: () => counted(t.readRaw()),
      readRawInto: t.readRawInto ? (target) => counted(t.readRawInto!(target)) : undefined,
      readF32: () => counted(t.readF32()),
    });
  }
  return new WeightSet({ name: weights.name, format: weights.format, tensors, config: weights.config, metadata: weights.metadata });
}
