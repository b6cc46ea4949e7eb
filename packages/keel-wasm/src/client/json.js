// JSON rendering of application values with the client protocol's compatibility escapes
// (actors.md §4.8), mirroring src/value/json.cc:
//
//   bigint (and integers beyond ±2^53)  → ["$BigInt", "<decimal>"]
//   Uint8Array / other views            → ["$Uint8Array", "<base64>"]
//   ArrayBuffer                         → ["$ArrayBuffer", "<base64>"]
//   undefined (inside arrays and maps)  → ["$Undefined"]
//   a two-element array whose first element is a string starting with '$' gets one more '$'
//
// Strings are written as the C++ printer writes them: only '"', '\', the control characters
// and DEL are escaped, everything else is raw UTF-8 (lone surrogates become U+FFFD).
// Non-finite numbers are null. Maps (JS Map) with non-text keys render each key as its JSON
// text. Reading undoes the escapes; `$BigInt` always reads as a bigint.

const MAX_EXACT = 2 ** 53;

export class JsonError extends Error {
  constructor(message) {
    super(message);
    this.name = "JsonError";
  }
}

// ---- base64 (standard alphabet, padded), dependency-free ----
const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

function base64With(bytes, alphabet, pad) {
  let out = "";
  let i = 0;
  for (; i + 3 <= bytes.length; i += 3) {
    const v = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    out += alphabet[(v >> 18) & 63] + alphabet[(v >> 12) & 63] + alphabet[(v >> 6) & 63] + alphabet[v & 63];
  }
  const rest = bytes.length - i;
  if (rest === 1) {
    const v = bytes[i] << 16;
    out += alphabet[(v >> 18) & 63] + alphabet[(v >> 12) & 63] + (pad ? "==" : "");
  } else if (rest === 2) {
    const v = (bytes[i] << 16) | (bytes[i + 1] << 8);
    out += alphabet[(v >> 18) & 63] + alphabet[(v >> 12) & 63] + alphabet[(v >> 6) & 63] + (pad ? "=" : "");
  }
  return out;
}

/** Standard base64 with padding (REST `input`, JSON byte escapes). */
export function base64Encode(bytes) {
  return base64With(bytes, B64, true);
}
/** base64url without padding (the gateway's `rvt-input`). */
export function base64UrlEncode(bytes) {
  return base64With(bytes, B64URL, false);
}
/** Decodes standard or url-safe base64, padded or not. Throws JsonError when invalid. */
export function base64Decode(text) {
  const clean = text.replace(/=+$/, "");
  if (clean.length % 4 === 1) throw new JsonError("invalid base64 in escape");
  const out = new Uint8Array(Math.floor((clean.length * 3) / 4));
  let acc = 0;
  let bits = 0;
  let n = 0;
  for (const c of clean) {
    let v = B64.indexOf(c);
    if (v < 0) v = B64URL.indexOf(c);
    if (v < 0) throw new JsonError("invalid base64 in escape");
    acc = ((acc << 6) | v) & 0xffffff;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      out[n++] = (acc >> bits) & 0xff;
    }
  }
  return out.subarray(0, n);
}

// ---- writing ----

function isPlainObject(v) {
  const proto = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/** A JSON string literal, escaped as the C++ printer does. */
export function quote(s) {
  let out = '"';
  let start = 0;
  for (let i = 0; i < s.length; ++i) {
    const c = s.charCodeAt(i);
    let esc = null;
    if (c === 0x22) esc = '\\"';
    else if (c === 0x5c) esc = "\\\\";
    else if (c === 0x08) esc = "\\b";
    else if (c === 0x0c) esc = "\\f";
    else if (c === 0x0a) esc = "\\n";
    else if (c === 0x0d) esc = "\\r";
    else if (c === 0x09) esc = "\\t";
    else if (c < 0x20 || c === 0x7f) esc = "\\u00" + c.toString(16).padStart(2, "0");
    else if (c >= 0xd800 && c <= 0xdfff) {
      // Paired surrogates pass; a lone one becomes U+FFFD (UTF-8 cannot carry it).
      const next = i + 1 < s.length ? s.charCodeAt(i + 1) : 0;
      if (c <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
        ++i;
        continue;
      }
      esc = "\uFFFD";
    }
    if (esc !== null) {
      out += s.slice(start, i) + esc;
      start = i + 1;
    }
  }
  return out + s.slice(start) + '"';
}

function numberText(n) {
  if (!Number.isFinite(n)) return "null";
  if (Number.isInteger(n) && Math.abs(n) > MAX_EXACT) {
    // The C++ printer writes integers beyond 2^53 as $BigInt; a JS number that large is a
    // float on the TypeScript side, so it stays a plain number (JSON.stringify's text).
    return JSON.stringify(n);
  }
  return Object.is(n, -0) ? "-0.0" : String(n);
}

function bytesOf(v) {
  return v instanceof Uint8Array ? v : new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
}

function write(v, depth, inKey) {
  if (depth > 512) throw new JsonError("value nests too deeply to encode");
  switch (typeof v) {
    case "undefined":
      return '["$Undefined"]';
    case "boolean":
      return v ? "true" : "false";
    case "number":
      return numberText(v);
    case "bigint":
      return v >= -BigInt(MAX_EXACT) && v <= BigInt(MAX_EXACT) ? v.toString() : `["$BigInt","${v}"]`;
    case "string":
      return quote(v);
    case "object": {
      if (v === null) return "null";
      if (Array.isArray(v)) {
        const parts = [];
        const escape = v.length === 2 && typeof v[0] === "string" && v[0].startsWith("$");
        for (let i = 0; i < v.length; ++i) {
          parts.push(i === 0 && escape ? quote("$" + v[0]) : write(v[i], depth + 1, inKey));
        }
        return "[" + parts.join(",") + "]";
      }
      if (v instanceof ArrayBuffer) return `["$ArrayBuffer","${base64Encode(new Uint8Array(v))}"]`;
      if (ArrayBuffer.isView(v)) return `["$Uint8Array","${base64Encode(bytesOf(v))}"]`;
      if (v instanceof Map) {
        const parts = [];
        for (const [k, x] of v) {
          let key;
          if (typeof k === "string") key = k;
          else if (inKey && typeof k === "object" && k !== null && (Array.isArray(k) || k instanceof Map || isPlainObject(k))) key = "[object]";
          else key = write(k, depth + 1, true);
          parts.push(quote(key) + ":" + write(x, depth + 1, inKey));
        }
        return "{" + parts.join(",") + "}";
      }
      if (isPlainObject(v)) {
        const parts = [];
        for (const k of Object.keys(v)) parts.push(quote(k) + ":" + write(v[k], depth + 1, inKey));
        return "{" + parts.join(",") + "}";
      }
      throw new TypeError(`cannot encode ${v.constructor?.name ?? "object"} as JSON`);
    }
    default:
      throw new TypeError(`cannot encode a ${typeof v} as JSON`);
  }
}

/** JSON text of an application value, with the compatibility escapes. */
export function stringify(value) {
  return write(value, 0, false);
}

// ---- reading ----

function setProperty(obj, key, value) {
  if (key === "__proto__") {
    Object.defineProperty(obj, key, { value, enumerable: true, writable: true, configurable: true });
  } else {
    obj[key] = value;
  }
}

function parseBigInt(text) {
  if (!/^-?[0-9]{1,20}$/.test(text)) throw new JsonError("invalid $BigInt");
  const n = BigInt(text);
  if (n > (1n << 64n) - 1n || n < -(1n << 63n)) throw new JsonError("$BigInt out of 64-bit range");
  return n;
}

function unescapeArray(items) {
  if (items.length === 0 || typeof items[0] !== "string") return items;
  const tag = items[0];
  if (items.length === 1 && tag === "$Undefined") return undefined;
  if (items.length !== 2 || !tag.startsWith("$")) return items;
  if (tag.length >= 2 && tag[1] === "$") return [tag.slice(1), items[1]];
  if (tag === "$Undefined") return undefined;
  if (typeof items[1] !== "string") throw new JsonError("escape payload is not a string");
  if (tag === "$BigInt") return parseBigInt(items[1]);
  if (tag === "$Uint8Array" || tag === "$ArrayBuffer") return base64Decode(items[1]);
  throw new JsonError(`unknown '$' escape ${tag}`);
}

function revive(v, depth) {
  if (depth > 256) throw new JsonError("nesting too deep");
  if (Array.isArray(v)) {
    const items = v.map((x) => revive(x, depth + 1));
    return unescapeArray(items);
  }
  if (v !== null && typeof v === "object") {
    const out = {};
    for (const k of Object.keys(v)) setProperty(out, k, revive(v[k], depth + 1));
    return out;
  }
  return v;
}

/** Parses JSON text and undoes the escapes. Throws JsonError on malformed input. */
export function parse(text) {
  let raw;
  try {
    raw = JSON.parse(text);
  } catch (e) {
    throw new JsonError(`malformed JSON: ${e.message}`);
  }
  return revive(raw, 0);
}
