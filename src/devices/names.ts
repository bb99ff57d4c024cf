import { MultiGpuError } from '../errors.ts';

export type DeviceRef = { readonly kind: 'gpu'; readonly index: number } | { readonly kind: 'cpu' };

/** ComfyUI's device names, so copied allocation strings keep working (SPEC §1). */
export const GPU_ALIASES: readonly string[] = Object.freeze(['gpu', 'cuda', 'xpu', 'directml', 'mlu', 'npu']);

export class UnknownDeviceError extends MultiGpuError {
  readonly text: string;
  constructor(text: string) {
    super('E_UNKNOWN_DEVICE', `"${text}" is not a device name`, {
      hint: `write cpu, gpu:N (N from \`multigpu devices\`), or one of ${GPU_ALIASES.map((a) => `${a}:N`).join(', ')}, mps`,
    });
    this.text = text;
  }
}

const GPU_NAME = /^([a-z]+)\s*:\s*(\d+)$/;

/** Case-insensitive; spaces around the name and the colon are ignored. */
export function parseDeviceName(text: string): DeviceRef {
  const t = text.trim().toLowerCase();
  if (t === 'cpu') return { kind: 'cpu' };
  if (t === 'mps') return { kind: 'gpu', index: 0 };
  const m = GPU_NAME.exec(t);
  if (m && GPU_ALIASES.includes(m[1]!)) {
    const index = Number(m[2]);
    if (Number.isSafeInteger(index)) return { kind: 'gpu', index };
  }
  throw new UnknownDeviceError(text);
}

export function canonicalDeviceName(ref: DeviceRef): string {
  return ref.kind === 'cpu' ? 'cpu' : `gpu:${ref.index}`;
}
