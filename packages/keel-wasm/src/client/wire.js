// The client protocol's messages (actors.md §4.4–§4.8) in json, cbor and bare, mirroring
// src/wire/client_messages.cc byte for byte:
//
//  * json: text; `{"body":{"tag":"<Variant>","val":{...}}}` for WebSocket messages, plain
//    objects for the HTTP bodies; values inlined with the compatibility escapes (json.js);
//    ids written as ["$BigInt","<n>"], plain numbers accepted; undefined fields omitted.
//  * cbor: the same structure as a CBOR map (fields in the same order); ids as unsigned
//    integers; an absent `actionId` in Error is an explicit null.
//  * bare: versioned BARE (bare.js) whose `Cbor` fields hold the CBOR of the value.
//
// Messages are `{tag, val}` objects (see bare.js) with application values as JS values.
// Decoding never trusts its input: it throws WireError naming the problem. Unknown fields
// are ignored; in json/cbor an optional field that is absent, null or undefined reads as
// absent (undefined), and a missing value field (output, body) reads as undefined.

import * as cbor from "./cbor.js";
import * as json from "./json.js";
import * as bare from "./bare.js";

export const ENCODINGS = ["json", "cbor", "bare"];

export class WireError extends Error {
  constructor(message) {
    super(message);
    this.name = "WireError";
  }
}

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

/** application/json for json, application/octet-stream otherwise. */
export function contentType(encoding) {
  return encoding === "json" ? "application/json" : "application/octet-stream";
}

// ---- writing json/cbor ----
// A field: [key, value, options]; options.absent drops it (cbor: null when nullInCbor),
// options.id writes ["$BigInt","<n>"] in json.

function jsonObject(fields) {
  const parts = [];
  for (const [key, value, o = {}] of fields) {
    if (o.absent || value === undefined) continue;
    parts.push(json.quote(key) + ":" + (o.id ? `["$BigInt","${BigInt(value)}"]` : json.stringify(value)));
  }
  return "{" + parts.join(",") + "}";
}

function cborObject(fields) {
  const out = {};
  for (const [key, value, o = {}] of fields) {
    if (!o.absent) out[key] = o.id ? BigInt(value) : value;
    else if (o.nullInCbor) out[key] = null;
  }
  return out;
}

function encodeObject(fields, encoding) {
  if (encoding === "json") return jsonObject(fields);
  return cbor.encode(cborObject(fields));
}

function encodeEnvelope(tag, fields, encoding) {
  if (encoding === "json") return `{"body":{"tag":${json.quote(tag)},"val":${jsonObject(fields)}}}`;
  return cbor.encode({ body: { tag, val: cborObject(fields) } });
}

// ---- reading json/cbor ----

function asBytes(data) {
  if (typeof data === "string") return textEncoder.encode(data);
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new WireError("message is neither text nor bytes");
}

function asText(data) {
  if (typeof data === "string") return data;
  try {
    return textDecoder.decode(asBytes(data));
  } catch (e) {
    if (e instanceof WireError) throw e;
    throw new WireError("malformed JSON: invalid UTF-8");
  }
}

function parseDocument(data, encoding) {
  if (encoding === "json") {
    try {
      return json.parse(asText(data));
    } catch (e) {
      if (e instanceof WireError) throw e;
      throw new WireError(e.message.startsWith("malformed JSON") ? e.message : `malformed JSON: ${e.message}`);
    }
  }
  try {
    return cbor.decode(asBytes(data), { maxDepth: 64 + 3 });
  } catch (e) {
    throw new WireError(`malformed CBOR: ${e.message}`);
  }
}

function kindName(v) {
  if (v === undefined) return "undefined";
  if (v === null) return "null";
  if (typeof v === "boolean") return "bool";
  if (typeof v === "bigint" || (typeof v === "number" && Number.isInteger(v))) return "integer";
  if (typeof v === "number") return "float";
  if (typeof v === "string") return "text";
  if (v instanceof Uint8Array) return "bytes";
  if (Array.isArray(v)) return "array";
  return "map";
}

function isMap(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v) && !(v instanceof Uint8Array);
}

function get(map, key) {
  if (map instanceof Map) return map.get(key);
  return Object.prototype.hasOwnProperty.call(map, key) ? map[key] : undefined;
}

class InFields {
  constructor(map, where) {
    if (!isMap(map)) throw new WireError(`${where}: expected an object, got ${kindName(map)}`);
    this.map = map;
    this.where = where;
  }
  missing(key) {
    return new WireError(`${this.where}: missing field '${key}'`);
  }
  mismatch(key, expected, got) {
    return new WireError(`${this.where}.${key}: expected ${expected}, got ${kindName(got)}`);
  }
  present(key) {
    const v = get(this.map, key);
    return v === null ? undefined : v;
  }
  text(key) {
    const v = get(this.map, key);
    if (v === undefined) throw this.missing(key);
    if (typeof v !== "string") throw this.mismatch(key, "text", v);
    return v;
  }
  optText(key) {
    const v = this.present(key);
    if (v === undefined) return undefined;
    if (typeof v !== "string") throw this.mismatch(key, "text", v);
    return v;
  }
  bool(key) {
    const v = get(this.map, key);
    if (v === undefined) throw this.missing(key);
    if (typeof v !== "boolean") throw this.mismatch(key, "bool", v);
    return v;
  }
  optBool(key) {
    const v = this.present(key);
    if (v === undefined) return undefined;
    if (typeof v !== "boolean") throw this.mismatch(key, "bool", v);
    return v;
  }
  uintOf(key, v) {
    if (kindName(v) !== "integer") throw this.mismatch(key, "non-negative integer", v);
    if (v < 0) throw new WireError(`${this.where}.${key}: negative integer`);
    if (typeof v === "bigint") {
      if (v > 0xffffffffffffffffn) throw new WireError(`${this.where}.${key}: integer above 2^64-1`);
      return v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
    }
    return v;
  }
  uint(key) {
    const v = get(this.map, key);
    if (v === undefined) throw this.missing(key);
    return this.uintOf(key, v);
  }
  optUint(key) {
    const v = this.present(key);
    return v === undefined ? undefined : this.uintOf(key, v);
  }
  any(key) {
    return get(this.map, key);
  }
  optAny(key) {
    return this.present(key);
  }
  array(key) {
    const v = get(this.map, key);
    if (v === undefined) throw this.missing(key);
    if (!Array.isArray(v)) throw this.mismatch(key, "array", v);
    return v;
  }
}

function openEnvelope(doc) {
  if (!isMap(doc)) throw new WireError(`message: expected an object, got ${kindName(doc)}`);
  const body = get(doc, "body");
  if (body === undefined) throw new WireError("message: missing field 'body'");
  const b = new InFields(body, "body");
  const tag = b.text("tag");
  const val = get(body, "val");
  if (val === undefined) throw new WireError("body: missing field 'val'");
  return [tag, val];
}

// ---- bare helpers ----

function unframed(fn) {
  try {
    return fn();
  } catch (e) {
    if (e instanceof bare.BareError) throw new WireError(`malformed BARE: ${e.message}`);
    throw e;
  }
}

function fromCbor(bytes, where) {
  try {
    return cbor.decode(bytes);
  } catch (e) {
    throw new WireError(`${where}: ${e.message}`);
  }
}

function optFromCbor(bytes, where) {
  return bytes === undefined ? undefined : fromCbor(bytes, where);
}

function arrayFromCbor(bytes, where) {
  const v = fromCbor(bytes, where);
  if (!Array.isArray(v)) throw new WireError(`${where}: expected array, got ${kindName(v)}`);
  return v;
}

function checkArgs(args) {
  if (!Array.isArray(args)) throw new TypeError("args must be an array");
  return args;
}

// ---- per-message fields ----

function fieldsOf(msg) {
  const v = msg.val;
  switch (msg.tag) {
    case "Init":
      return [["actorId", v.actorId], ["connectionId", v.connectionId]];
    case "Error":
      return [
        ["group", v.group],
        ["code", v.code],
        ["message", v.message],
        ["metadata", v.metadata, { absent: v.metadata === undefined }],
        ["actionId", v.actionId, { absent: v.actionId === undefined || v.actionId === null, nullInCbor: true, id: true }],
      ];
    case "ActionResponse":
      return [["id", v.id, { id: true }], ["output", v.output]];
    case "Event":
      return [["name", v.name], ["args", checkArgs(v.args)]];
    case "ActionRequest":
      return [["id", v.id, { id: true }], ["name", v.name], ["args", checkArgs(v.args)]];
    case "SubscriptionRequest":
      return [["eventName", v.eventName], ["subscribe", !!v.subscribe]];
    default:
      throw new TypeError(`unknown message tag ${msg.tag}`);
  }
}

// ---- WebSocket messages ----

/** Client → server message as a text frame (json: string) or bytes. */
export function encodeToServer(msg, encoding) {
  if (msg.tag !== "ActionRequest" && msg.tag !== "SubscriptionRequest") throw new TypeError(`not a ToServer message: ${msg.tag}`);
  if (encoding === "bare") {
    const v = msg.val;
    if (msg.tag === "ActionRequest") {
      return bare.encodeToServer({ tag: msg.tag, val: { id: v.id, name: v.name, args: cbor.encode(checkArgs(v.args)) } });
    }
    return bare.encodeToServer({ tag: msg.tag, val: { eventName: v.eventName, subscribe: !!v.subscribe } });
  }
  return encodeEnvelope(msg.tag, fieldsOf(msg), encoding);
}

/** Server → client message (the same shapes; used by tests and fakes). */
export function encodeToClient(msg, encoding) {
  if (!["Init", "Error", "ActionResponse", "Event"].includes(msg.tag)) throw new TypeError(`not a ToClient message: ${msg.tag}`);
  if (encoding === "bare") {
    const v = msg.val;
    switch (msg.tag) {
      case "Init":
        return bare.encodeToClient(msg);
      case "Error":
        return bare.encodeToClient({
          tag: "Error",
          val: {
            group: v.group,
            code: v.code,
            message: v.message,
            metadata: v.metadata === undefined ? undefined : cbor.encode(v.metadata),
            actionId: v.actionId ?? undefined,
          },
        });
      case "ActionResponse":
        return bare.encodeToClient({ tag: msg.tag, val: { id: v.id, output: cbor.encode(v.output) } });
      default:
        return bare.encodeToClient({ tag: msg.tag, val: { name: v.name, args: cbor.encode(checkArgs(v.args)) } });
    }
  }
  return encodeEnvelope(msg.tag, fieldsOf(msg), encoding);
}

/** Decodes a server → client message (string or bytes). Throws WireError. */
export function decodeToClient(data, encoding) {
  if (encoding === "bare") {
    const m = unframed(() => bare.decodeToClient(asBytes(data)));
    const v = m.val;
    switch (m.tag) {
      case "Init":
        return m;
      case "Error":
        return {
          tag: "Error",
          val: {
            group: v.group,
            code: v.code,
            message: v.message,
            metadata: optFromCbor(v.metadata, "Error.metadata"),
            actionId: v.actionId,
          },
        };
      case "ActionResponse":
        return { tag: m.tag, val: { id: v.id, output: fromCbor(v.output, "ActionResponse.output") } };
      default:
        return { tag: m.tag, val: { name: v.name, args: arrayFromCbor(v.args, "Event.args") } };
    }
  }
  const [tag, val] = openEnvelope(parseDocument(data, encoding));
  const f = new InFields(val, tag);
  switch (tag) {
    case "Init":
      return { tag, val: { actorId: f.text("actorId"), connectionId: f.text("connectionId") } };
    case "Error": {
      const out = { group: f.text("group"), code: f.text("code"), message: f.text("message") };
      out.metadata = f.optAny("metadata");
      out.actionId = f.optUint("actionId");
      return { tag, val: out };
    }
    case "ActionResponse":
      return { tag, val: { id: f.uint("id"), output: f.any("output") } };
    case "Event":
      return { tag, val: { name: f.text("name"), args: f.array("args") } };
    default:
      throw new WireError(`body.tag: unknown ToClient message '${tag}'`);
  }
}

/** Decodes a client → server message (tests and fakes). Throws WireError. */
export function decodeToServer(data, encoding) {
  if (encoding === "bare") {
    const m = unframed(() => bare.decodeToServer(asBytes(data)));
    if (m.tag === "ActionRequest") {
      return { tag: m.tag, val: { id: m.val.id, name: m.val.name, args: arrayFromCbor(m.val.args, "ActionRequest.args") } };
    }
    return m;
  }
  const [tag, val] = openEnvelope(parseDocument(data, encoding));
  const f = new InFields(val, tag);
  if (tag === "ActionRequest") return { tag, val: { id: f.uint("id"), name: f.text("name"), args: f.array("args") } };
  if (tag === "SubscriptionRequest") return { tag, val: { eventName: f.text("eventName"), subscribe: f.bool("subscribe") } };
  throw new WireError(`body.tag: unknown ToServer message '${tag}'`);
}

// ---- HTTP bodies ----

export function encodeHttpActionRequest({ args }, encoding) {
  checkArgs(args);
  if (encoding === "bare") return bare.encodeHttpActionRequest({ args: cbor.encode(args) });
  return encodeObject([["args", args]], encoding);
}

export function decodeHttpActionRequest(data, encoding) {
  if (encoding === "bare") {
    const m = unframed(() => bare.decodeHttpActionRequest(asBytes(data)));
    return { args: arrayFromCbor(m.args, "HttpActionRequest.args") };
  }
  return { args: new InFields(parseDocument(data, encoding), "HttpActionRequest").array("args") };
}

export function encodeHttpActionResponse({ output }, encoding) {
  if (encoding === "bare") return bare.encodeHttpActionResponse({ output: cbor.encode(output) });
  return encodeObject([["output", output]], encoding);
}

export function decodeHttpActionResponse(data, encoding) {
  if (encoding === "bare") {
    const m = unframed(() => bare.decodeHttpActionResponse(asBytes(data)));
    return { output: fromCbor(m.output, "HttpActionResponse.output") };
  }
  return { output: new InFields(parseDocument(data, encoding), "HttpActionResponse").any("output") };
}

/** {body, name?, wait?, timeout?}: timeout in milliseconds. */
export function encodeHttpQueueSendRequest({ body, name, wait, timeout }, encoding) {
  if (encoding === "bare") {
    return bare.encodeHttpQueueSendRequest({ body: cbor.encode(body), name, wait, timeout });
  }
  return encodeObject(
    [
      ["body", body],
      ["name", name, { absent: name === undefined }],
      ["wait", wait, { absent: wait === undefined }],
      // A plain number: the TypeScript client sends milliseconds as a JS number.
      ["timeout", timeout, { absent: timeout === undefined }],
    ],
    encoding,
  );
}

export function decodeHttpQueueSendRequest(data, encoding) {
  if (encoding === "bare") {
    const m = unframed(() => bare.decodeHttpQueueSendRequest(asBytes(data)));
    return { body: fromCbor(m.body, "HttpQueueSendRequest.body"), name: m.name, wait: m.wait, timeout: m.timeout };
  }
  const f = new InFields(parseDocument(data, encoding), "HttpQueueSendRequest");
  return { body: f.any("body"), name: f.optText("name"), wait: f.optBool("wait"), timeout: f.optUint("timeout") };
}

export function encodeHttpQueueSendResponse({ status, response }, encoding) {
  if (encoding === "bare") {
    return bare.encodeHttpQueueSendResponse({ status, response: response === undefined ? undefined : cbor.encode(response) });
  }
  return encodeObject([["status", status], ["response", response, { absent: response === undefined }]], encoding);
}

export function decodeHttpQueueSendResponse(data, encoding) {
  if (encoding === "bare") {
    const m = unframed(() => bare.decodeHttpQueueSendResponse(asBytes(data)));
    return { status: m.status, response: optFromCbor(m.response, "HttpQueueSendResponse.response") };
  }
  const f = new InFields(parseDocument(data, encoding), "HttpQueueSendResponse");
  return { status: f.text("status"), response: f.optAny("response") };
}

export function encodeHttpResponseError({ group, code, message, metadata }, encoding) {
  if (encoding === "bare") {
    return bare.encodeHttpResponseError({ group, code, message, metadata: metadata === undefined ? undefined : cbor.encode(metadata) });
  }
  return encodeObject(
    [["group", group], ["code", code], ["message", message], ["metadata", metadata, { absent: metadata === undefined }]],
    encoding,
  );
}

export function decodeHttpResponseError(data, encoding) {
  if (encoding === "bare") {
    const m = unframed(() => bare.decodeHttpResponseError(asBytes(data)));
    return { group: m.group, code: m.code, message: m.message, metadata: optFromCbor(m.metadata, "HttpResponseError.metadata") };
  }
  const f = new InFields(parseDocument(data, encoding), "HttpResponseError");
  const out = { group: f.text("group"), code: f.text("code"), message: f.text("message") };
  out.metadata = f.optAny("metadata");
  return out;
}
