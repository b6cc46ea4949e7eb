// CBOR (RFC 8949) for the client protocol's application values (actors.md §4.8): what
// action arguments and outputs, event arguments, queue bodies, metadata and creation input
// are on the wire. Mirrors src/value/cbor.cc:
//
//  * encoding is definite-length and shortest-form for heads; non-integer numbers are
//    always float64 (as the C++ encoder), undefined is simple value 23;
//  * decoding is strict and bounded: definite and indefinite lengths, half/single/double
//    floats, tags dropped (bignum tags 2/3 become BigInt), trailing bytes, invalid UTF-8,
//    unknown simple values and depth beyond `maxDepth` are errors.
//
// JS value mapping:
//   undefined ↔ undefined, null ↔ null, boolean ↔ bool,
//   number: integers with |n| <= 2^53 → CBOR integer, other numbers → float64;
//   bigint → CBOR integer (bignum tag 2/3 beyond 64 bits);
//   decoded integers: number when |n| <= 2^53, otherwise bigint;
//   string ↔ text (lone surrogates become U+FFFD, as TextEncoder writes them);
//   Uint8Array (any ArrayBuffer view, or an ArrayBuffer) → bytes → Uint8Array;
//   Array ↔ array; plain object ↔ map with text keys (in property order); Map → map with
//   any keys; a decoded map whose keys are all text is a plain object, otherwise a Map.
// Anything else (functions, symbols, class instances other than the above) is a TypeError.

import { ByteBuffer } from "./buffer.js";

const MAX_EXACT = 2 ** 53;
const U64_MAX = (1n << 64n) - 1n;
const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

export class CborError extends Error {
  constructor(message) {
    super(message);
    this.name = "CborError";
  }
}

class Writer extends ByteBuffer {
  constructor() {
    super(256);
  }
  byte(b) {
    this.ensure(1);
    this.buf[this.len++] = b;
  }
  bytes(u8) {
    this.append(u8);
  }
  // A head: major type + argument (number below 2^53 or bigint up to 2^64-1).
  head(major, arg) {
    const m = major << 5;
    if (typeof arg === "number") {
      if (arg < 24) return this.byte(m | arg);
      if (arg <= 0xff) {
        this.byte(m | 24);
        return this.byte(arg);
      }
      if (arg <= 0xffff) {
        this.ensure(3);
        this.buf[this.len++] = m | 25;
        this.buf[this.len++] = arg >>> 8;
        this.buf[this.len++] = arg & 0xff;
        return;
      }
      if (arg <= 0xffffffff) {
        this.ensure(5);
        this.buf[this.len++] = m | 26;
        this.buf[this.len++] = (arg >>> 24) & 0xff;
        this.buf[this.len++] = (arg >>> 16) & 0xff;
        this.buf[this.len++] = (arg >>> 8) & 0xff;
        this.buf[this.len++] = arg & 0xff;
        return;
      }
      arg = BigInt(arg);
    }
    if (arg <= 0xffffffffn) return this.head(major, Number(arg));
    this.ensure(9);
    this.buf[this.len++] = m | 27;
    for (let i = 7; i >= 0; --i) this.buf[this.len++] = Number((arg >> BigInt(8 * i)) & 0xffn);
  }
  float64(d) {
    this.ensure(9);
    this.buf[this.len++] = 0xfb;
    new DataView(this.buf.buffer, this.buf.byteOffset + this.len, 8).setFloat64(0, d, false);
    this.len += 8;
  }
}

function isPlainObject(v) {
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

function bigintMagnitudeBytes(n) {
  let hex = n.toString(16);
  if (hex.length % 2) hex = "0" + hex;
  const out = new Uint8Array(hex.length / 2);
  for (let i = 0; i < out.length; ++i) out[i] = parseInt(hex.substr(i * 2, 2), 16);
  return out;
}

function encodeBigInt(w, n) {
  if (n >= 0n) {
    if (n <= U64_MAX) return w.head(0, n);
    w.head(6, 2);
    const b = bigintMagnitudeBytes(n);
    w.head(2, b.length);
    return w.bytes(b);
  }
  const m = -1n - n;
  if (m <= U64_MAX) return w.head(1, m);
  w.head(6, 3);
  const b = bigintMagnitudeBytes(m);
  w.head(2, b.length);
  w.bytes(b);
}

function encodeItem(w, v, depth) {
  if (depth > 512) throw new CborError("value nests too deeply to encode");
  switch (typeof v) {
    case "undefined":
      return w.byte(0xf7);
    case "boolean":
      return w.byte(v ? 0xf5 : 0xf4);
    case "number":
      if (Number.isInteger(v) && Math.abs(v) <= MAX_EXACT && !Object.is(v, -0)) {
        return v >= 0 ? w.head(0, v) : w.head(1, -1 - v);
      }
      return w.float64(v);
    case "bigint":
      return encodeBigInt(w, v);
    case "string": {
      const b = textEncoder.encode(v);
      w.head(3, b.length);
      return w.bytes(b);
    }
    case "object": {
      if (v === null) return w.byte(0xf6);
      if (Array.isArray(v)) {
        w.head(4, v.length);
        for (let i = 0; i < v.length; ++i) encodeItem(w, v[i], depth + 1);
        return;
      }
      if (v instanceof Uint8Array || ArrayBuffer.isView(v)) {
        const b = v instanceof Uint8Array ? v : new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
        w.head(2, b.length);
        return w.bytes(b);
      }
      if (v instanceof ArrayBuffer) {
        w.head(2, v.byteLength);
        return w.bytes(new Uint8Array(v));
      }
      if (v instanceof Map) {
        w.head(5, v.size);
        for (const [k, x] of v) {
          encodeItem(w, k, depth + 1);
          encodeItem(w, x, depth + 1);
        }
        return;
      }
      if (isPlainObject(v)) {
        const keys = Object.keys(v);
        w.head(5, keys.length);
        for (const k of keys) {
          encodeItem(w, k, depth + 1);
          encodeItem(w, v[k], depth + 1);
        }
        return;
      }
      throw new TypeError(`cannot encode ${v.constructor?.name ?? "object"} as CBOR`);
    }
    default:
      throw new TypeError(`cannot encode a ${typeof v} as CBOR`);
  }
}

/** Encodes one JS value as CBOR bytes. */
export function encode(value) {
  const w = new Writer();
  encodeItem(w, value, 0);
  return w.result();
}

function halfToNumber(half) {
  const exp = (half >> 10) & 0x1f;
  const mant = half & 0x3ff;
  let val;
  if (exp === 0) val = mant * 2 ** -24;
  else if (exp !== 31) val = (mant + 1024) * 2 ** (exp - 25);
  else val = mant === 0 ? Infinity : NaN;
  return half & 0x8000 ? -val : val;
}

function setProperty(obj, key, value) {
  if (key === "__proto__") {
    Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
  } else {
    obj[key] = value;
  }
}

class Decoder {
  constructor(bytes, { maxDepth = 64, maxItems = 1 << 20 } = {}) {
    this.b = bytes;
    this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    this.pos = 0;
    this.maxDepth = maxDepth;
    this.maxItems = maxItems;
    this.items = 0;
  }
  fail(what, at = this.pos) {
    throw new CborError(`${what} at offset ${at}`);
  }
  remaining() {
    return this.b.length - this.pos;
  }
  // Reads an n-byte big-endian unsigned integer: a number when exact, else a bigint.
  uint(n) {
    if (this.remaining() < n) this.fail("truncated input");
    if (n <= 4) {
      let v = 0;
      for (let i = 0; i < n; ++i) v = v * 256 + this.b[this.pos++];
      return v;
    }
    const v = this.view.getBigUint64(this.pos, false);
    this.pos += 8;
    return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  }
  // Returns [arg, indefinite].
  argument(info) {
    if (info < 24) return [info, false];
    switch (info) {
      case 24:
        return [this.uint(1), false];
      case 25:
        return [this.uint(2), false];
      case 26:
        return [this.uint(4), false];
      case 27:
        return [this.uint(8), false];
      case 31:
        return [0, true];
      default:
        return this.fail("reserved additional information", this.pos - 1);
    }
  }
  countItems(n) {
    if (n > this.maxItems - this.items) this.fail("too many items");
    this.items += Number(n);
  }
  chunk(len) {
    if (typeof len === "bigint" || len > this.remaining()) this.fail("length exceeds input");
    const out = this.b.subarray(this.pos, this.pos + len);
    this.pos += len;
    return out;
  }
  text(bytes, at) {
    try {
      return textDecoder.decode(bytes);
    } catch {
      return this.fail("invalid UTF-8 in text", at);
    }
  }
  string(major, arg, indefinite, headPos) {
    if (!indefinite) {
      const raw = this.chunk(arg);
      return major === 2 ? raw.slice() : this.text(raw, headPos);
    }
    const parts = [];
    let total = 0;
    for (;;) {
      if (this.remaining() === 0) this.fail("truncated input");
      const b = this.b[this.pos];
      if (b === 0xff) {
        ++this.pos;
        break;
      }
      ++this.pos;
      if (b >> 5 !== major) this.fail("bad chunk in indefinite-length string", this.pos - 1);
      const [len, nested] = this.argument(b & 0x1f);
      if (nested) this.fail("nested indefinite-length string");
      const at = this.pos;
      const raw = this.chunk(len);
      if (major === 3) this.text(raw, at);  // each text chunk must be valid on its own
      parts.push(raw);
      total += raw.length;
    }
    const out = new Uint8Array(total);
    let off = 0;
    for (const p of parts) {
      out.set(p, off);
      off += p.length;
    }
    return major === 2 ? out : this.text(out, headPos);
  }
  item(depth) {
    if (depth > this.maxDepth) this.fail("nesting too deep");
    if (this.remaining() === 0) this.fail("truncated input");
    const headPos = this.pos;
    const b = this.b[this.pos++];
    const major = b >> 5;
    const info = b & 0x1f;
    if (major === 7) return this.simple(info);
    const [arg, indefinite] = this.argument(info);
    switch (major) {
      case 0:
        if (indefinite) this.fail("indefinite length on an integer");
        return typeof arg === "number" ? arg : normaliseInt(arg);
      case 1:
        if (indefinite) this.fail("indefinite length on an integer");
        return typeof arg === "number" ? -1 - arg : normaliseInt(-1n - arg);
      case 2:
      case 3:
        return this.string(major, arg, indefinite, headPos);
      case 4:
        return this.array(arg, indefinite, depth);
      case 5:
        return this.map(arg, indefinite, depth);
      default: {
        if (indefinite) this.fail("indefinite length on a tag");
        const inner = this.item(depth + 1);
        if ((arg === 2 || arg === 3) && inner instanceof Uint8Array) {
          let n = 0n;
          for (const x of inner) n = (n << 8n) | BigInt(x);
          return normaliseInt(arg === 2 ? n : -1n - n);
        }
        return inner;
      }
    }
  }
  array(n, indefinite, depth) {
    const items = [];
    if (!indefinite) {
      if (typeof n === "bigint" || n > this.remaining()) this.fail("array length exceeds input");
      this.countItems(n);
      for (let i = 0; i < n; ++i) items.push(this.item(depth + 1));
      return items;
    }
    for (;;) {
      if (this.remaining() === 0) this.fail("truncated input");
      if (this.b[this.pos] === 0xff) {
        ++this.pos;
        return items;
      }
      this.countItems(1);
      items.push(this.item(depth + 1));
    }
  }
  map(n, indefinite, depth) {
    const entries = [];
    const one = () => {
      const k = this.item(depth + 1);
      const v = this.item(depth + 1);
      entries.push([k, v]);
    };
    if (!indefinite) {
      if (typeof n === "bigint" || n > this.remaining() / 2) this.fail("map length exceeds input");
      this.countItems(n);
      for (let i = 0; i < n; ++i) one();
    } else {
      for (;;) {
        if (this.remaining() === 0) this.fail("truncated input");
        if (this.b[this.pos] === 0xff) {
          ++this.pos;
          break;
        }
        this.countItems(1);
        one();
      }
    }
    if (entries.every(([k]) => typeof k === "string")) {
      const obj = {};
      for (const [k, v] of entries) setProperty(obj, k, v);
      return obj;
    }
    return new Map(entries);
  }
  simple(info) {
    switch (info) {
      case 20:
        return false;
      case 21:
        return true;
      case 22:
        return null;
      case 23:
        return undefined;
      case 25:
        return halfToNumber(this.uint(2));
      case 26: {
        if (this.remaining() < 4) this.fail("truncated input");
        const f = this.view.getFloat32(this.pos, false);
        this.pos += 4;
        return f;
      }
      case 27: {
        if (this.remaining() < 8) this.fail("truncated input");
        const d = this.view.getFloat64(this.pos, false);
        this.pos += 8;
        return d;
      }
      case 31:
        return this.fail("unexpected break", this.pos - 1);
      default:
        return this.fail("unsupported simple value", this.pos - 1);
    }
  }
}

function normaliseInt(n) {
  return n >= -BigInt(MAX_EXACT) && n <= BigInt(MAX_EXACT) ? Number(n) : n;
}

/**
 * Decodes exactly one CBOR item from `bytes` (Uint8Array or ArrayBuffer). Throws
 * CborError on malformed input or trailing bytes.
 */
export function decode(bytes, limits) {
  const u8 = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
  const d = new Decoder(u8, limits);
  const v = d.item(0);
  if (d.pos !== u8.length) d.fail("trailing bytes");
  return v;
}
