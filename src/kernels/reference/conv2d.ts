/** CPU reference of ops/conv2d.ts: direct NCHW convolution, f64 sums, zero padding per side. */
export interface Conv2dReferenceGeometry {
  readonly stride: readonly [number, number];
  readonly pad: { readonly top: number; readonly bottom: number; readonly left: number; readonly right: number };
  readonly dilation?: readonly [number, number];
}

export function conv2dReference(x: Float32Array, xShape: readonly [number, number, number, number], weight: Float32Array,
  wShape: readonly [number, number, number, number], bias: Float32Array | null, g: Conv2dReferenceGeometry): { data: Float32Array; shape: [number, number, number, number] } {
  const [n, cin, h, w] = xShape;
  const [cout, , kh, kw] = wShape;
  const [sh, sw] = g.stride;
  const [dh, dw] = g.dilation ?? [1, 1];
  const hout = Math.floor((h + g.pad.top + g.pad.bottom - dh * (kh - 1) - 1) / sh) + 1;
  const wout = Math.floor((w + g.pad.left + g.pad.right - dw * (kw - 1) - 1) / sw) + 1;
  const out = new Float32Array(n * cout * hout * wout);
  for (let b = 0; b < n; b++) {
    for (let co = 0; co < cout; co++) {
      for (let oy = 0; oy < hout; oy++) {
        for (let ox = 0; ox < wout; ox++) {
          let acc = bias ? bias[co]! : 0;
          for (let ci = 0; ci < cin; ci++) {
            for (let ky = 0; ky < kh; ky++) {
              const iy = oy * sh + ky * dh - g.pad.top;
              if (iy < 0 || iy >= h) continue;
              for (let kx = 0; kx < kw; kx++) {
                const ix = ox * sw + kx * dw - g.pad.left;
                if (ix < 0 || ix >= w) continue;
                acc += x[((b * cin + ci) * h + iy) * w + ix]! * weight[((co * cin + ci) * kh + ky) * kw + kx]!;
              }
            }
          }
          out[((b * cout + co) * hout + oy) * wout + ox] = acc;
        }
      }
    }
  }
  return { data: out, shape: [n, cout, hout, wout] };
}
