import { MultiGpuError } from '../errors.ts';
import { formatBytes } from '../allocation/bytes.ts';

/** No WebGPU implementation could be loaded or no adapter answered. */
export class WebGpuUnavailableError extends MultiGpuError {
  constructor(message: string, options: { hint?: string; cause?: unknown } = {}) {
    super('E_WEBGPU_UNAVAILABLE', message, options);
  }
}

/** A device name that is not open in this DeviceSet (e.g. `gpu:3` on a one-GPU machine). */
export class DeviceNotFoundError extends MultiGpuError {
  readonly device: string;
  constructor(device: string, available: readonly string[]) {
    super('E_DEVICE_NOT_FOUND', `device "${device}" is not present on this machine (open: ${available.join(', ') || 'none'})`, {
      hint: 'run `multigpu devices` to see the numbering, or declare the device with --memory for planning only',
    });
    this.device = device;
  }
}

/** Base of every failed GPU allocation; says which device, which buffer and how large. */
export class GpuAllocationError extends MultiGpuError {
  readonly device: string;
  readonly label: string;
  readonly bytes: number;
  constructor(code: string, device: string, label: string, bytes: number, problem: string, hint: string, cause?: unknown) {
    super(code, `${device}: cannot allocate buffer "${label}" of ${formatBytes(bytes)}: ${problem}`, { hint, cause });
    this.device = device;
    this.label = label;
    this.bytes = bytes;
  }
}

/** The driver reported out-of-memory (GPUOutOfMemoryError inside an error scope). */
export class GpuOutOfMemoryError extends GpuAllocationError {
  constructor(device: string, label: string, bytes: number, detail: string) {
    super('E_GPU_OOM', device, label, bytes, `the driver is out of memory (${detail})`,
      'free models (unloadAll/freeAll), lower this device\'s share in the allocation string, or set a smaller --memory');
  }
}

/** The runtime's own ledger would exceed the device's capacity. */
export class CapacityExceededError extends GpuAllocationError {
  readonly capacity: number;
  readonly used: number;
  constructor(device: string, label: string, bytes: number, used: number, capacity: number, capacitySource: string) {
    super('E_CAPACITY', device, label, bytes,
      `${formatBytes(used)} of its ${formatBytes(capacity)} capacity (from ${capacitySource}) are in use, ${formatBytes(used + bytes - capacity)} short`,
      `free what is not in use, or raise the capacity with --memory ${device}=<size> if the device really has more`);
    this.capacity = capacity;
    this.used = used;
  }
}

/** Larger than the adapter's maxBufferSize: no WebGPU buffer can hold it, whatever is free. */
export class BufferTooLargeError extends GpuAllocationError {
  readonly maxBufferSize: number;
  constructor(device: string, label: string, bytes: number, maxBufferSize: number) {
    super('E_BUFFER_TOO_LARGE', device, label, bytes, `over the adapter's maxBufferSize of ${formatBytes(maxBufferSize)}`,
      'split the tensor into several buffers, or place this block on a device with a larger maxBufferSize');
    this.maxBufferSize = maxBufferSize;
  }
}

/** WebGPU rejected the buffer descriptor (GPUValidationError inside an error scope). */
export class GpuValidationError extends GpuAllocationError {
  constructor(device: string, label: string, bytes: number, detail: string) {
    super('E_GPU_VALIDATION', device, label, bytes, `WebGPU rejected it: ${detail}`,
      'this is a bug in the caller or in MultiGPU-Web; please report it with this message');
  }
}

/** An operation on a device that was lost (destroyed, driver reset, unplugged). */
export class DeviceLostError extends MultiGpuError {
  readonly device: string;
  readonly reason: string;
  constructor(device: string, reason: string, message: string) {
    super('E_DEVICE_LOST', `${device} was lost (${reason}${message ? `: ${message}` : ''})`, {
      hint: 'models on it are unusable; re-open the devices (openDevices) or re-plan onto the devices that remain',
    });
    this.device = device;
    this.reason = reason;
  }
}

/** An operation on a DeviceSet after close(). */
export class DevicesClosedError extends MultiGpuError {
  constructor(what: string) {
    super('E_DEVICES_CLOSED', `${what}: the DeviceSet was closed`, { hint: 'open a new one with openDevices()' });
  }
}
