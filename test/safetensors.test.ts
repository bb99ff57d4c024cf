import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CountingAllocator } from '../src/formats/allocator.ts';
import { bf16BitsToF32, f16BitsToF32, f32ToBf16Bits, f32ToF16Bits, f8e4m3ToF32, f8e5m2ToF32, fromFloat32, toFloat32 } from '../src/formats/dtypes.ts';
import { WeightsFormatError, WeightsNotFoundError } from '../src/formats/errors.ts';
import { openSafetensors, SafetensorsFile } from '../src/formats/safetensors.ts';
import { encodeSafetensors, writeSafetensorsFile, type TensorToWrite } from '../src/formats/safetensors-writer.ts';
import { bytesSource } from '../src/formats/source.ts';
import { fixtureBytes, fixtureFiles, fixturePath } from './fixtures.ts';

async function readAll(file: SafetensorsFile): Promise<TensorToWrite[]> {
  const out: TensorToWrite[] = [];
  for (const t of file.tensors.values()) out.push({ name: t.name, dtype: t.dtype, shape: t.shape, data: await file.read(t.name) });
  return out;
}

describe('every safetensors fixture', () => {
  it.each(fixtureFiles('.safetensors'))('%s reads and round-trips bit for bit (in memory and streamed to disk)', async (rel) => {
    const allocator = new CountingAllocator();
    const file = await openSafetensors(fixturePath(rel), { allocator });
    try {
      expect(file.tensors.size).toBeGreaterThan(0);
      const tensors = await readAll(file);
      const original = readFileSync(fixturePath(rel));
      expect(allocator.total).toBe(original.length); // header length + header + every tensor, nothing twice
      expect(Buffer.compare(Buffer.from(encodeSafetensors(tensors, file.metadata)), original)).toBe(0);
      const out = join(mkdtempSync(join(tmpdir(), 'st-')), 'copy.safetensors');
      await writeSafetensorsFile(out, tensors, file.metadata);
      expect(Buffer.compare(readFileSync(out), original)).toBe(0);
    } finally {
      await file.close();
    }
  });

  it.each(['llama-tiny', 'gpt2-tiny', 'clip-text-tiny', 't5-encoder-tiny'])('%s: our f16 and bf16 casts of the f32 weights equal PyTorch\'s, byte for byte', async (folder) => {
    const f32 = await openSafetensors(fixturePath(folder, 'model.safetensors'));
    for (const [dtype, suffix] of [['F16', 'f16'], ['BF16', 'bf16']] as const) {
      const cast = await openSafetensors(fixturePath(folder, `model.${suffix}.safetensors`));
      for (const t of f32.tensors.values()) {
        expect(cast.tensor(t.name).dtype).toBe(dtype);
        const ours = fromFloat32(dtype, await f32.readF32(t.name));
        expect(Buffer.compare(Buffer.from(ours), Buffer.from(await cast.read(t.name))), `${suffix} ${t.name}`).toBe(0);
      }
      await cast.close();
    }
    await f32.close();
  });

  it('readF32 of a bf16 file gives the f32 weights rounded to bf16', async () => {
    const f32 = await openSafetensors(fixturePath('unet-tiny', 'model.safetensors'));
    const bf16 = await openSafetensors(fixturePath('unet-tiny', 'model.bf16.safetensors'));
    const name = [...f32.tensors.keys()][5]!;
    const a = await f32.readF32(name);
    const b = await bf16.readF32(name);
    expect(Array.from(b)).toEqual(Array.from(a, (x) => bf16BitsToF32(f32ToBf16Bits(x))));
    await f32.close();
    await bf16.close();
  });
});

describe('dtype conversions', () => {
  it('f16: subnormals, rounding to even, infinities, NaN', () => {
    expect(f16BitsToF32(0x0001)).toBe(2 ** -24);
    expect(f16BitsToF32(0x3c00)).toBe(1);
    expect(f16BitsToF32(0xc000)).toBe(-2);
    expect(f16BitsToF32(0x7bff)).toBe(65504);
    expect(f16BitsToF32(0x7c00)).toBe(Infinity);
    expect(f16BitsToF32(0x7e00)).toBeNaN();
    expect(f32ToF16Bits(1 + 2 ** -11)).toBe(0x3c00); // halfway: rounds to even
    expect(f32ToF16Bits(1 + 3 * 2 ** -11)).toBe(0x3c02);
    expect(f32ToF16Bits(65520)).toBe(0x7c00);
    expect(f32ToF16Bits(2 ** -25)).toBe(0x0000);
    expect(f32ToF16Bits(3 * 2 ** -25)).toBe(0x0002);
    for (let h = 0; h < 0x7c00; h++) expect(f32ToF16Bits(f16BitsToF32(h))).toBe(h);
  });

  it('bf16 and fp8 (OCP e4m3fn / e5m2, as PyTorch)', () => {
    expect(bf16BitsToF32(0x3f80)).toBe(1);
    expect(f32ToBf16Bits(1 + 2 ** -8)).toBe(0x3f80);
    expect(f8e4m3ToF32(0x7e)).toBe(448);
    expect(f8e4m3ToF32(0x01)).toBe(2 ** -9);
    expect(f8e4m3ToF32(0xb8)).toBe(-1);
    expect(f8e4m3ToF32(0x7f)).toBeNaN();
    expect(f8e5m2ToF32(0x7b)).toBe(57344);
    expect(f8e5m2ToF32(0x7c)).toBe(Infinity);
    expect(f8e5m2ToF32(0x3c)).toBe(1);
  });

  it('every dtype is written and read back to f32', async () => {
    const tensors: TensorToWrite[] = [
      { name: 'f64', dtype: 'F64', shape: [2], data: new Float64Array([1.5, -2]) },
      { name: 'i64', dtype: 'I64', shape: [2], data: new BigInt64Array([-3n, 40000000000n]) },
      { name: 'i32', dtype: 'I32', shape: [2], data: new Int32Array([-7, 9]) },
      { name: 'i8', dtype: 'I8', shape: [2], data: new Int8Array([-128, 127]) },
      { name: 'u8', dtype: 'U8', shape: [2], data: new Uint8Array([0, 255]) },
      { name: 'bool', dtype: 'BOOL', shape: [3], data: new Uint8Array([0, 1, 2]) },
      { name: 'e4m3', dtype: 'F8_E4M3', shape: [2], data: new Uint8Array([0x7e, 0xb8]) },
      { name: 'e5m2', dtype: 'F8_E5M2', shape: [1], data: new Uint8Array([0x3c]) },
      { name: 'f16', dtype: 'F16', shape: [1, 2], data: new Uint16Array([0x3c00, 0xc000]) },
      { name: 'empty', dtype: 'F32', shape: [0, 4], data: new Float32Array(0) },
    ];
    const file = await SafetensorsFile.open(bytesSource(encodeSafetensors(tensors, { format: 'pt' })));
    const read = async (n: string) => Array.from(await file.readF32(n));
    expect(await read('f64')).toEqual([1.5, -2]);
    expect(await read('i64')).toEqual([-3, 40000000000]);
    expect(await read('i32')).toEqual([-7, 9]);
    expect(await read('i8')).toEqual([-128, 127]);
    expect(await read('u8')).toEqual([0, 255]);
    expect(await read('bool')).toEqual([0, 1, 1]);
    expect(await read('e4m3')).toEqual([448, -1]);
    expect(await read('e5m2')).toEqual([1]);
    expect(await read('f16')).toEqual([1, -2]);
    expect(await read('empty')).toEqual([]);
    expect(file.metadata.get('format')).toBe('pt');
    expect(toFloat32('F32', new Uint8Array(new Float32Array([3]).buffer))[0]).toBe(3);
  });
});

/** A file with this exact header text and `dataBytes` bytes of data. */
function fileWithHeader(header: string, dataBytes = 0, declared?: bigint): Uint8Array {
  const json = new TextEncoder().encode(header);
  const out = new Uint8Array(8 + json.length + dataBytes);
  new DataView(out.buffer).setBigUint64(0, declared ?? BigInt(json.length), true);
  out.set(json, 8);
  return out;
}

const t = (name: string, dtype: string, shape: unknown, offsets: unknown) => `"${name}":{"dtype":"${dtype}","shape":${JSON.stringify(shape)},"data_offsets":${JSON.stringify(offsets)}}`;

describe('validation: every malformed file is a typed error naming the file and the problem', () => {
  const cases: Array<[string, Uint8Array, string]> = [
    ['too short', new Uint8Array(5), '5 bytes is too short for a safetensors file'],
    ['header over 100 MB', fileWithHeader('{}', 0, 100_000_001n), 'header length 100000001 is over the 100000000-byte limit'],
    ['header length past the end', fileWithHeader('{}', 0, 64n), 'header length 64 runs past the end of the file (10 bytes)'],
    ['header length of 2^64-1', fileWithHeader('{}', 0, 2n ** 64n - 1n), 'header length 18446744073709551615 is over the 100000000-byte limit'],
    ['invalid UTF-8', (() => { const f = fileWithHeader('{"a":1}'); f[10] = 0xff; return f; })(), 'header is not valid UTF-8'],
    ['invalid JSON', fileWithHeader('{"a":'), 'header is not valid JSON'],
    ['an array', fileWithHeader('[1,2]'), 'header is not a JSON object (it is an array)'],
    ['null', fileWithHeader('null'), 'header is not a JSON object (it is null)'],
    ['metadata not an object', fileWithHeader('{"__metadata__":[]}'), '__metadata__ is not an object'],
    ['metadata value not a string', fileWithHeader('{"__metadata__":{"a":1}}'), '__metadata__ value of "a" is not a string'],
    ['entry not an object', fileWithHeader('{"w":3}'), 'tensor "w" is not an object'],
    ['unknown dtype', fileWithHeader(`{${t('w', 'F12', [1], [0, 4])}}`, 4), 'tensor "w" has unknown dtype "F12"'],
    ['negative shape', fileWithHeader(`{${t('w', 'F32', [-1], [0, 4])}}`, 4), 'tensor "w" has shape [-1]: dimensions must be non-negative integers'],
    ['fractional shape', fileWithHeader(`{${t('w', 'F32', [1.5], [0, 4])}}`, 4), 'tensor "w" has shape [1.5]'],
    ['shape not an array', fileWithHeader(`{${t('w', 'F32', 4, [0, 4])}}`, 4), 'tensor "w" has no shape array'],
    ['offsets not a pair', fileWithHeader(`{${t('w', 'F32', [1], [0])}}`, 4), 'tensor "w" has data_offsets [0]: expected [begin, end]'],
    ['offsets reversed', fileWithHeader(`{${t('w', 'F32', [1], [4, 0])}}`, 4), 'tensor "w" has data_offsets [4, 0]: begin is after end'],
    ['out of bounds', fileWithHeader(`{${t('w', 'F32', [2], [0, 8])}}`, 4), 'tensor "w" ends at data offset 8, past the end of the data region (4 bytes)'],
    ['length ≠ shape × dtype', fileWithHeader(`{${t('w', 'F32', [2], [0, 4])}}`, 4), 'tensor "w" is F32 [2], which is 8 bytes, but data_offsets [0, 4] hold 4'],
    ['overlap', fileWithHeader(`{${t('a', 'F32', [2], [0, 8])},${t('b', 'F32', [1], [4, 8])}}`, 8), 'tensor "b" overlaps "a"'],
    ['gap', fileWithHeader(`{${t('a', 'F32', [1], [0, 4])},${t('b', 'F32', [1], [8, 12])}}`, 12), 'gap of 4 bytes before tensor "b"'],
    ['first tensor not at 0', fileWithHeader(`{${t('a', 'F32', [1], [4, 8])}}`, 8), 'gap of 4 bytes before tensor "a" (data offset 0)'],
    ['bytes after the last tensor', fileWithHeader(`{${t('a', 'F32', [1], [0, 4])}}`, 12), '8 bytes after the last tensor'],
  ];

  it.each(cases)('%s', async (_label, bytes, problem) => {
    const attempt = SafetensorsFile.open(bytesSource(bytes, 'bad.safetensors'));
    await expect(attempt).rejects.toThrow(WeightsFormatError);
    await expect(attempt).rejects.toThrow(`bad.safetensors: ${problem}`);
  });

  it('keys such as __proto__ pollute nothing: they are ordinary tensor and metadata names', async () => {
    const header = `{"__metadata__":{"__proto__":"x","constructor":"y"},${t('__proto__', 'F32', [1], [0, 4])},${t('constructor', 'F32', [1], [4, 8])}}`;
    const bytes = fileWithHeader(header, 8);
    new DataView(bytes.buffer).setFloat32(bytes.length - 8, 1.5, true);
    const file = await SafetensorsFile.open(bytesSource(bytes));
    expect([...file.tensors.keys()]).toEqual(['__proto__', 'constructor']);
    expect(Array.from(await file.readF32('__proto__'))).toEqual([1.5]);
    expect(file.metadata.get('__proto__')).toBe('x');
    expect(({} as Record<string, unknown>).dtype).toBeUndefined();
    expect(Object.getPrototypeOf({})).toBe(Object.prototype);
    // and the writer writes such names back as plain keys
    const again = await SafetensorsFile.open(bytesSource(encodeSafetensors(await readAll(file), file.metadata)));
    expect([...again.tensors.keys()]).toEqual(['__proto__', 'constructor']);
  });

  it('asking for a tensor that is not there names what is', async () => {
    const file = await SafetensorsFile.open(bytesSource(fixtureBytes('gpt2-tiny', 'expected.safetensors'), 'expected.safetensors'));
    await expect(file.read('logitz')).rejects.toThrow(WeightsNotFoundError);
    await expect(file.read('logitz')).rejects.toThrow('expected.safetensors: no tensor "logitz"');
  });

  it('the writer refuses data that does not match the shape', () => {
    expect(() => encodeSafetensors([{ name: 'w', dtype: 'F32', shape: [3], data: new Float32Array(2) }]))
      .toThrow('tensor "w" is F32 [3] (12 bytes) but its data has 8');
  });
});
