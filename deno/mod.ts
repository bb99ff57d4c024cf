/**
 * The Deno entry: the same library, with Dawn loaded through `npm:webgpu` (so it has
 * subgroups and shader-f16 where Deno's own wgpu has not). Pass `{ api: 'navigator' }` to
 * use Deno's built-in navigator.gpu instead.
 *
 *   import { openDevices } from './deno/mod.ts';
 */
import { openDevices as openDevicesWith, type OpenDevicesOptions } from '../src/devices/open.ts';
import type { DeviceSet } from '../src/devices/device-set.ts';
import type { DawnModule } from '../src/devices/dawn.ts';

export * from '../src/index.ts';

export function openDevices(options: OpenDevicesOptions = {}): Promise<DeviceSet> {
  return openDevicesWith({ dawn: () => import('npm:webgpu@0.6.2') as Promise<DawnModule>, ...options });
}
