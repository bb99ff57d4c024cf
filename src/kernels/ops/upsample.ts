import type { KernelRecorder } from '../recorder.ts';
import type { GpuTensor } from '../tensor.ts';
import { activationDtype, checkBindable, groupsFor, Uniforms, WORKGROUP_SIZE } from './elementwise-common.ts';

/**
 * Nearest upsampling of NCHW (diffusers' Upsample2D, F.interpolate(scale_factor=2,
 * mode="nearest")): out [N, C, H·fy, W·fx] with integer factors read off the shapes;
 * out[n, c, y, x] = x[n, c, ⌊y / fy⌋, ⌊x / fx⌋]. f32, or f16 with shader-f16.
 */
export async function upsampleNearest(rec: KernelRecorder, x: GpuTensor, out: GpuTensor): Promise<void> {
  const op = 'upsample_nearest';
  const dtype = activationDtype(op, rec.gpu, x, out);
  if (x.shape.length !== 4 || out.shape.length !== 4) throw new RangeError(`${op}: x and out must be [N, C, H, W]`);
  const [n, c, h, w] = x.shape as [number, number, number, number];
  const [on, oc, oh, ow] = out.shape as [number, number, number, number];
  const fy = oh / h;
  const fx = ow / w;
  if (on !== n || oc !== c || !Number.isInteger(fy) || !Number.isInteger(fx) || fy < 1 || fx < 1) {
    throw new RangeError(`${op}: [${out.shape.join(', ')}] is not [${n}, ${c}, ${h}·k, ${w}·k] for integer factors`);
  }
  checkBindable(op, rec, x, out);
  const total = out.elements;
  if (total === 0) return;
  const pipeline = await rec.pipeline('upsample', { F16: dtype === 'f16', WORKGROUP_SIZE });
  const u = new Uniforms(7).u32(total, h, w, oh, ow, fy, fx);
  rec.dispatch(pipeline, [x.buffer, out.buffer], u.bytes, groupsFor(total), `${op} ${dtype}`);
}
