// The client protocol's BARE encoding (actors.md §4.7, schemas/client/v1–v3.bare): every
// message is a versioned envelope — u16 little-endian version, then the BARE value. We
// write version 3 and read versions 1–3 (v1's Init carried a connectionToken, dropped on
// read; the queue-send messages exist from v3 on). `Cbor` fields are raw CBOR bytes here;
// wire.js turns them into values.
//
// Primitives as in src/protocol/bare: `uint` is canonical ULEB128 (non-canonical or
// over-long varints are rejected), bool and optional presence bytes are strictly 0/1,
// strings must be valid UTF-8, `u64` is 8 bytes little-endian, and trailing bytes after
// the message are an error. Messages are plain objects:
//
//   ToServer: {tag: "ActionRequest", val: {id, name, args}}
//           | {tag: "SubscriptionRequest", val: {eventName, subscribe}}
//   ToClient: {tag: "Init", val: {actorId, connectionId}}
//           | {tag: "Error", val: {group, code, message, metadata?, actionId?}}
//           | {tag: "ActionResponse", val: {id, output}}
//           | {tag: "Event", val: {name, args}}
//
// Integers (ids, timeout) are numbers, or bigints above 2^53 - 1; `Cbor` fields and
// optional ones are `undefined` when absent.

import { ByteBuffer } from "./buffer.js";

export const PROTOCOL_VERSION = 3;
const OLDEST_VERSION = 1;

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

export class BareError extends Error {
  constructor(message) {
    super(message);
    this.name = "BareError";
  }
}

export class BareWriter extends ByteBuffer {
  constructor() {
    super(128);
  }
  u8(v) {
    this.ensure(1);
    this.buf[this.len++] = v & 0xff;
  }
  u16(v) {
    this.u8(v & 0xff);
    this.u8((v >> 8) & 0xff);
  }
  u64(v) {
    let n = BigInt(v);
    if (n < 0n || n > 0xffffffffffffffffn) throw new RangeError("u64 out of range");
    for (let i = 0; i < 8; ++i) {
      this.u8(Number(n & 0xffn));
      n >>= 8n;
    }
  }
  bool(v) {
    this.u8(v ? 1 : 0);
  }
  // ULEB128, minimal length.
  uint(v) {
    if (typeof v === "number" && Number.isSafeInteger(v) && v >= 0) {
      while (v >= 0x80) {
        this.u8((v % 0x80) | 0x80);
        v = Math.floor(v / 0x80);
      }
      return this.u8(v);
    }
    let n = BigInt(v);
    if (n < 0n || n > 0xffffffffffffffffn) throw new RangeError("uint out of range");
    while (n >= 0x80n) {
      this.u8(Number(n & 0x7fn) | 0x80);
      n >>= 7n;
    }
    this.u8(Number(n));
  }
  raw(bytes) {
    this.append(bytes);
  }
  data(bytes) {
    this.uint(bytes.length);
    this.raw(bytes);
  }
  str(s) {
    this.data(textEncoder.encode(s));
  }
  // optional<T>: presence byte, then T via `fn`.
  optional(v, fn) {
    if (v === undefined || v === null) return this.u8(0);
    this.u8(1);
    fn.call(this, v);
  }
}

export class BareReader {
  constructor(bytes) {
    this.b = bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes);
    this.pos = 0;
  }
  fail(what, at = this.pos) {
    throw new BareError(`${what} at offset ${at}`);
  }
  need(n) {
    if (this.b.length - this.pos < n) this.fail("truncated input");
  }
  u8() {
    this.need(1);
    return this.b[this.pos++];
  }
  u16() {
    this.need(2);
    const v = this.b[this.pos] | (this.b[this.pos + 1] << 8);
    this.pos += 2;
    return v;
  }
  u64() {
    this.need(8);
    let n = 0n;
    for (let i = 7; i >= 0; --i) n = (n << 8n) | BigInt(this.b[this.pos + i]);
    this.pos += 8;
    return n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n;
  }
  bool() {
    const at = this.pos;
    const b = this.u8();
    if (b > 1) this.fail("bool byte above 1", at);
    return b === 1;
  }
  uint() {
    if (this.pos < this.b.length && this.b[this.pos] < 0x80) return this.b[this.pos++];
    const start = this.pos;
    let n = 0n;
    for (let i = 0; i < 10; ++i) {
      const b = this.u8();
      if (i === 9 && b > 1) this.fail("varint overflows 64 bits", start);
      n |= BigInt(b & 0x7f) << BigInt(7 * i);
      if ((b & 0x80) === 0) {
        if (b === 0 && i > 0) this.fail("non-canonical varint", start);
        return n <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(n) : n;
      }
    }
    return this.fail("varint longer than 10 bytes", start);
  }
  length() {
    const at = this.pos;
    const n = this.uint();
    if (typeof n === "bigint" || n > this.b.length - this.pos) this.fail("length exceeds input", at);
    return n;
  }
  data() {
    const n = this.length();
    const out = this.b.slice(this.pos, this.pos + n);
    this.pos += n;
    return out;
  }
  str() {
    const at = this.pos;
    const n = this.length();
    const raw = this.b.subarray(this.pos, this.pos + n);
    this.pos += n;
    try {
      return textDecoder.decode(raw);
    } catch {
      return this.fail("invalid UTF-8", at);
    }
  }
  optional(fn) {
    const at = this.pos;
    const p = this.u8();
    if (p > 1) this.fail("optional byte above 1", at);
    return p === 1 ? fn.call(this) : undefined;
  }
  tag() {
    const at = this.pos;
    const t = this.uint();
    if (typeof t === "bigint" || t > 0xffffffff) this.fail("tag above u32", at);
    return t;
  }
  end() {
    if (this.pos !== this.b.length) this.fail("trailing bytes");
  }
}

// ---- versioned envelope ----

function framed(fn) {
  const w = new BareWriter();
  w.u16(PROTOCOL_VERSION);
  fn(w);
  return w.result();
}

// Reads the version prefix; `minVersion` for messages that only exist from a version on.
function unframe(bytes, what, minVersion = OLDEST_VERSION) {
  const r = new BareReader(bytes);
  if (r.b.length < 2) throw new BareError("versioned payload shorter than 2 bytes");
  const version = r.u16();
  if (version < OLDEST_VERSION || version > PROTOCOL_VERSION) {
    throw new BareError(`invalid version: ${version}`);
  }
  if (version < minVersion) throw new BareError(`${what} requires client protocol v${minVersion}`);
  return [r, version];
}

function finish(r, value) {
  r.end();
  return value;
}

// ---- WebSocket messages ----

const TO_SERVER_TAGS = ["ActionRequest", "SubscriptionRequest"];
const TO_CLIENT_TAGS = ["Init", "Error", "ActionResponse", "Event"];

function unknownTag(union, tag) {
  throw new BareError(`unknown ${union} tag ${tag}`);
}

export function encodeToServer(msg) {
  return framed((w) => {
    const tag = TO_SERVER_TAGS.indexOf(msg.tag);
    if (tag < 0) unknownTag("ToServerBody", msg.tag);
    w.uint(tag);
    const v = msg.val;
    if (msg.tag === "ActionRequest") {
      w.uint(v.id);
      w.str(v.name);
      w.data(v.args);
    } else {
      w.str(v.eventName);
      w.bool(v.subscribe);
    }
  });
}

export function decodeToServer(bytes) {
  const [r] = unframe(bytes, "ToServer");
  const tag = r.tag();
  if (tag === 0) return finish(r, { tag: "ActionRequest", val: { id: r.uint(), name: r.str(), args: r.data() } });
  if (tag === 1) return finish(r, { tag: "SubscriptionRequest", val: { eventName: r.str(), subscribe: r.bool() } });
  return unknownTag("ToServerBody", tag);
}

export function encodeToClient(msg) {
  return framed((w) => {
    const tag = TO_CLIENT_TAGS.indexOf(msg.tag);
    if (tag < 0) unknownTag("ToClientBody", msg.tag);
    w.uint(tag);
    const v = msg.val;
    switch (msg.tag) {
      case "Init":
        w.str(v.actorId);
        w.str(v.connectionId);
        break;
      case "Error":
        w.str(v.group);
        w.str(v.code);
        w.str(v.message);
        w.optional(v.metadata, w.data);
        w.optional(v.actionId, w.uint);
        break;
      case "ActionResponse":
        w.uint(v.id);
        w.data(v.output);
        break;
      default:
        w.str(v.name);
        w.data(v.args);
    }
  });
}

export function decodeToClient(bytes) {
  const [r, version] = unframe(bytes, "ToClient");
  const tag = r.tag();
  switch (tag) {
    case 0: {
      const val = { actorId: r.str(), connectionId: r.str() };
      if (version === 1) r.str();  // v1 connectionToken, unused
      return finish(r, { tag: "Init", val });
    }
    case 1: {
      const val = { group: r.str(), code: r.str(), message: r.str() };
      val.metadata = r.optional(r.data);
      val.actionId = r.optional(r.uint);
      return finish(r, { tag: "Error", val });
    }
    case 2:
      return finish(r, { tag: "ActionResponse", val: { id: r.uint(), output: r.data() } });
    case 3:
      return finish(r, { tag: "Event", val: { name: r.str(), args: r.data() } });
    default:
      return unknownTag("ToClientBody", tag);
  }
}

// ---- HTTP bodies ----

export function encodeHttpActionRequest({ args }) {
  return framed((w) => w.data(args));
}
export function decodeHttpActionRequest(bytes) {
  const [r] = unframe(bytes, "HttpActionRequest");
  return finish(r, { args: r.data() });
}

export function encodeHttpActionResponse({ output }) {
  return framed((w) => w.data(output));
}
export function decodeHttpActionResponse(bytes) {
  const [r] = unframe(bytes, "HttpActionResponse");
  return finish(r, { output: r.data() });
}

export function encodeHttpQueueSendRequest({ body, name, wait, timeout }) {
  return framed((w) => {
    w.data(body);
    w.optional(name, w.str);
    w.optional(wait, w.bool);
    w.optional(timeout, w.u64);
  });
}
export function decodeHttpQueueSendRequest(bytes) {
  const [r] = unframe(bytes, "HttpQueueSendRequest", 3);
  const body = r.data();
  const name = r.optional(r.str);
  const wait = r.optional(r.bool);
  const timeout = r.optional(r.u64);
  return finish(r, { body, name, wait, timeout });
}

export function encodeHttpQueueSendResponse({ status, response }) {
  return framed((w) => {
    w.str(status);
    w.optional(response, w.data);
  });
}
export function decodeHttpQueueSendResponse(bytes) {
  const [r] = unframe(bytes, "HttpQueueSendResponse", 3);
  const status = r.str();
  const response = r.optional(r.data);
  return finish(r, { status, response });
}

export function encodeHttpResponseError({ group, code, message, metadata }) {
  return framed((w) => {
    w.str(group);
    w.str(code);
    w.str(message);
    w.optional(metadata, w.data);
  });
}
export function decodeHttpResponseError(bytes) {
  const [r] = unframe(bytes, "HttpResponseError");
  const val = { group: r.str(), code: r.str(), message: r.str() };
  val.metadata = r.optional(r.data);
  return finish(r, val);
}

export function encodeHttpResolveResponse({ actorId }) {
  return framed((w) => w.str(actorId));
}
export function decodeHttpResolveResponse(bytes) {
  const [r] = unframe(bytes, "HttpResolveResponse");
  return finish(r, { actorId: r.str() });
}
