import fc from 'fast-check';
import { beforeAll, describe, expect, it } from 'vitest';
import { BYTE_UNITS } from '../src/allocation/bytes.ts';
import {
  AllocationAllZeroRatiosError,
  AllocationBadNumberError,
  AllocationDeviceNotPresentError,
  AllocationDuplicateDeviceError,
  AllocationEmptyEntryError,
  AllocationError,
  AllocationFractionAboveOneError,
  AllocationMissingCommaError,
  AllocationMixedModesError,
  AllocationRatioOverflowError,
  AllocationTwoWildcardsError,
  AllocationUnknownDeviceError,
  AllocationUnknownUnitError,
} from '../src/allocation/errors.ts';
import {
  parseAllocation,
  parseDonors,
  type AllocationAmount,
  type ParseAllocationOptions,
  type ParsedAllocation,
} from '../src/allocation/grammar.ts';
import { MultiGpuError } from '../src/errors.ts';

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const TiB = 1024 ** 4;

const bytes = (n: number): AllocationAmount => ({ kind: 'bytes', bytes: n });
const ratio = (percent: number): AllocationAmount => ({ kind: 'ratio', percent });
const fraction = (value: number): AllocationAmount => ({ kind: 'fraction', value });
const WILD: AllocationAmount = { kind: 'wildcard' };

/** The entries without `written` and `position`: what a plan is built from. */
const shape = (parsed: ParsedAllocation) => parsed.entries.map((e) => [e.device, e.amount] as const);

const DEVICE_LIST = 'devices are cpu and gpu:N (N as `multigpu devices` numbers them), also written ' +
  'cuda:N, xpu:N, directml:N, mlu:N, npu:N or mps (= gpu:0)';

/** Every error class with the code it must carry. */
const CODES = new Map<Function, string>([
  [AllocationUnknownDeviceError, 'E_ALLOC_UNKNOWN_DEVICE'],
  [AllocationDeviceNotPresentError, 'E_ALLOC_DEVICE_NOT_PRESENT'],
  [AllocationMissingCommaError, 'E_ALLOC_MISSING_COMMA'],
  [AllocationBadNumberError, 'E_ALLOC_BAD_NUMBER'],
  [AllocationUnknownUnitError, 'E_ALLOC_UNKNOWN_UNIT'],
  [AllocationMixedModesError, 'E_ALLOC_MIXED_MODES'],
  [AllocationDuplicateDeviceError, 'E_ALLOC_DUPLICATE_DEVICE'],
  [AllocationTwoWildcardsError, 'E_ALLOC_TWO_WILDCARDS'],
  [AllocationAllZeroRatiosError, 'E_ALLOC_ALL_ZERO_RATIOS'],
  [AllocationRatioOverflowError, 'E_ALLOC_RATIO_OVER_100'],
  [AllocationFractionAboveOneError, 'E_ALLOC_FRACTION_ABOVE_ONE'],
  [AllocationEmptyEntryError, 'E_ALLOC_EMPTY_ENTRY'],
]);

/** Runs `parse` and returns what it threw; fails the test if it did not throw. */
function thrown(parse: () => unknown): AllocationError {
  try {
    parse();
  } catch (error) {
    expect(error).toBeInstanceOf(AllocationError);
    return error as AllocationError;
  }
  throw new Error('expected an AllocationError, nothing was thrown');
}

describe('the seed\'s allocation strings (SPEC §2)', () => {
  it.each<[string, ParsedAllocation['mode'], (readonly [string, AllocationAmount])[], string | null]>([
    ['cuda:0,2.5gb;cpu,*', 'bytes', [['gpu:0', bytes(2684354560)], ['cpu', WILD]], 'cpu'],
    ['cuda:0,25%;cpu,75%', 'ratio', [['gpu:0', ratio(25)], ['cpu', ratio(75)]], null],
    ['cuda:0,8%;cuda:1,8%;cpu,4%', 'ratio', [['gpu:0', ratio(8)], ['gpu:1', ratio(8)], ['cpu', ratio(4)]], null],
    ['cuda:0,0.1;cpu,0.5', 'fraction', [['gpu:0', fraction(0.1)], ['cpu', fraction(0.5)]], null],
    ['cuda:0,4gb;cuda:1,2gb;cpu,*', 'bytes', [['gpu:0', bytes(4294967296)], ['gpu:1', bytes(2147483648)], ['cpu', WILD]], 'cpu'],
    ['cuda:0,60%;cuda:1,30%;cpu,10%', 'ratio', [['gpu:0', ratio(60)], ['gpu:1', ratio(30)], ['cpu', ratio(10)]], null],
  ])('%s', (text, mode, entries, wildcard) => {
    const parsed = parseAllocation(text);
    expect(parsed.text).toBe(text);
    expect(parsed.mode).toBe(mode);
    expect(shape(parsed)).toEqual(entries);
    expect(parsed.wildcard).toBe(wildcard);
    expect(parsed.warnings).toEqual([]);
  });

  it('cuda:0,500mb;cuda:1,3.0g;cpu,5gb*: the 5gb is ignored, and a warning says so', () => {
    const parsed = parseAllocation('cuda:0,500mb;cuda:1,3.0g;cpu,5gb*');
    expect(parsed.mode).toBe('bytes');
    expect(shape(parsed)).toEqual([['gpu:0', bytes(524288000)], ['gpu:1', bytes(3221225472)], ['cpu', WILD]]);
    expect(parsed.wildcard).toBe('cpu');
    expect(parsed.warnings).toEqual([
      'entry "cpu,5gb*": the amount 5gb before "*" is ignored; "*" takes whatever is left (write "cpu,*")',
    ]);
  });

  it('records each entry as typed and where it starts', () => {
    const parsed = parseAllocation('  cuda:0 , 2.5GB ;  cpu,* ');
    expect(parsed.entries.map((e) => [e.written, e.position])).toEqual([['cuda:0 , 2.5GB', 2], ['cpu,*', 20]]);
  });

  it.each([
    ['CUDA:0,2.5GB;CPU,*'],
    ['  cuda:0 , 2.5 gb ; cpu , *  '],
    ['Cuda : 0,2.5Gb;Cpu,   *'],
    ['\tcuda:0,\t2.5gB\t;\tcpu,*\n'],
    ['gpu:0,2.5GiB;cpu,*'],
    ['cuda:0,2.5gb;cpu,*;'],
    ['cuda:0,2.5gb;cpu,* ; '],
  ])('%j is the same allocation as cuda:0,2.5gb;cpu,*', (text) => {
    const parsed = parseAllocation(text);
    expect(parsed.mode).toBe('bytes');
    expect(shape(parsed)).toEqual([['gpu:0', bytes(2684354560)], ['cpu', WILD]]);
    expect(parsed.wildcard).toBe('cpu');
  });

  it.each([
    ['cuda'], ['xpu'], ['directml'], ['mlu'], ['npu'], ['gpu'],
  ])('alias %s:N means gpu:N in every mode and case', (alias) => {
    for (const index of [0, 1, 7, 12]) {
      const upper = alias.toUpperCase();
      expect(shape(parseAllocation(`${alias}:${index},1gb;cpu,*`))).toEqual([[`gpu:${index}`, bytes(GiB)], ['cpu', WILD]]);
      expect(shape(parseAllocation(`${upper} : ${index} , 30% ; cpu , 70%`))).toEqual([[`gpu:${index}`, ratio(30)], ['cpu', ratio(70)]]);
      expect(shape(parseAllocation(`${alias}:${index},0.25`))).toEqual([[`gpu:${index}`, fraction(0.25)]]);
    }
  });

  it('mps means gpu:0, cpu means cpu', () => {
    expect(shape(parseAllocation('mps,1gb;CPU,*'))).toEqual([['gpu:0', bytes(GiB)], ['cpu', WILD]]);
    expect(shape(parseAllocation('MPS,0.5;cpu,0.5'))).toEqual([['gpu:0', fraction(0.5)], ['cpu', fraction(0.5)]]);
  });

  it('reads every unit 1024-based, in any case', () => {
    for (const [unit, size] of Object.entries(BYTE_UNITS)) {
      expect(shape(parseAllocation(`gpu:0,3${unit}`))).toEqual([['gpu:0', bytes(3 * size)]]);
      expect(shape(parseAllocation(`gpu:0,3 ${unit.toUpperCase()}`))).toEqual([['gpu:0', bytes(3 * size)]]);
    }
    expect(shape(parseAllocation('gpu:0,1.5kb'))).toEqual([['gpu:0', bytes(1536)]]);
    expect(shape(parseAllocation('gpu:0,7b'))).toEqual([['gpu:0', bytes(7)]]);
  });

  it('a bare number is a fraction; 5. and .5 and 0.5 are numbers', () => {
    expect(shape(parseAllocation('gpu:0,1;gpu:1,0;cpu,5.'))).toEqual([['gpu:0', fraction(1)], ['gpu:1', fraction(0)], ['cpu', fraction(5)]]);
    expect(shape(parseAllocation('gpu:0,.5;gpu:1,0.5'))).toEqual([['gpu:0', fraction(0.5)], ['gpu:1', fraction(0.5)]]);
  });

  it('an empty or blank string is simple mode', () => {
    for (const text of ['', '   ', '\t\n']) {
      expect(parseAllocation(text)).toEqual({ text, mode: 'simple', entries: [], wildcard: null, warnings: [] });
    }
  });

  it('a string of only a wildcard is bytes mode with everything on that device', () => {
    expect(parseAllocation('cpu,*')).toMatchObject({ mode: 'bytes', wildcard: 'cpu', entries: [{ device: 'cpu', amount: WILD }] });
  });

  it('the wildcard form "number unit *" also works with spaces, and for ratios and fractions', () => {
    const bytesForm = parseAllocation('gpu:0,1gb;cpu, 5 gb * ');
    expect(shape(bytesForm)).toEqual([['gpu:0', bytes(GiB)], ['cpu', WILD]]);
    expect(bytesForm.warnings).toEqual(['entry "cpu, 5 gb *": the amount 5 gb before "*" is ignored; "*" takes whatever is left (write "cpu,*")']);
    expect(parseAllocation('gpu:0,50%;cpu,50%*')).toMatchObject({ mode: 'ratio', wildcard: 'cpu' });
    expect(parseAllocation('gpu:0,0.5;cpu,0.5*')).toMatchObject({ mode: 'fraction', wildcard: 'cpu' });
  });

  it('a fraction above 1 is allowed for cpu, with a warning', () => {
    const parsed = parseAllocation('gpu:0,0.5;cpu,1.5');
    expect(shape(parsed)).toEqual([['gpu:0', fraction(0.5)], ['cpu', fraction(1.5)]]);
    expect(parsed.warnings).toEqual(['entry "cpu,1.5": 1.5 is more than the host\'s whole memory']);
  });

  it('ratios with a wildcard may add up to exactly 100%', () => {
    expect(shape(parseAllocation('gpu:0,60%;gpu:1,40%;cpu,*'))).toEqual([['gpu:0', ratio(60)], ['gpu:1', ratio(40)], ['cpu', WILD]]);
    expect(shape(parseAllocation('gpu:0,0%;cpu,*'))).toEqual([['gpu:0', ratio(0)], ['cpu', WILD]]);
  });

  it('checks devices against options.devices only when given', () => {
    const options: ParseAllocationOptions = { devices: ['gpu:0', 'gpu:1', 'cpu'] };
    expect(shape(parseAllocation('cuda:1,1gb;cpu,*', options))).toEqual([['gpu:1', bytes(GiB)], ['cpu', WILD]]);
    expect(shape(parseAllocation('cuda:5,1gb'))).toEqual([['gpu:5', bytes(GiB)]]);
  });
});

describe('errors: class, code, position, message and hint (SPEC §2)', () => {
  const machine: ParseAllocationOptions = { devices: ['gpu:0', 'gpu:1', 'cpu'] };
  type Case = [string, string, ParseAllocationOptions | undefined, Function, number, string, string];
  const cases: Case[] = [
    ['unknown device', 'tpu:0,4gb;cpu,*', undefined, AllocationUnknownDeviceError, 0,
      'unknown device "tpu:0" in entry "tpu:0,4gb" at character 1',
      `did you mean "gpu:0,4gb"? ${DEVICE_LIST}`],
    ['unknown device, no guess', 'cuda:0,4gb; vulkan, *', undefined, AllocationUnknownDeviceError, 12,
      'unknown device "vulkan" in entry "vulkan, *" at character 13',
      `${DEVICE_LIST}: e.g. "gpu:0,*"`],
    ['unknown device, colon left out', 'cuda0,4gb', undefined, AllocationUnknownDeviceError, 0,
      'unknown device "cuda0" in entry "cuda0,4gb" at character 1',
      `did you mean "cuda:0,4gb"? ${DEVICE_LIST}`],
    ['missing device', ',4gb', undefined, AllocationUnknownDeviceError, 0,
      'missing device in entry ",4gb" at character 1',
      'write a device before the comma, e.g. "gpu:0,4gb"'],
    ['device not present', 'cuda:0,4gb;cuda:2,*', machine, AllocationDeviceNotPresentError, 11,
      'device gpu:2 (written "cuda:2") is not present on this machine, in entry "cuda:2,*" at character 12',
      'this machine has gpu:0, gpu:1, cpu (see `multigpu devices`): use one of those, e.g. "gpu:1,*"'],
    ['entry without a comma', 'cuda:0 4gb;cpu,*', undefined, AllocationMissingCommaError, 6,
      'no comma between device and amount in entry "cuda:0 4gb" at character 7',
      'put a comma between the device and the amount: "cuda:0,4gb"'],
    ['entry without a comma: a colon instead', 'cpu,*;cuda:1:2gb', undefined, AllocationMissingCommaError, 12,
      'no comma between device and amount in entry "cuda:1:2gb" at character 13',
      'put a comma between the device and the amount: "cuda:1,2gb"'],
    ['entry without a comma or amount', 'gpu:0,1gb;cpu', undefined, AllocationMissingCommaError, 13,
      'no comma between device and amount in entry "cpu" at character 14',
      'add a comma and an amount: "cpu,4gb", or "cpu,*" for whatever is left'],
    ['bad number: decimal comma', 'cuda:0,1,5gb;cpu,*', undefined, AllocationBadNumberError, 8,
      'bad number "1,5gb" in entry "cuda:0,1,5gb" at character 9: "," is not a decimal point',
      'write "cuda:0,1.5gb"'],
    ['bad number: negative', 'cuda:0,-4gb;cpu,*', undefined, AllocationBadNumberError, 7,
      'negative amount "-4gb" in entry "cuda:0,-4gb" at character 8: amounts can\'t be negative',
      'write 0 or more, e.g. "cuda:0,4gb"'],
    ['bad number: negative ratio', 'cuda:0,50%;cpu,-5%', undefined, AllocationBadNumberError, 15,
      'negative amount "-5%" in entry "cpu,-5%" at character 16: amounts can\'t be negative',
      'write 0 or more, e.g. "cpu,5%"'],
    ['bad number: exponent', 'cpu,1e3', undefined, AllocationBadNumberError, 5,
      'bad number "1e3" in entry "cpu,1e3" at character 6: exponents are not accepted',
      'write the number out: "cpu,1000"'],
    ['bad number: empty amount', 'cuda:0,;cpu,*', undefined, AllocationBadNumberError, 7,
      'missing amount in entry "cuda:0," at character 8',
      'write an amount after the comma, e.g. "cuda:0,4gb" or "cuda:0,*"'],
    ['bad number: no digits', 'cuda:0,gb', undefined, AllocationBadNumberError, 7,
      'bad number "gb" in entry "cuda:0,gb" at character 8: the amount has no number',
      'an amount is a byte size (4gb), a ratio (50%), a fraction (0.5) or * for whatever is left: e.g. "cuda:0,4gb"'],
    ['bad number: two decimal points', 'cuda:0,1.2.3gb', undefined, AllocationBadNumberError, 10,
      'bad number "1.2.3gb" in entry "cuda:0,1.2.3gb" at character 11: a number has at most one decimal point',
      'write one decimal point, e.g. "cuda:0,1.5gb"'],
    ['bad number: a sign', 'cuda:0,+4gb', undefined, AllocationBadNumberError, 7,
      'bad number "+4gb" in entry "cuda:0,+4gb" at character 8: an amount takes no sign',
      'write "cuda:0,4gb"'],
    ['bad number: too large', 'cpu,99999999tb', undefined, AllocationBadNumberError, 4,
      'bad number "99999999tb" in entry "cpu,99999999tb" at character 5: too large',
      'write a smaller number, e.g. "cpu,8000tb"'],
    ['bad number: entries separated by commas', 'cuda:0,4gb,cpu,*', undefined, AllocationBadNumberError, 10,
      'unexpected "," after the amount "4gb" in entry "cuda:0,4gb,cpu,*" at character 11',
      'separate entries with ";": "cuda:0,4gb;cpu,*"'],
    ['bad number: junk after the amount', 'cuda:0,4gb x', undefined, AllocationBadNumberError, 11,
      'unexpected "x" after the amount "4gb" in entry "cuda:0,4gb x" at character 12',
      'write "cuda:0,4gb"'],
    ['unknown unit', 'cuda:0,4zb;cpu,*', undefined, AllocationUnknownUnitError, 8,
      'unknown unit "zb" in entry "cuda:0,4zb" at character 9',
      'units are b, k, kb, kib, m, mb, mib, g, gb, gib, t, tb, tib (1024-based): e.g. "cuda:0,4gb"'],
    ['mixed modes: bytes then fraction', 'cuda:0,4gb;cpu,0.5', undefined, AllocationMixedModesError, 15,
      'mixed modes: entry "cpu,0.5" (fraction) at character 16 follows entry "cuda:0,4gb" (bytes) at character 8',
      'one string uses one mode, and "cuda:0,4gb" made it bytes: write "cpu,4gb" or "cpu,*" for whatever is left'],
    ['mixed modes: ratio then bytes', 'cuda:0,25%;cuda:1,3gb', undefined, AllocationMixedModesError, 18,
      'mixed modes: entry "cuda:1,3gb" (bytes) at character 19 follows entry "cuda:0,25%" (ratio) at character 8',
      'one string uses one mode, and "cuda:0,25%" made it ratio: write "cuda:1,50%" or "cuda:1,*" for whatever is left'],
    ['duplicate device through an alias', 'cuda:0,4gb;gpu:0,1gb', undefined, AllocationDuplicateDeviceError, 11,
      'duplicate device gpu:0: entry "gpu:0,1gb" at character 12 repeats entry "cuda:0,4gb" at character 1',
      'list each device once: merge the two into "cuda:0,5gb"'],
    ['duplicate device, amounts that do not add up', 'cpu,*;CPU,10%', undefined, AllocationDuplicateDeviceError, 6,
      'duplicate device cpu: entry "CPU,10%" at character 7 repeats entry "cpu,*" at character 1',
      'list each device once: "cpu,*"'],
    ['duplicate device: mps and gpu:0', 'mps,30%;xpu:1,20%;gpu:0,20%', undefined, AllocationDuplicateDeviceError, 18,
      'duplicate device gpu:0: entry "gpu:0,20%" at character 19 repeats entry "mps,30%" at character 1',
      'list each device once: merge the two into "mps,50%"'],
    ['two wildcards', 'cuda:0,*;cpu,*', undefined, AllocationTwoWildcardsError, 13,
      'two wildcards: entry "cpu,*" at character 14 and entry "cuda:0,*" at character 8 both take what is left',
      'only one device can take whatever is left: give cpu an amount, e.g. "cpu,4gb"'],
    ['all-zero ratios', 'cuda:0,0%;cpu,0%', undefined, AllocationAllZeroRatiosError, 7,
      'every ratio is 0% in "cuda:0,0%;cpu,0%" at character 8: no device gets a share',
      'give a device a share above 0%, or let one take whatever is left: "cuda:0,0%;cpu,*"'],
    ['ratios above 100% with a wildcard', 'cuda:0,80%;cpu,30%;gpu:1,*', undefined, AllocationRatioOverflowError, 25,
      'ratios add up to 110% before the wildcard in entry "gpu:1,*" at character 26: it would get -10%',
      'with "*" the wildcard gets 100% minus the others: make the others add up to 100% or less, or give gpu:1 a share ' +
      'instead of "*" (shares without "*" are normalised by their sum), e.g. "gpu:1,10%"'],
    ['fraction above 1 for a GPU', 'cuda:0,1.5', undefined, AllocationFractionAboveOneError, 7,
      'fraction 1.5 is above 1 for gpu:0 in entry "cuda:0,1.5" at character 8',
      'a fraction is a share of the GPU\'s capacity, at most 1: write "cuda:0,1" for all of it'],
    ['empty entry in the middle', 'cuda:0,4gb;;cpu,*', undefined, AllocationEmptyEntryError, 11,
      'empty entry in "cuda:0,4gb;;cpu,*" at character 12',
      'remove the extra ";": "cuda:0,4gb;cpu,*"'],
    ['empty entry first', ';cpu,*', undefined, AllocationEmptyEntryError, 0,
      'empty entry in ";cpu,*" at character 1',
      'remove the extra ";": "cpu,*"'],
    ['blank entry before a trailing separator', 'cpu,*; ;', undefined, AllocationEmptyEntryError, 6,
      'empty entry in "cpu,*; ;" at character 7',
      'remove the extra ";": "cpu,*;"'],
  ];

  it.each(cases)('%s: %j', (_name, text, options, type, position, firstLine, hint) => {
    const error = thrown(() => parseAllocation(text, options));
    expect(error).toBeInstanceOf(type);
    expect(error).toBeInstanceOf(MultiGpuError);
    expect(error.code).toBe(CODES.get(type));
    expect(error.name).toBe((type as { name: string }).name);
    expect(error.position).toBe(position);
    expect(error.text).toBe(text);
    expect(error.message.split('\n')[0]).toBe(firstLine);
    expect(error.problem).toBe(firstLine);
    expect(error.hint).toBe(hint);
    expect(error.message.endsWith(`\n  hint: ${hint}`)).toBe(true);
  });

  it('every error class has its own code, and the cases above cover every class', () => {
    expect(new Set(CODES.values()).size).toBe(CODES.size);
    expect(new Set(cases.map((c) => c[3]))).toEqual(new Set(CODES.keys()));
  });

  it('shows the string with a caret under the problem', () => {
    const error = thrown(() => parseAllocation('cuda:0,4zb;cpu,*'));
    expect(error.message).toBe([
      'unknown unit "zb" in entry "cuda:0,4zb" at character 9',
      '  cuda:0,4zb;cpu,*',
      '          ^',
      '  hint: units are b, k, kb, kib, m, mb, mib, g, gb, gib, t, tb, tib (1024-based): e.g. "cuda:0,4gb"',
    ].join('\n'));
    expect(error.entry).toBe('cuda:0,4zb');
  });

  it('cuts a long string to a window around the caret, and shows control characters as spaces', () => {
    const text = `${Array.from({ length: 12 }, (_, i) => `gpu:${i},1gb`).join(';')};cpu,4zb`;
    const error = thrown(() => parseAllocation(text));
    const [, shown, caret] = error.message.split('\n') as [string, string, string];
    expect(shown.startsWith('  …')).toBe(true);
    expect(shown[caret.indexOf('^')]).toBe('z');
    const tabbed = thrown(() => parseAllocation('\tcpu,\t4zb'));
    expect(tabbed.message.split('\n').slice(1, 3)).toEqual(['   cpu, 4zb', '         ^']);
  });

  it('names both places for mixed modes, duplicates and two wildcards', () => {
    const mixed = thrown(() => parseAllocation('cuda:0,4gb;cpu,0.5')) as AllocationMixedModesError;
    expect([mixed.mode, mixed.first]).toEqual(['fraction', { entry: 'cuda:0,4gb', position: 7, mode: 'bytes' }]);
    const dup = thrown(() => parseAllocation('cuda:0,4gb;gpu:0,1gb')) as AllocationDuplicateDeviceError;
    expect([dup.device, dup.first, dup.entry]).toEqual(['gpu:0', { entry: 'cuda:0,4gb', position: 0 }, 'gpu:0,1gb']);
    const two = thrown(() => parseAllocation('cuda:0,*;cpu,*')) as AllocationTwoWildcardsError;
    expect(two.first).toEqual({ entry: 'cuda:0,*', position: 7 });
  });

  it('bad numbers say why in `reason`', () => {
    const reasons = ['cpu,1,5gb', 'cpu,-1', 'cpu,1e3', 'cpu,', 'cpu,%', 'cpu,1..2', 'cpu,+1', 'cpu,1gb2']
      .map((text) => (thrown(() => parseAllocation(text)) as AllocationBadNumberError).reason);
    expect(reasons).toEqual(['decimal-comma', 'negative', 'exponent', 'empty', 'no-digits', 'two-points', 'sign', 'unexpected']);
  });
});

describe('deliberate differences from DisTorch2 (each a defect there)', () => {
  it('.5gb parses (to half a GiB)', () => {
    expect(shape(parseAllocation('cuda:0,.5gb;cpu,*'))).toEqual([['gpu:0', bytes(512 * MiB)], ['cpu', WILD]]);
  });

  it('tb means terabytes, not bytes', () => {
    expect(shape(parseAllocation('cpu,2tb'))).toEqual([['cpu', bytes(2 * TiB)]]);
    expect(shape(parseAllocation('cpu,2TB'))).toEqual([['cpu', bytes(2199023255552)]]);
  });

  it('1,5gb is an error, not 1 byte', () => {
    const error = thrown(() => parseAllocation('cuda:0,1,5gb;cpu,*'));
    expect(error).toBeInstanceOf(AllocationBadNumberError);
    expect(error.hint).toBe('write "cuda:0,1.5gb"');
  });

  it.each([
    ['directml:0,0.5;cpu,0.5', 'fraction'],
    ['gpu:0,0.5;cpu,0.5', 'fraction'],
    ['mlu:0,0.25;mlu:1,0.25', 'fraction'],
    ['mps,0.5', 'fraction'],
    ['mlu:0,25%;cpu,75%', 'ratio'],
    ['directml:1,10%;gpu:0,*', 'ratio'],
  ])('a device name containing g/m/k/b does not switch the mode: %s is %s mode', (text, mode) => {
    expect(parseAllocation(text).mode).toBe(mode);
  });

  it('duplicates are an error, not silently counted twice', () => {
    expect(() => parseAllocation('cuda:0,1gb;cuda:0,1gb;cpu,*')).toThrow(AllocationDuplicateDeviceError);
    expect(() => parseAllocation('cuda:1,10%;gpu:1,10%')).toThrow(AllocationDuplicateDeviceError);
    expect(() => parseAllocation('cpu,0.5;CPU,0.5')).toThrow(AllocationDuplicateDeviceError);
  });

  it('* works in ratio mode: the wildcard gets what is left', () => {
    const parsed = parseAllocation('cuda:0,60%;cuda:1,30%;cpu,*');
    expect(parsed.mode).toBe('ratio');
    expect(parsed.wildcard).toBe('cpu');
    expect(shape(parsed)).toEqual([['gpu:0', ratio(60)], ['gpu:1', ratio(30)], ['cpu', WILD]]);
  });

  it('unknown devices give a clear error', () => {
    const error = thrown(() => parseAllocation('rocm:0,4gb;cpu,*'));
    expect(error).toBeInstanceOf(AllocationUnknownDeviceError);
    expect(error.problem).toBe('unknown device "rocm:0" in entry "rocm:0,4gb" at character 1');
    expect(error.hint).toBe(`did you mean "gpu:0,4gb"? ${DEVICE_LIST}`);
  });
});

describe('parseDonors (simple mode)', () => {
  it.each<[string, string[]]>([
    ['', []],
    ['  ', []],
    ['cpu', ['cpu']],
    ['gpu:1,cpu', ['gpu:1', 'cpu']],
    [' CUDA : 1 , Cpu ', ['gpu:1', 'cpu']],
    ['cpu,mps,xpu:2,', ['cpu', 'gpu:0', 'gpu:2']],
  ])('%j → %j', (text, donors) => {
    expect(parseDonors(text)).toEqual(donors);
  });

  it.each<[string, ParseAllocationOptions | undefined, Function, number, string, string]>([
    ['gpu:1,tpu:0', undefined, AllocationUnknownDeviceError, 6,
      'unknown device "tpu:0" in entry "tpu:0" at character 7', `did you mean "gpu:0"? ${DEVICE_LIST}`],
    ['gpu:1;cpu', undefined, AllocationUnknownDeviceError, 0,
      'unknown device "gpu:1;cpu" in entry "gpu:1;cpu" at character 1', 'separate donors with ",": "gpu:1,cpu"'],
    ['cpu,4gb', undefined, AllocationUnknownDeviceError, 4,
      'unknown device "4gb" in entry "4gb" at character 5', 'donors take no amounts (the bytes to move are virtualVram): "cpu"'],
    ['cuda:1,gpu:1', undefined, AllocationDuplicateDeviceError, 7,
      'duplicate device gpu:1: entry "gpu:1" at character 8 repeats entry "cuda:1" at character 1', 'list each donor once: "cuda:1"'],
    ['gpu:3', { devices: ['gpu:0', 'cpu'] }, AllocationDeviceNotPresentError, 0,
      'device gpu:3 is not present on this machine, in entry "gpu:3" at character 1',
      'this machine has gpu:0, cpu (see `multigpu devices`): use one of those, e.g. "gpu:0"'],
    ['gpu:1,,cpu', undefined, AllocationEmptyEntryError, 6,
      'empty entry in "gpu:1,,cpu" at character 7', 'remove the extra ",": "gpu:1,cpu"'],
  ])('%j is a typed error', (text, options, type, position, firstLine, hint) => {
    const error = thrown(() => parseDonors(text, options));
    expect(error).toBeInstanceOf(type);
    expect(error.code).toBe(CODES.get(type));
    expect(error.position).toBe(position);
    expect(error.problem).toBe(firstLine);
    expect(error.hint).toBe(hint);
  });
});

// ---------------------------------------------------------------------------------------
// Property tests. `runs` counts every generated string the parser was given.

let runs = 0;
/** How the generated strings came out: parsed, or thrown with which code. */
const outcomes = new Map<string, number>();
const tally = (key: string) => outcomes.set(key, (outcomes.get(key) ?? 0) + 1);

type Mode = 'bytes' | 'ratio' | 'fraction';
interface GenEntry { device: string; spelled: string; amountText: string; expected: AllocationAmount; ignored: boolean }
interface GenAllocation { text: string; mode: Mode; entries: GenEntry[]; wildcard: string | null; devices: string[] }

const pad = fc.constantFrom('', '', '', ' ', '  ', '\t');
const mixCase = (text: string, mask: number): string =>
  [...text].map((ch, i) => ((mask >> (i % 30)) & 1 ? ch.toUpperCase() : ch)).join('');

/** A device name spelled any way the grammar allows: any alias, case, spaces around ":". */
const spelledDevice = (device: string) => fc.tuple(fc.nat(), fc.nat(), pad, pad).map(([pick, mask, a, b]) => {
  if (device === 'cpu') return mixCase('cpu', mask);
  const index = Number(device.slice(4));
  const names = ['gpu', 'cuda', 'xpu', 'directml', 'mlu', 'npu', ...(index === 0 ? ['mps'] : [])];
  const name = names[pick % names.length]!;
  return name === 'mps' ? mixCase('mps', mask) : `${mixCase(name, mask)}${a}:${b}${index}`;
});

/** A number as text: "12", "12.5", "12.", ".5", "0.5", with `int` at most `maxInt`. */
const numberText = (maxInt: number) => fc.tuple(fc.nat(maxInt), fc.option(fc.stringMatching(/^\d{0,3}$/)), fc.boolean())
  .map(([int, decimals, dropZero]) => {
    if (decimals === null) return String(int);
    if (int === 0 && dropZero && decimals !== '') return `.${decimals}`;
    return `${int}.${decimals}`;
  });

const unitArb = fc.tuple(fc.constantFrom(...Object.keys(BYTE_UNITS)), fc.nat()).map(([unit, mask]) => ({ unit, spelled: mixCase(unit, mask) }));

/** A fraction for a GPU: 0 to 1 in any spelling. */
const gpuFraction = fc.tuple(fc.nat(1000), fc.boolean(), fc.boolean()).map(([k, dropZero, long]) => {
  if (k === 1000) return long ? '1.0' : '1';
  const text = `0.${String(k).padStart(3, '0')}`.replace(/0+$/, '').replace(/\.$/, long ? '.0' : '');
  return dropZero && text.startsWith('0.') ? text.slice(1) : text;
});

function amountArb(mode: Mode, device: string, entries: number, withWildcard: boolean) {
  const p = fc.tuple(pad, pad);
  switch (mode) {
    case 'bytes':
      return fc.tuple(numberText(4096), unitArb, p).map(([n, u, [a]]) => ({
        text: `${n}${a}${u.spelled}`, expected: bytes(Math.floor(Number(n) * BYTE_UNITS[u.unit]!)),
      }));
    case 'ratio':
      // With "*", every share stays below 100/entries so the wildcard's rest is never negative.
      return fc.tuple(numberText(withWildcard ? Math.max(0, Math.floor(100 / entries) - 1) : 150), p).map(([n, [a]]) => ({
        text: `${n}${a}%`, expected: ratio(Number(n)),
      }));
    case 'fraction':
      return (device === 'cpu' ? numberText(1) : gpuFraction).map((n) => ({ text: n, expected: fraction(Number(n)) }));
  }
}

function wildcardArb(mode: Mode) {
  const seedForm = mode === 'bytes'
    ? fc.tuple(numberText(64), unitArb, pad).map(([n, u, a]) => `${n}${u.spelled}${a}*`)
    : mode === 'ratio' ? fc.tuple(numberText(100), pad).map(([n, a]) => `${n}%${a}*`)
      : fc.tuple(gpuFraction, pad).map(([n, a]) => `${n}${a}*`);
  return fc.oneof({ arbitrary: fc.constant('*'), weight: 3 }, { arbitrary: seedForm, weight: 1 });
}

const DEVICE_POOL = ['cpu', ...Array.from({ length: 16 }, (_, i) => `gpu:${i}`)];

/** A well-formed allocation string and the entries it must parse to. */
const allocationArb: fc.Arbitrary<GenAllocation> = fc.record({
  devices: fc.uniqueArray(fc.constantFrom(...DEVICE_POOL), { minLength: 1, maxLength: 6 }),
  mode: fc.constantFrom<Mode>('bytes', 'ratio', 'fraction'),
  wildcardAt: fc.option(fc.nat(), { freq: 2 }),
  trailing: fc.constantFrom('', '', ';', ' ; ', ';  '),
}).chain(({ devices, mode, wildcardAt, trailing }) => {
  const wild = wildcardAt === null ? -1 : wildcardAt % devices.length;
  const entries = devices.map((device, i) => fc.record({
    spelled: spelledDevice(device),
    amount: i === wild ? wildcardArb(mode).map((text) => ({ text, expected: WILD })) : amountArb(mode, device, devices.length, wild >= 0),
    pads: fc.array(pad, { minLength: 4, maxLength: 4 }),
  }).map(({ spelled, amount, pads }): GenEntry & { piece: string } => ({
    device, spelled, amountText: amount.text, expected: amount.expected, ignored: amount.text !== '*' && i === wild,
    piece: `${pads[0]}${spelled}${pads[1]},${pads[2]}${amount.text}${pads[3]}`,
  })));
  return fc.tuple(...entries).map((list) => {
    // Ratio mode without "*" needs a share above 0%: make the last one 10% if all are 0.
    if (mode === 'ratio' && wild < 0 && list.every((e) => e.expected.kind === 'ratio' && e.expected.percent === 0)) {
      const last = list[list.length - 1]!;
      last.amountText = '10%';
      last.expected = ratio(10);
      last.piece = `${last.spelled},10%`;
    }
    return {
      text: list.map((e) => e.piece).join(';') + trailing,
      mode,
      entries: list,
      wildcard: wild >= 0 ? devices[wild]! : null,
      devices,
    };
  });
});

/** What every parse must satisfy, whatever the input: a sane result or a well-formed AllocationError. */
function checkAnyInput(text: string, options?: ParseAllocationOptions): ParsedAllocation | AllocationError {
  runs++;
  const outcome = attempt(() => parseAllocation(text, options));
  // Deterministic: the same input gives the same result or the same error.
  const again = attempt(() => parseAllocation(text, options));
  tally(outcome instanceof Error ? outcome.code : 'parsed');
  if (outcome instanceof Error) {
    expect(again).toBeInstanceOf(outcome.constructor);
    expect((again as Error).message).toBe(outcome.message);
    checkError(outcome, text);
  } else {
    expect(again).toEqual(outcome);
    checkResult(outcome, text, options);
  }
  return outcome;
}

function attempt<T>(parse: () => T): T | AllocationError {
  try {
    return parse();
  } catch (error) {
    if (!(error instanceof AllocationError)) throw error; // fails the property
    return error;
  }
}

function checkError(error: AllocationError, text: string): void {
  expect(CODES.get(error.constructor)).toBe(error.code);
  expect(Number.isInteger(error.position)).toBe(true);
  expect(error.position).toBeGreaterThanOrEqual(0);
  expect(error.position).toBeLessThanOrEqual(text.length);
  expect(error.text).toBe(text);
  const lines = error.message.split('\n');
  expect(lines[0]).toBe(error.problem);
  expect(error.problem).toContain(`at character ${error.position + 1}`);
  expect(error.hint).toBeTruthy();
  expect(lines[lines.length - 1]).toBe(`  hint: ${error.hint}`);
  if (text.length <= 100) expect(lines[2]).toBe(`  ${' '.repeat(error.position)}^`);
}

function checkResult(parsed: ParsedAllocation, text: string, options?: ParseAllocationOptions): void {
  expect(parsed.text).toBe(text);
  if (text.trim() === '') {
    expect(parsed).toEqual({ text, mode: 'simple', entries: [], wildcard: null, warnings: [] });
    return;
  }
  expect(['bytes', 'ratio', 'fraction']).toContain(parsed.mode);
  expect(parsed.entries.length).toBeGreaterThan(0);
  const devices = parsed.entries.map((e) => e.device);
  expect(new Set(devices).size).toBe(devices.length);
  const wildcards = parsed.entries.filter((e) => e.amount.kind === 'wildcard');
  expect(wildcards.length).toBeLessThanOrEqual(1);
  expect(parsed.wildcard).toBe(wildcards[0]?.device ?? null);
  for (const e of parsed.entries) {
    expect(e.device).toMatch(/^(cpu|gpu:\d+)$/);
    if (options?.devices) expect(options.devices).toContain(e.device);
    expect(text.slice(e.position, e.position + e.written.length)).toBe(e.written);
    expect(e.written).toBe(e.written.trim());
    if (e.amount.kind !== 'wildcard') expect(e.amount.kind).toBe(parsed.mode);
    if (e.amount.kind === 'bytes') expect(Number.isSafeInteger(e.amount.bytes) && e.amount.bytes >= 0).toBe(true);
    if (e.amount.kind === 'ratio') expect(Number.isFinite(e.amount.percent) && e.amount.percent >= 0).toBe(true);
    if (e.amount.kind === 'fraction') {
      expect(Number.isFinite(e.amount.value) && e.amount.value >= 0).toBe(true);
      if (e.device !== 'cpu') expect(e.amount.value).toBeLessThanOrEqual(1);
    }
  }
  if (parsed.mode === 'ratio') {
    const total = parsed.entries.reduce((sum, e) => sum + (e.amount.kind === 'ratio' ? e.amount.percent : 0), 0);
    if (parsed.wildcard === null) expect(total).toBeGreaterThan(0);
    else expect(total).toBeLessThanOrEqual(100 + 1e-9);
  }
}

/** Random edits of a valid string: the near misses a user types. */
const EDIT_CHARS = [...',;.%*: -+e0159gbmkKtiB\tcpuxdal_/='];
const editsArb = fc.array(fc.record({
  op: fc.constantFrom('delete', 'insert', 'replace', 'duplicate', 'swap', 'repeat-entry', 'wildcard', 'zero', 'amount'),
  at: fc.nat(),
  ch: fc.constantFrom(...EDIT_CHARS),
  length: fc.integer({ min: 1, max: 12 }),
}), { minLength: 1, maxLength: 3 });

const AMOUNTS = ['4gb', '50%', '0.5', '1.5', '0%', '*', '2tb*'];

function applyEdits(text: string, edits: { op: string; at: number; ch: string; length: number }[]): string {
  let t = text;
  for (const { op, at, ch, length } of edits) {
    const i = at % (t.length + 1);
    // Edits of whole entries: the semantic mistakes (a device twice, two "*", zero shares, mixed modes).
    const pieces = t.split(';');
    const k = at % pieces.length;
    const piece = pieces[k]!;
    const comma = piece.indexOf(',');
    const withAmount = (amount: string) => (comma < 0 ? piece : `${piece.slice(0, comma + 1)}${amount}`);
    if (op === 'repeat-entry') t = [...pieces, piece].join(';');
    else if (op === 'wildcard') t = pieces.map((p, j) => (j === k ? withAmount('*') : p)).join(';');
    else if (op === 'zero') t = t.replace(/[\d.]+(\s*%)/g, '0$1');
    else if (op === 'amount') t = pieces.map((p, j) => (j === k ? withAmount(AMOUNTS[length % AMOUNTS.length]!) : p)).join(';');
    else if (op === 'delete') t = t.slice(0, i) + t.slice(i + 1);
    else if (op === 'insert') t = t.slice(0, i) + ch + t.slice(i);
    else if (op === 'replace') t = t.slice(0, i) + ch + t.slice(i + 1);
    else if (op === 'duplicate') t = t.slice(0, i + length) + t.slice(i, i + length) + t.slice(i + length);
    else t = t.slice(0, i) + t.slice(i + 1, i + 2) + t.slice(i, i + 1) + t.slice(i + 2);
  }
  return t;
}

describe('property tests (fast-check)', () => {
  let started = 0;
  beforeAll(() => {
    started = performance.now();
  });

  it('a generated allocation parses to exactly the entries it was built from, whatever the spacing and case', () => {
    fc.assert(fc.property(allocationArb, fc.boolean(), (gen, declare) => {
      const options = declare ? { devices: [...gen.devices, 'gpu:15'] } : undefined;
      const parsed = checkAnyInput(gen.text, options);
      if (parsed instanceof Error) throw parsed;
      expect(shape(parsed)).toEqual(gen.entries.map((e) => [e.device, e.expected]));
      const allWild = gen.entries.every((e) => e.expected.kind === 'wildcard');
      expect(parsed.mode).toBe(allWild && gen.entries[0]!.amountText === '*' ? 'bytes' : gen.mode);
      expect(parsed.wildcard).toBe(gen.wildcard);
      expect(parsed.warnings.some((w) => w.includes('before "*" is ignored'))).toBe(gen.entries.some((e) => e.ignored));
      // The same entries come out of the plain canonical spelling of the same allocation.
      const plain = gen.entries.map((e) => `${e.device},${e.amountText.replace(/\s+/g, '').toLowerCase()}`).join(';');
      expect(shape(parseAllocation(plain))).toEqual(shape(parsed));
    }), { numRuns: 4000 });
  });

  it('near misses (random edits of valid strings) parse sanely or throw a well-formed AllocationError', () => {
    fc.assert(fc.property(allocationArb, editsArb, fc.boolean(), (gen, edits, declare) => {
      checkAnyInput(applyEdits(gen.text, edits), declare ? { devices: gen.devices.slice(0, -1) } : undefined);
    }), { numRuns: 4000 });
  });

  it('arbitrary strings parse sanely or throw a well-formed AllocationError', () => {
    const grammarish = fc.string({ unit: fc.constantFrom(...'cudagpmslx:0123456789.,;%* \tbkKGTie-'), maxLength: 40 });
    fc.assert(fc.property(fc.oneof(grammarish, fc.string({ maxLength: 40 }), fc.string({ unit: 'binary', maxLength: 40 })), (text) => {
      checkAnyInput(text);
    }), { numRuns: 3000 });
  });

  it('donor lists: generated ones parse to their devices; anything else throws an AllocationError', () => {
    const donorsArb = fc.uniqueArray(fc.constantFrom(...DEVICE_POOL), { minLength: 1, maxLength: 5 })
      .chain((devices) => fc.tuple(fc.constant(devices), fc.tuple(...devices.map(spelledDevice)), fc.array(pad, { minLength: 2, maxLength: 2 })));
    fc.assert(fc.property(donorsArb, editsArb, fc.boolean(), ([devices, spelled, [a, b]], edits, edit) => {
      runs++;
      const text = spelled.map((s) => `${a}${s}${b}`).join(',');
      if (!edit) {
        expect(parseDonors(text)).toEqual(devices);
        return;
      }
      const outcome = attempt(() => parseDonors(applyEdits(text, edits)));
      if (outcome instanceof AllocationError) checkError(outcome, applyEdits(text, edits));
      else expect(outcome.every((d) => /^(cpu|gpu:\d+)$/.test(d))).toBe(true);
    }), { numRuns: 1000 });
  });

  it('ran at least 10,000 generated strings', () => {
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    console.log(`allocation grammar: ${runs} generated strings parsed in ${seconds} s`);
    console.log(`  outcomes: ${[...outcomes].sort((a, b) => b[1] - a[1]).map(([k, n]) => `${k} ${n}`).join(', ')}`);
    expect(runs).toBeGreaterThanOrEqual(10_000);
    // The near misses reach every error class, not just one or two.
    for (const code of CODES.values()) expect(outcomes.get(code) ?? 0, code).toBeGreaterThan(0);
  });
});
