// Where the subgroup-matrix linear kernel spends its time at 4096³ (f16 x, f16 weights): the
// kernel as built (dist/), then with parts removed from its WGSL text: the MMAs, the tile fill
// (global loads and workgroup-memory stores), the barriers; and reshaped variants. Results of
// the cut variants are wrong by design; only their times matter.
//   GPU machine: bash .gpu/run-lite.sh bench/gpu/matmul-sgmat-bisect.mjs
// Results of the first version of the kernel (one step of register prefetch; the cuts were
// written for it, and 'unrolledKK'/'noLoopBarriers' match only that loop): bench/results/matmul-sgmat-probe.json.
import { create, globals } from 'webgpu';
import { linearKernel } from '../../dist/src/kernels/ops/matmul.js';
import { kernelSource } from '../../dist/src/kernels/shaders.js';

Object.assign(globalThis, globals);
const instance = create(['enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia', 'disable-dawn-features=timestamp_quantization']);
const adapter = await instance.requestAdapter({ powerPreference: 'high-performance' });
const device = await adapter.requestDevice({
  requiredFeatures: ['shader-f16', 'subgroups', 'chromium-experimental-subgroup-matrix', 'timestamp-query'].filter((f) => adapter.features.has(f)),
  requiredLimits: {
    maxComputeWorkgroupStorageSize: adapter.limits.maxComputeWorkgroupStorageSize,
    maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
    maxBufferSize: adapter.limits.maxBufferSize,
  },
});

const S = 4096;
const bytes = S * S * 2;
const fill = new Uint16Array(S * S).map((_, i) => 0x3000 + (i % 97)); // small positive f16s
const x = device.createBuffer({ size: bytes, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
const w = device.createBuffer({ size: bytes, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
const out = device.createBuffer({ size: bytes, usage: GPUBufferUsage.STORAGE });
device.queue.writeBuffer(x, 0, fill);
device.queue.writeBuffer(w, 0, fill);

async function time(label, code, tile) {
  device.pushErrorScope('validation');
  const module = device.createShaderModule({ code });
  const info = await module.getCompilationInfo();
  const errors = info.messages.filter((m) => m.type === 'error');
  if (errors.length) {
    await device.popErrorScope();
    console.log(label, 'compile errors', errors.map((m) => `${m.lineNum}: ${m.message}`).join('; '));
    return;
  }
  const pipeline = await device.createComputePipelineAsync({ layout: 'auto', compute: { module, entryPoint: 'main' } });
  const tilesN = S / tile.bn;
  const groups = (S / tile.bm) * tilesN;
  const params = new ArrayBuffer(32);
  new Uint32Array(params, 0, 7).set([S, S, S, S, 0, groups, tilesN]);
  new Float32Array(params, 28, 1)[0] = 1;
  const uniform = device.createBuffer({ size: 32, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  device.queue.writeBuffer(uniform, 0, params);
  const group = device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: [x, w, out, uniform].map((buffer, binding) => ({ binding, resource: { buffer } })),
  });
  const qs = device.createQuerySet({ type: 'timestamp', count: 2 });
  const resolve = device.createBuffer({ size: 16, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
  const read = device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const times = [];
  const reps = 10;
  for (let s = 0; s < 4; s++) {
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass({ timestampWrites: { querySet: qs, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 } });
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, group);
    for (let r = 0; r < reps; r++) pass.dispatchWorkgroups(groups);
    pass.end();
    enc.resolveQuerySet(qs, 0, 2, resolve, 0);
    enc.copyBufferToBuffer(resolve, 0, read, 0, 16);
    device.queue.submit([enc.finish()]);
    await read.mapAsync(GPUMapMode.READ);
    const [a, b] = new BigUint64Array(read.getMappedRange().slice(0));
    read.unmap();
    times.push(Number(b - a) / 1e9 / reps);
  }
  const err = await device.popErrorScope();
  const t = times.slice(1).sort((p, q) => p - q)[1];
  console.log(`${label}: ${(2 * S ** 3 / t / 1e12).toFixed(1)} TFLOP/s-equivalent (${(t * 1e3).toFixed(3)} ms)${err ? ` ERROR ${err.message}` : ''}`);
}

const spec = { kernel: 'tiled', path: 'subgroup-matrix', weights: 'f16', m: S, n: S, k: S, f16: true, bias: null, subgroups: true, workgroupStorage: 49152 };
const TILES = { '128x128': { bm: 128, bn: 128 }, '64x64': { bm: 64, bn: 64 }, '128x256': { bm: 128, bn: 256 } };

const cut = {
  base: (c) => c,
  noMMA: (c) => c.replace(/ *let [lr]_\d+ = subgroupMatrixLoad.*\n/g, '').replace(/ *acc_\d+_\d+ = subgroupMatrixMultiplyAccumulate.*\n/g, ''),
  noFill: (c) => c.replace(/ *put\(\du, lid \+ i \* WG, p[ab]\[i\]\);\n/g, ''),
  noLoopBarriers: (c) => c.replace(/(for \(var t = 0u;[\s\S]*?)workgroupBarrier\(\);([\s\S]*?)workgroupBarrier\(\);/, '$1$2'),
  unrolledKK: (c) => c.replace(/for \(var kk = 0u; kk < BK; kk \+= 16u\) \{([\s\S]*?)\n    \}\n    workgroupBarrier/, '{ let kk = 0u;$1\n    }\n    { let kk = 16u;$1\n    }\n    workgroupBarrier'),
  noEpilogue: (c) => c.replace(/ *store_tile\(acc_(?!0_0)\d+_\d+.*\n/g, ''),
  // The register staging loops written out (LA = LB = 4 for 128x128), in case pa/pb go to local memory.
  unrolledFill: (c) => c.replace(/for \(var i = 0u; i < (LA|LB); i\+\+\) \{\n([^{}]*?)\n(\s*)\}/g,
    (_m, _n, body, indent) => [0, 1, 2, 3].map((i) => `{ let i = ${i}u;\n${body}\n${indent}}`).join('\n' + indent)),
};
cut.unrolledAll = (c) => cut.unrolledKK(cut.unrolledFill(c));
// Which part of the tile fill costs: the global loads, or the f16 stores into workgroup memory.
cut.noGlobalLoads = (c) => c.replace(/p\[i\] = load_x\([^;]*\);/, 'p[i] = vec4<f16>(f16(idx));').replace(/p\[i\] = load_w\([^;]*\);/, 'p[i] = vec4<f16>(f16(idx));');
cut.noPuts = (c) => c.replace(/ *put\((\d)u, lid \+ i \* WG, (p[ab])\[i\]\);\n/g, (_m, t, p) => `      if (${p}[i].x == f16(-1.5)) { ${t === '0' ? 'As' : 'Bs'}[lid] = ${p}[i].y; }\n`);
// x read as u32 words rather than f16 vectors.
cut.xWords = (c) => c.replace('var<storage, read> x: array<vec4<XT>>;', 'var<storage, read> x: array<vec2<u32>>;')
  .replace('return x[(m * params.k + k) >> 2u];', 'return bitcast<vec4<f16>>(x[(m * params.k + k) >> 2u]);');
// A 64-deep k step: half the barriers and round trips per flop (45 KiB of workgroup memory).
cut.bk64 = (c) => c.replace('const BK = 32u;', 'const BK = 64u;');

for (const [tileName, direct, cuts] of [
  ['128x128', false, ['base', 'noMMA', 'noFill', 'noGlobalLoads', 'noPuts', 'xWords', 'bk64', 'unrolledKK']],
  ['64x64', false, ['base', 'noGlobalLoads', 'noPuts', 'bk64']],
]) {
  const k = linearKernel(spec, { sgmatTile: tileName, sgmatDirect: direct });
  const code = kernelSource(k.shader, k.defines);
  for (const name of cuts) {
    const changed = cut[name](code);
    if (name !== 'base' && changed === code) {
      console.log(`${tileName} ${direct ? 'direct' : 'shared'} ${name}: the cut matched nothing`);
      continue;
    }
    await time(`${tileName} ${direct ? 'direct' : 'shared'} ${name}`, changed, TILES[tileName]);
  }
}
device.destroy();
