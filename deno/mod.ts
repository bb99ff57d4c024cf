/**
 * The Deno entry for a source checkout: the same library, run from its TypeScript sources,
 * with Dawn loaded through `npm:webgpu` (so it has subgroups and shader-f16 where Deno's own
 * wgpu has not). Pass `{ api: 'navigator' }` to use Deno's built-in navigator.gpu instead.
 * The cpu device's WebAssembly runs here too (Web Workers on shared memories).
 *
 *   import { openDevices, openWeights, loadModel } from './deno/mod.ts';
 *   deno run -A deno/example.ts [MODEL_FOLDER]     (see example.ts)
 *
 * From the npm package, Deno imports the built entry instead: `import ... from 'npm:multigpu-web'`
 * (with the package in node_modules: `deno run -A --node-modules-dir=manual`); there Dawn
 * loads from the package's own `webgpu` dependency.
 */
import { openDevices as openDevicesWith, type OpenDevicesOptions } from '../src/devices/open.ts';
import type { DeviceSet } from '../src/devices/device-set.ts';
import type { DawnModule } from '../src/devices/dawn.ts';

export * from '../src/index.ts';

export function openDevices(options: OpenDevicesOptions = {}): Promise<DeviceSet> {
  return openDevicesWith({ dawn: () => import('npm:webgpu@0.6.2') as Promise<DawnModule>, ...options });
}
