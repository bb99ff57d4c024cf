/** CPU reference of ops/upsample.ts: nearest upsampling of [N·C, H, W] planes by integer factors. */
export function upsampleNearestReference(input: Float32Array, planes: number, h: number, w: number, fy: number, fx: number): Float32Array {
  const oh = h * fy;
  const ow = w * fx;
  const out = new Float32Array(planes * oh * ow);
  for (let p = 0; p < planes; p++) {
    for (let y = 0; y < oh; y++) {
      for (let x = 0; x < ow; x++) out[(p * oh + y) * ow + x] = input[(p * h + Math.floor(y / fy)) * w + Math.floor(x / fx)]!;
    }
  }
  return out;
}
