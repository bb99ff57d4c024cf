// What Dawn's subgroup matrices (chromium_experimental_subgroup_matrix, on Vulkan's
// cooperative matrices) deliver on this GPU, apart from any matmul's loads: the adapter's
// configurations, then the f16 16×16×16 → f32 multiply-accumulate rate with operands in
// registers, and with operands re-read from workgroup memory each step (as a tiled matmul does).
//   GPU machine: bash .gpu/run-lite.sh bench/gpu/matmul-sgmat-probe.mjs
// Results (H100): bench/results/matmul-sgmat-probe.json.
import { create, globals } from 'webgpu';

Object.assign(globalThis, globals);
const instance = create(['enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia', 'disable-dawn-features=timestamp_quantization']);
const adapter = await instance.requestAdapter({ powerPreference: 'high-performance' });
console.log(adapter.info.description || adapter.info.device, 'configs', JSON.stringify(adapter.info.subgroupMatrixConfigs ?? null),
  'subgroups', adapter.info.subgroupMinSize, adapter.info.subgroupMaxSize);
const device = await adapter.requestDevice({
  requiredFeatures: ['shader-f16', 'subgroups', 'chromium-experimental-subgroup-matrix', 'timestamp-query'].filter((f) => adapter.features.has(f)),
  requiredLimits: {
    maxComputeWorkgroupStorageSize: adapter.limits.maxComputeWorkgroupStorageSize,
    maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
    maxBufferSize: adapter.limits.maxBufferSize,
  },
});
console.log('device.adapterInfo configs', JSON.stringify(device.adapterInfo?.subgroupMatrixConfigs ?? null));

function kernel(fm, fn, reload, iters) {
  const decl = [];
  const body = [];
  const store = [];
  for (let i = 0; i < fm; i++) for (let j = 0; j < fn; j++) decl.push(`var a${i}${j} = subgroup_matrix_result<f32, 16, 16>();`);
  const loads = (off) => {
    const l = [];
    for (let i = 0; i < fm; i++) l.push(`let l${i} = subgroupMatrixLoad<subgroup_matrix_left<f16, 16, 16>, row_major>(&s, ${off} + ${i * 640}u, 40u);`);
    for (let j = 0; j < fn; j++) l.push(`let r${j} = subgroupMatrixLoad<subgroup_matrix_right<f16, 16, 16>, col_major>(&s, ${off} + ${4096 + j * 640}u, 40u);`);
    return l.join('\n');
  };
  for (let i = 0; i < fm; i++) for (let j = 0; j < fn; j++) body.push(`a${i}${j} = subgroupMatrixMultiplyAccumulate(l${i}, r${j}, a${i}${j});`);
  for (let i = 0; i < fm; i++) for (let j = 0; j < fn; j++) store.push(`subgroupMatrixStore<row_major>(&o, base + ${(i * fn + j) * 256}u, a${i}${j}, 16u);`);
  return `enable f16;
enable chromium_experimental_subgroup_matrix;
diagnostic(off, chromium.subgroup_matrix_uniformity);
@group(0) @binding(0) var<storage, read_write> o: array<f32>;
var<workgroup> s: array<f16, 12288>;
@compute @workgroup_size(256)
fn main(@builtin(local_invocation_index) lid: u32, @builtin(workgroup_id) wid: vec3u) {
  for (var i = lid; i < 12288u; i += 256u) { s[i] = f16(f32(i % 7u) * 0.01); }
  workgroupBarrier();
  let sg = lid / 32u;
  ${reload ? '' : loads('sg * 16u')}
  ${decl.join('\n  ')}
  for (var it = 0u; it < ${iters}u; it++) {
    ${reload ? loads('(sg + it % 4u) * 16u') : ''}
    ${body.join('\n    ')}
  }
  let base = (wid.x * 8u + sg) * ${fm * fn * 256}u;
  ${store.join('\n  ')}
}`;
}

async function time(label, code, fm, fn, iters, groups) {
  device.pushErrorScope('validation');
  const module = device.createShaderModule({ code });
  const info = await module.getCompilationInfo();
  const errors = info.messages.filter((m) => m.type === 'error');
  if (errors.length) {
    console.log(label, 'compile errors', errors.map((m) => `${m.lineNum}: ${m.message}`));
    await device.popErrorScope();
    return;
  }
  const pipeline = await device.createComputePipelineAsync({ layout: 'auto', compute: { module, entryPoint: 'main' } });
  const out = device.createBuffer({ size: groups * 8 * fm * fn * 256 * 4, usage: GPUBufferUsage.STORAGE });
  const group = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries: [{ binding: 0, resource: { buffer: out } }] });
  const qs = device.createQuerySet({ type: 'timestamp', count: 2 });
  const resolve = device.createBuffer({ size: 16, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
  const read = device.createBuffer({ size: 16, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const results = [];
  for (let rep = 0; rep < 4; rep++) {
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass({ timestampWrites: { querySet: qs, beginningOfPassWriteIndex: 0, endOfPassWriteIndex: 1 } });
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(groups);
    pass.end();
    enc.resolveQuerySet(qs, 0, 2, resolve, 0);
    enc.copyBufferToBuffer(resolve, 0, read, 0, 16);
    device.queue.submit([enc.finish()]);
    await read.mapAsync(GPUMapMode.READ);
    const [a, b] = new BigUint64Array(read.getMappedRange().slice(0));
    read.unmap();
    results.push(Number(b - a) / 1e9);
  }
  const err = await device.popErrorScope();
  if (err) console.log(label, 'error', err.message);
  const seconds = results.slice(1).sort((x, y) => x - y)[1];
  const flops = groups * 8 * iters * fm * fn * 2 * 16 ** 3;
  console.log(`${label}: ${(flops / seconds / 1e12).toFixed(1)} TFLOP/s (${(seconds * 1e3).toFixed(3)} ms)`);
  out.destroy();
}

const iters = 2048;
const groups = 132 * 8;
for (const [fm, fn] of [[4, 2], [4, 4], [2, 2]]) {
  await time(`registers ${fm}x${fn} accumulators/subgroup`, kernel(fm, fn, false, iters), fm, fn, iters, groups);
  await time(`workgroup-memory operands ${fm}x${fn}`, kernel(fm, fn, true, iters / 4), fm, fn, iters / 4, groups);
}
device.destroy();
