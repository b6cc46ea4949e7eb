/* @ts-self-types="./index.d.ts" */
// The JavaScript client of Keel actors (actors.md §4): resolve actors by name and key,
// call actions over HTTP, send to queues, reach an actor's raw HTTP and WebSocket
// handlers, and hold persistent connections that receive events and reconnect on their
// own. Every exchange speaks the client protocol in json, cbor or bare.
//
// A port of the C++ client (src/client/client.{h,cc}); the behaviour is the same:
//
//   const client = createClient({ endpoint: "http://127.0.0.1:6420", encoding: "cbor" });
//   const counter = client.getOrCreate("counter", ["room-1"]);
//   await counter.increment(5);                 // stateless HTTP action (proxy sugar)
//   const conn = counter.connect();             // persistent WebSocket
//   conn.on("newCount", (n) => console.log(n));
//   await conn.increment(1);
//
// Resolution and retries (§4.2): get/getOrCreate handles address the actor through the
// gateway's query form (resolved by the engine in the same request) until they learn the
// actor id (resolve(), or a connection's Init), and directly by id after that. When a
// request fails with a scheduling error (the actor is missing, starting, stopping or was
// destroyed), the handle forgets the id, pauses `retryPauseMs` and retries through the
// query form — up to 60 attempts for getOrCreate handles and 24 for get handles. getForId
// handles never retry this way. Queue sends also retry `actor.overloaded` from the
// dispatch inbox. When the attempts run out, the last scheduling error is thrown.
//
// Only `fetch` and the host's WebSocket are used (plain ES modules, no build step): Node 20
// (with --experimental-websocket, or pass `WebSocket`), Deno and browsers.

import * as wire from "./wire.js";
import * as cborCodec from "./cbor.js";
import * as jsonCodec from "./json.js";
import { ActorError, clientError, isSchedulingError, isDispatchOverload, errorFromCloseReason, errorFromProtocolClose } from "./errors.js";

export { ActorError };
export * as cbor from "./cbor.js";
export * as bare from "./bare.js";
export * as wire from "./wire.js";

const textEncoder = new TextEncoder();
const textDecoder = new TextDecoder();

// ---------------------------------------------------------------------------------------
// Small helpers

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Percent-encodes every byte of the UTF-8 text except A-Z a-z 0-9 - _ . ~ (as the C++
// gateway helpers do).
export function percentEncode(text) {
  const bytes = textEncoder.encode(String(text));
  let out = "";
  for (const b of bytes) {
    if ((b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) || (b >= 0x30 && b <= 0x39) || b === 0x2d || b === 0x5f || b === 0x2e || b === 0x7e) {
      out += String.fromCharCode(b);
    } else {
      out += "%" + b.toString(16).toUpperCase().padStart(2, "0");
    }
  }
  return out;
}

/** Serialised actor key (§4.1): [] → "/", components joined with '/', '\' and '/' escaped, "" → "\0". */
export function serializeActorKey(key) {
  if (key.length === 0) return "/";
  return key.map((part) => (part === "" ? "\\0" : part.replace(/[\\/]/g, (c) => "\\" + c))).join("/");
}

/** Inverse of serializeActorKey; null for strings it cannot produce. */
export function parseActorKey(serialized) {
  if (serialized === "") return null;
  if (serialized === "/") return [];
  const key = [];
  let part = "";
  let emptyMarker = false;
  let hasChars = false;
  const finish = () => {
    if (!emptyMarker && !hasChars) return false;
    key.push(part);
    part = "";
    emptyMarker = false;
    hasChars = false;
    return true;
  };
  for (let i = 0; i < serialized.length; ++i) {
    const c = serialized[i];
    if (c === "/") {
      if (!finish()) return null;
      continue;
    }
    if (emptyMarker) return null;
    if (c !== "\\") {
      part += c;
      hasChars = true;
      continue;
    }
    if (i + 1 >= serialized.length) return null;
    const next = serialized[++i];
    if (next === "\\" || next === "/") {
      part += next;
      hasChars = true;
    } else if (next === "0" && !hasChars) {
      emptyMarker = true;
    } else {
      return null;
    }
  }
  return finish() ? key : null;
}

// The gateway's comma-joined `rvt-key` form; null when the key cannot be written in it.
function formatGatewayKey(key) {
  if (key.length === 1 && key[0] === "") return null;
  if (key.some((k) => k.includes(","))) return null;
  return key.join(",");
}

function normaliseKey(key) {
  if (key === undefined || key === null) return [];
  if (typeof key === "string") return [key];
  if (Array.isArray(key) && key.every((k) => typeof k === "string")) return [...key];
  throw clientError("invalid_argument", "an actor key is a string or an array of strings");
}

function checkName(name, what = "actor name") {
  if (typeof name !== "string" || name === "") throw clientError("invalid_argument", `the ${what} must be a non-empty string`);
  return name;
}

function headerEntries(headers) {
  if (!headers) return [];
  if (typeof headers.entries === "function" && !Array.isArray(headers)) return [...headers.entries()];
  if (Array.isArray(headers)) return headers.map(([k, v]) => [k, String(v)]);
  return Object.entries(headers).map(([k, v]) => [k, String(v)]);
}

function hasJsonType(headers) {
  const type = headers.get("content-type") ?? "";
  return type.includes("json");
}

// Splits "a/b?x=1#f" into ["a/b", "x=1"], dropping the fragment and leading slashes.
function splitUserPath(path) {
  let p = String(path ?? "");
  const hash = p.indexOf("#");
  if (hash >= 0) p = p.slice(0, hash);
  let query = "";
  const q = p.indexOf("?");
  if (q >= 0) {
    query = p.slice(q + 1);
    p = p.slice(0, q);
  }
  return [p.replace(/^\/+/, ""), query];
}

function toBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return data;  // strings stay strings
}

function runListener(fn, ...args) {
  try {
    fn(...args);
  } catch (e) {
    console.error("keel client: a listener threw", e);
  }
}

// The structured error carried by a non-2xx response: the body is an HttpResponseError in
// the request's encoding (actor errors) or JSON (gateway and REST errors).
function errorFromResponse(status, headers, body, encoding) {
  const isJson = hasJsonType(headers);
  let decoded = null;
  try {
    decoded = wire.decodeHttpResponseError(body, isJson ? "json" : encoding);
  } catch {
    if (!isJson) {
      try {
        decoded = wire.decodeHttpResponseError(body, "json");
      } catch {}
    }
  }
  if (decoded && decoded.group && decoded.code) {
    return new ActorError(decoded.group, decoded.code, decoded.message, decoded.metadata, status);
  }
  let snippet = "";
  try {
    snippet = textDecoder.decode(body.subarray(0, 200));
  } catch {}
  const e = clientError("bad_response", `HTTP ${status}${snippet ? ": " + snippet : ""}`);
  e.httpStatus = status;
  return e;
}

function parseActorInfo(a) {
  if (a === null || typeof a !== "object" || typeof a.actor_id !== "string") {
    throw clientError("bad_response", "actor record without actor_id");
  }
  const ts = (f) => (Number.isInteger(a[f]) ? a[f] : undefined);
  return {
    actorId: a.actor_id,
    name: a.name ?? "",
    key: typeof a.key === "string" ? parseActorKey(a.key) ?? undefined : undefined,
    crashPolicy: a.crash_policy ?? "",
    pool: a.runner_name_selector ?? "",
    createTs: ts("create_ts") ?? 0,
    startTs: ts("start_ts"),
    connectableTs: ts("connectable_ts"),
    sleepTs: ts("sleep_ts"),
    destroyTs: ts("destroy_ts"),
    error: a.error === undefined || a.error === null ? undefined : typeof a.error === "string" ? a.error : JSON.stringify(a.error),
    raw: a,
  };
}

// ---------------------------------------------------------------------------------------
// Shared client state

class ClientShared {
  constructor(o) {
    let endpoint = String(o.endpoint ?? "http://127.0.0.1:6420").replace(/\/+$/, "");
    let url;
    try {
      url = new URL(endpoint);
    } catch {}
    if (!url || (url.protocol !== "http:" && url.protocol !== "https:")) {
      throw clientError("invalid_argument", `endpoint must be an http:// or https:// URL: '${endpoint}'`);
    }
    const encoding = o.encoding ?? "json";
    if (!wire.ENCODINGS.includes(encoding)) {
      throw clientError("invalid_argument", `encoding must be json, cbor or bare: '${encoding}'`);
    }
    this.base = endpoint;
    this.wsBase = "ws" + endpoint.slice(4);  // http → ws, https → wss
    this.token = o.token ?? "";
    this.namespace = o.namespace ?? "default";
    this.pool = o.poolName ?? "default";
    this.encoding = encoding;
    this.headers = headerEntries(o.headers);
    this.WebSocketImpl = o.WebSocket;
    this.fetchImpl = o.fetch;
    this.retryPauseMs = o.retryPauseMs ?? 100;
    this.requestTimeoutMs = o.requestTimeoutMs ?? 30000;
    this.actionTimeoutMs = o.actionTimeoutMs ?? 60000;
    this.conns = new Set();
  }

  get WebSocket() {
    const impl = this.WebSocketImpl ?? globalThis.WebSocket;
    if (typeof impl !== "function") {
      throw clientError("invalid_argument", "no WebSocket implementation: pass the `WebSocket` option (Node 20: or run with --experimental-websocket)");
    }
    return impl;
  }

  // Client headers + bearer token (+ x-rivet-token for the gateway).
  baseHeaders({ gateway = false } = {}) {
    const h = new Headers();
    for (const [k, v] of this.headers) h.append(k, v);
    if (this.token) {
      h.set("authorization", `Bearer ${this.token}`);
      if (gateway) h.set("x-rivet-token", this.token);
    }
    return h;
  }

  namespaceQuery() {
    return "namespace=" + percentEncode(this.namespace);
  }

  // One HTTP exchange bounded by requestTimeoutMs. `raw`: the Response (timer cleared once
  // the headers arrived); else {status, headers, body: Uint8Array}.
  async http(url, init, { raw = false, signal } = {}) {
    const fetchImpl = this.fetchImpl ?? globalThis.fetch;
    const ctl = new AbortController();
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      ctl.abort();
    }, this.requestTimeoutMs);
    const onAbort = () => ctl.abort(signal.reason);
    if (signal) {
      if (signal.aborted) ctl.abort(signal.reason);
      else signal.addEventListener("abort", onAbort, { once: true });
    }
    try {
      const res = await fetchImpl(url, { ...init, signal: ctl.signal });
      if (raw) return res;
      const body = new Uint8Array(await res.arrayBuffer());
      return { status: res.status, headers: res.headers, body };
    } catch (e) {
      if (timedOut) throw clientError("timeout", `no answer from ${url} within ${this.requestTimeoutMs} ms`, { cause: e });
      if (signal?.aborted) throw e;
      throw clientError("connect_failed", `${url}: ${e.cause?.message ?? e.message}`, { cause: e });
    } finally {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    }
  }

  // REST call with a JSON body: the parsed answer, or the structured error thrown.
  async rest(method, path, body) {
    const headers = this.baseHeaders();
    const init = { method, headers };
    if (body !== undefined) {
      headers.set("content-type", "application/json");
      init.body = JSON.stringify(body);
    }
    const res = await this.http(this.base + path, init);
    if (res.status < 200 || res.status >= 300) throw errorFromResponse(res.status, res.headers, res.body, "json");
    try {
      return JSON.parse(textDecoder.decode(res.body));
    } catch {
      throw clientError("bad_response", "the engine answered with invalid JSON");
    }
  }
}

// ---------------------------------------------------------------------------------------
// Handles

const KIND_GET = "get";
const KIND_GET_OR_CREATE = "getOrCreate";
const KIND_ID = "id";

class HandleState {
  constructor(client, kind, name, key, options = {}) {
    this.client = client;
    this.kind = kind;
    this.name = name;
    this.key = key;
    this.params = options.params;
    this.getParams = options.getParams;
    this.input = options.input;
    this.region = options.region ?? "";
    this.actorId = options.actorId ?? "";
  }

  setId(id) {
    if (this.kind !== KIND_ID) this.actorId = id;
  }
  forgetId() {
    if (this.kind !== KIND_ID) this.actorId = "";
  }
  maxAttempts() {
    return this.kind === KIND_GET_OR_CREATE ? 60 : this.kind === KIND_GET ? 24 : 1;
  }

  // The connection params for one request/attempt (undefined: none).
  async paramsFor() {
    if (this.getParams) {
      try {
        return await this.getParams();
      } catch (e) {
        const what = e instanceof ActorError ? e.toString() : String(e?.message ?? e);
        throw clientError("get_params_failed", what, { cause: e });
      }
    }
    return this.params;
  }

  // The gateway URL of `rest` (a path starting with '/', or "") plus the user's raw query:
  // direct by id when known, otherwise the query form. null when the key cannot be written
  // in the query form (the caller resolves over REST first).
  url(prefix, rest, userQuery, id = this.actorId) {
    let url = prefix + "/gateway/";
    if (id) {
      url += percentEncode(id) + rest;
      if (userQuery) url += "?" + userQuery;
      return url;
    }
    const keyText = formatGatewayKey(this.key);
    if (keyText === null) return null;
    const c = this.client;
    url += percentEncode(this.name) + rest + "?";
    if (userQuery) url += userQuery + "&";
    url += "rvt-namespace=" + percentEncode(c.namespace);
    url += this.kind === KIND_GET ? "&rvt-method=get" : "&rvt-method=getOrCreate";
    if (this.key.length > 0) url += "&rvt-key=" + percentEncode(keyText);
    if (this.kind === KIND_GET_OR_CREATE) {
      url += "&rvt-runner=" + percentEncode(c.pool);
      url += "&rvt-crash-policy=sleep";
      if (this.input !== undefined) url += "&rvt-input=" + jsonCodec.base64UrlEncode(cborCodec.encode(this.input));
      if (this.region) url += "&rvt-region=" + percentEncode(this.region);
    }
    if (c.token) url += "&rvt-token=" + percentEncode(c.token);
    return url;
  }

  // The actor id: cached, else looked up (get: GET /actors; getOrCreate: PUT /actors).
  async resolve() {
    if (this.actorId) return this.actorId;
    const c = this.client;
    const serialized = serializeActorKey(this.key);
    if (this.kind === KIND_GET) {
      const r = await c.rest(
        "GET",
        `/actors?${c.namespaceQuery()}&name=${percentEncode(this.name)}&key=${percentEncode(serialized)}`,
      );
      const actors = r?.actors;
      if (!Array.isArray(actors) || actors.length === 0) {
        throw new ActorError("actor", "not_found", "The actor does not exist or was destroyed.");
      }
      const info = parseActorInfo(actors[0]);
      this.setId(info.actorId);
      return info.actorId;
    }
    const body = { name: this.name, key: serialized, runner_name_selector: c.pool, crash_policy: "sleep" };
    if (this.input !== undefined) body.input = jsonCodec.base64Encode(cborCodec.encode(this.input));
    if (this.region) body.datacenter = this.region;
    const r = await c.rest("PUT", `/actors?${c.namespaceQuery()}`, body);
    const info = parseActorInfo(r?.actor);
    this.setId(info.actorId);
    return info.actorId;
  }

  // Request headers for an actor call: the client's, the encoding, the params.
  async actorHeaders(withEncoding) {
    const c = this.client;
    const headers = c.baseHeaders({ gateway: true });
    if (withEncoding) {
      headers.set("x-rivet-encoding", c.encoding);
      headers.set("content-type", wire.contentType(c.encoding));
    }
    const params = await this.paramsFor();
    if (params !== undefined) {
      try {
        headers.set("x-rivet-conn-params", jsonCodec.stringify(params));
      } catch (e) {
        throw clientError("invalid_argument", `connection params cannot travel in a header: ${e.message}`, { cause: e });
      }
    }
    return headers;
  }

  // Sends a request to the actor at `rest` (+ `userQuery`), retrying scheduling errors per
  // the handle's budget. The final response is returned whatever its status; transport
  // errors and exhausted retries are thrown.
  async request(rest, userQuery, init, { retryOverload = false, raw = false, encoding = "json", signal } = {}) {
    const c = this.client;
    const attempts = this.maxAttempts();
    let last = null;
    for (let attempt = 1; attempt <= attempts; ++attempt) {
      if (attempt > 1) await sleep(c.retryPauseMs);  // retry pause (§4.2)
      let url = this.url(c.base, rest, userQuery);
      if (url === null) {
        // A key the query form cannot carry: resolve over REST, then go direct.
        try {
          await this.resolve();
        } catch (e) {
          if (isSchedulingError(e) && attempt < attempts) {
            last = e;
            continue;
          }
          throw e;
        }
        url = this.url(c.base, rest, userQuery);
        if (url === null) throw clientError("invalid_argument", "the actor key cannot be addressed");
      }
      const res = await c.http(url, init, { raw, signal });
      if (res.status >= 200 && res.status < 300) return res;
      const body = raw ? new Uint8Array(await res.clone().arrayBuffer()) : res.body;
      const e = errorFromResponse(res.status, res.headers, body, encoding);
      const retryable = isSchedulingError(e) || (retryOverload && isDispatchOverload(e));
      if (!retryable || this.kind === KIND_ID) return res;
      this.forgetId();
      last = e;
    }
    // Out of attempts: the last scheduling error is the answer.
    throw last ?? clientError("connect_failed", "no attempt was made");
  }
}

// Proxies: any property the object does not have is an action of that name. `then`,
// `catch`, `finally` and `toJSON` are undefined so handles and connections are never
// mistaken for promises nor serialised by calling an action (use action("then") for
// actions with those names, or with the name of a method).
const NOT_ACTIONS = new Set(["then", "catch", "finally", "toJSON"]);

function actionProxy(target) {
  const bound = new Map();
  return new Proxy(target, {
    get(t, prop, receiver) {
      if (typeof prop === "symbol" || prop in t) {
        const v = Reflect.get(t, prop, t);
        if (typeof v !== "function") return v;
        let b = bound.get(prop);
        if (!b || b.fn !== v) {
          b = { fn: v, bound: v.bind(t) };
          bound.set(prop, b);
        }
        return b.bound;
      }
      if (NOT_ACTIONS.has(prop)) return undefined;
      return (...args) => t.action(prop, ...args);
    },
  });
}

// action("name", ...args) or action({name, args, signal, timeoutMs}).
function actionCall(first, rest) {
  if (first !== null && typeof first === "object") {
    return { name: checkName(first.name, "action name"), args: first.args ?? [], signal: first.signal, timeoutMs: first.timeoutMs };
  }
  return { name: checkName(first, "action name"), args: rest };
}

/** A reference to one actor (by id, or by name + key). */
export class ActorHandle {
  constructor(state) {
    this._state = state;
  }

  get name() {
    return this._state.name;
  }
  get key() {
    return [...this._state.key];
  }
  /** The cached actor id ("" before it is known). */
  get actorId() {
    return this._state.actorId;
  }

  /** The actor id: cached, else looked up (get: GET /actors; getOrCreate: PUT /actors). */
  resolve() {
    return this._state.resolve();
  }

  /**
   * The URL a plain HTTP client can use for this actor: the direct form for getForId
   * handles, the query form (rvt-namespace, rvt-method, ...) otherwise. No trailing '/'.
   */
  gatewayUrl() {
    const s = this._state;
    if (s.kind === KIND_ID) return `${s.client.base}/gateway/${percentEncode(s.actorId)}`;
    return s.url(s.client.base, "", "", "") ?? `${s.client.base}/gateway/${percentEncode(s.name)}`;
  }
  getGatewayUrl() {
    return this.gatewayUrl();
  }

  /** A stateless action over HTTP: action(name, ...args) or action({name, args, signal}). */
  async action(first, ...rest) {
    const { name, args, signal } = actionCall(first, rest);
    const s = this._state;
    const enc = s.client.encoding;
    const headers = await s.actorHeaders(true);
    const body = wire.encodeHttpActionRequest({ args }, enc);
    const res = await s.request(`/action/${percentEncode(name)}`, "", { method: "POST", headers, body }, { encoding: enc, signal });
    if (res.status !== 200) throw errorFromResponse(res.status, res.headers, res.body, enc);
    try {
      return wire.decodeHttpActionResponse(res.body, enc).output;
    } catch (e) {
      throw clientError("bad_response", e.message, { cause: e });
    }
  }

  /**
   * POST /queue/<name>: resolves to {status: "completed"} (or, with `wait`,
   * {status: "completed", response} | {status: "timedOut"}).
   */
  async send(queue, body, { wait = false, timeout, signal } = {}) {
    checkName(queue, "queue name");
    const s = this._state;
    const enc = s.client.encoding;
    const headers = await s.actorHeaders(true);
    const msg = { body, name: queue };
    if (wait) msg.wait = true;
    if (timeout !== undefined && timeout !== null) msg.timeout = Math.max(0, Math.floor(Number(timeout)));
    const res = await s.request(`/queue/${percentEncode(queue)}`, "", { method: "POST", headers, body: wire.encodeHttpQueueSendRequest(msg, enc) }, { retryOverload: true, encoding: enc, signal });
    if (res.status !== 200) throw errorFromResponse(res.status, res.headers, res.body, enc);
    let decoded;
    try {
      decoded = wire.decodeHttpQueueSendResponse(res.body, enc);
    } catch (e) {
      throw clientError("bad_response", e.message, { cause: e });
    }
    const out = { status: decoded.status };
    if (decoded.response !== undefined) out.response = decoded.response;
    return out;
  }

  /**
   * A raw request to the actor's onRequest: `path` (with optional "?query") is appended to
   * /request/. Resolves to the standard Response, whatever its status.
   */
  async fetch(path = "", init = {}) {
    const s = this._state;
    const headers = await s.actorHeaders(false);
    for (const [k, v] of headerEntries(init.headers)) headers.set(k, v);
    const [p, q] = splitUserPath(path);
    const req = { ...init, method: init.method ?? "GET", headers };
    delete req.signal;
    return s.request(`/request/${p}`, q, req, { raw: true, signal: init.signal });
  }

  /**
   * A raw WebSocket to the actor's onWebSocket at /websocket/<path> (query kept); resolves
   * once it is open.
   */
  async webSocket(path = "", protocols = [], { timeoutMs = 15000 } = {}) {
    const s = this._state;
    const c = s.client;
    const WS = c.WebSocket;
    const [p, q] = splitUserPath(path);
    const params = await s.paramsFor();
    // A key handle opens raw sockets by key: the gateway accepts an upgrade before it routes,
    // so a cached id whose actor was destroyed would give a socket closed at once
    // (actor.not_found) instead of reaching the re-created actor (actors.md §8.13).
    let url = s.url(c.wsBase, `/websocket/${p}`, q, s.kind === KIND_ID ? s.actorId : "");
    if (url === null) {
      await s.resolve();
      url = s.url(c.wsBase, `/websocket/${p}`, q);
      if (url === null) throw clientError("invalid_argument", "the actor key cannot be addressed");
    }
    const subprotocols = ["rivet"];
    if (params !== undefined) subprotocols.push("rivet_conn_params." + percentEncode(jsonCodec.stringify(params)));
    if (c.token) subprotocols.push("rivet_token." + c.token);
    subprotocols.push(...(typeof protocols === "string" ? [protocols] : protocols));
    const ws = new WS(url, subprotocols);
    ws.binaryType = "arraybuffer";
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        cleanup();
        try {
          ws.close();
        } catch {}
        reject(clientError("timeout", `the WebSocket to ${url} did not open within ${timeoutMs} ms`));
      }, timeoutMs);
      const onOpen = () => {
        cleanup();
        resolve(ws);
      };
      const onClose = (ev) => {
        cleanup();
        reject(errorFromCloseReason(ev?.reason) ?? clientError("connect_failed", `the WebSocket to ${url} failed (code ${ev?.code ?? "?"})`));
      };
      const cleanup = () => {
        clearTimeout(timer);
        ws.removeEventListener("open", onOpen);
        ws.removeEventListener("close", onClose);
      };
      ws.addEventListener("open", onOpen);
      ws.addEventListener("close", onClose);
    });
  }

  /**
   * A persistent connection; it starts connecting at once (status "connecting"). `params`,
   * when given, replace the handle's connection params for this connection.
   */
  connect(params) {
    let state = this._state;
    if (params !== undefined) {
      // Same handle (shared cached id) but other params for this connection.
      state = Object.create(this._state);
      state.params = params;
      state.getParams = undefined;
      state.setId = (id) => this._state.setId(id);
      state.forgetId = () => this._state.forgetId();
      Object.defineProperty(state, "actorId", { get: () => this._state.actorId, set: (v) => (this._state.actorId = v) });
    }
    return new ActorConn(state);
  }
}

// ---------------------------------------------------------------------------------------
// Connections

const MIN_BACKOFF_MS = 250;
const MAX_BACKOFF_MS = 30000;

/**
 * A persistent connection to an actor (actors.md §4.6, §4.10): actions with ids, event
 * subscriptions, connection state on the actor. On an unexpected close it reconnects
 * forever (250 ms doubling to 30 s), re-resolving dynamic handles, re-subscribing and
 * sending what was queued. Actions called while not connected wait for the connection.
 */
export class ActorConn {
  constructor(handleState) {
    this._h = handleState;
    this._c = handleState.client;
    this._encoding = this._c.encoding;
    this._status = "connecting";
    this._disposed = false;
    this._open = false;  // Init received on the current socket
    this._gen = 0;
    this._ws = null;  // the current socket once its handshake completed
    this._attemptSocket = null;
    this._actorId = "";
    this._connectionId = "";
    this._nextActionId = 0;
    this._pending = new Map();  // id → {name, args, resolve, reject, sent, timer}
    this._events = new Map();  // name → [{id, fn, once}]
    this._nextListenerId = 1;
    this._onError = new Map();
    this._onOpen = new Map();
    this._onClose = new Map();
    this._onStatus = new Map();
    this._backoff = MIN_BACKOFF_MS;
    this._reconnectTimer = null;
    this._unreported = null;
    this._connError = null;  // the current socket's setup failure (its Error frame)
    this._readyWaiters = new Set();
    this._c.conns.add(this);
    const proxy = actionProxy(this);
    // Listeners registered right after connect() see everything: the first attempt starts
    // on a later task.
    setTimeout(() => this._attempt(), 0);
    return proxy;
  }

  /** "idle" | "connecting" | "connected" | "disconnected" */
  get status() {
    return this._status;
  }
  get isConnected() {
    return this._status === "connected";
  }
  /** From the last Init ("" before). */
  get actorId() {
    return this._actorId;
  }
  get connectionId() {
    return this._connectionId;
  }

  /** Resolves once the connection is open; client.timeout / client.closed otherwise. */
  waitReady(timeoutMs = 30000) {
    if (this._disposed) return Promise.reject(clientError("closed", "the connection was disposed"));
    if (this._status === "connected" && this._open) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const w = { resolve, reject };
      w.timer = setTimeout(() => {
        this._readyWaiters.delete(w);
        reject(clientError("timeout", "the connection did not open in time"));
      }, timeoutMs);
      this._readyWaiters.add(w);
    });
  }

  /**
   * Sends (or queues until open) an action: action(name, ...args) or
   * action({name, args, timeoutMs}). Fails with client.timeout after `actionTimeoutMs`.
   */
  action(first, ...rest) {
    const { name, args, timeoutMs } = actionCall(first, rest);
    return new Promise((resolve, reject) => {
      if (this._disposed) return reject(clientError("closed", "the connection was disposed"));
      if (!this._open && this._unreported) {
        const e = this._unreported;
        this._unreported = null;
        return reject(e);
      }
      const id = this._nextActionId++;
      const p = { name, args, resolve, reject, sent: false, timer: null };
      const limit = timeoutMs ?? this._c.actionTimeoutMs;
      p.timer = setTimeout(() => {
        if (this._pending.get(id) === p) {
          this._pending.delete(id);
          reject(clientError("timeout", `no answer to action '${name}' in time`));
        }
      }, limit);
      this._pending.set(id, p);
      if (this._open && this._ws) {
        p.sent = true;
        this._send({ tag: "ActionRequest", val: { id, name, args } });
      }
    });
  }

  /**
   * Event listeners get the event's arguments spread (`cb(...args)`). The first listener
   * of a name subscribes on the actor; removing the last unsubscribes.
   */
  on(event, cb) {
    return this._addEventListener(event, cb, false);
  }
  once(event, cb) {
    return this._addEventListener(event, cb, true);
  }
  /** Connection-level errors (setup failures, getParams failures, refused subscriptions). */
  onError(cb) {
    return this._addListener(this._onError, cb);
  }
  onOpen(cb) {
    return this._addListener(this._onOpen, cb);
  }
  /** When an open connection closes (dispose, or a drop before reconnecting). */
  onClose(cb) {
    return this._addListener(this._onClose, cb);
  }
  onStatusChange(cb) {
    return this._addListener(this._onStatus, cb);
  }

  /**
   * Closes for good: pending actions fail with client.closed, onClose listeners run once,
   * no reconnection. Idempotent.
   */
  dispose() {
    if (this._disposed) return Promise.resolve();
    this._disposed = true;
    this._c.conns.delete(this);
    if (this._reconnectTimer) {
      clearTimeout(this._reconnectTimer);
      this._reconnectTimer = null;
    }
    const out = [];
    const socket = this._ws ?? this._attemptSocket;
    this._ws = null;
    this._attemptSocket = null;
    if (socket) {
      try {
        socket.close(1000, "");
      } catch {}
    }
    const closed = clientError("closed", "the connection was disposed");
    this._failPending(closed, false, out);
    for (const w of this._readyWaiters) {
      clearTimeout(w.timer);
      w.reject(closed);
    }
    this._readyWaiters.clear();
    if (this._open) for (const fn of this._onClose.values()) out.push(() => fn());
    this._open = false;
    this._setStatus("disconnected", out);
    this._run(out);
    return Promise.resolve();
  }

  // ---- internals ----

  _addListener(map, cb) {
    if (typeof cb !== "function") throw clientError("invalid_argument", "a listener must be a function");
    const id = this._nextListenerId++;
    map.set(id, cb);
    return () => {
      map.delete(id);
    };
  }

  _addEventListener(event, fn, once) {
    checkName(event, "event name");
    if (typeof fn !== "function") throw clientError("invalid_argument", "a listener must be a function");
    const id = this._nextListenerId++;
    let ls = this._events.get(event);
    if (!ls) {
      ls = [];
      this._events.set(event, ls);
    }
    const first = ls.length === 0;
    ls.push({ id, fn, once });
    if (first && this._open) this._send({ tag: "SubscriptionRequest", val: { eventName: event, subscribe: true } });
    return () => {
      const list = this._events.get(event);
      if (!list) return;
      const before = list.length;
      const i = list.findIndex((l) => l.id === id);
      if (i >= 0) list.splice(i, 1);
      if (before !== 0 && list.length === 0) {
        if (this._open) this._send({ tag: "SubscriptionRequest", val: { eventName: event, subscribe: false } });
        this._events.delete(event);
      }
    };
  }

  _run(out) {
    for (const f of out) runListener(f);
  }

  _setStatus(s, out) {
    if (this._status === s) return;
    this._status = s;
    if (s === "connected" && this._open) {
      for (const w of this._readyWaiters) {
        clearTimeout(w.timer);
        out.push(() => w.resolve());
      }
      this._readyWaiters.clear();
    }
    for (const fn of this._onStatus.values()) out.push(() => fn(s));
  }

  _queueError(e, out) {
    for (const fn of this._onError.values()) out.push(() => fn(e));
  }

  // Fails pending actions (only those already sent when `sentOnly`); when none was waiting
  // and `remember`, the error is kept for the next action.
  _failPending(e, sentOnly, out, remember = false) {
    let told = false;
    for (const [id, p] of this._pending) {
      if (sentOnly && !p.sent) continue;
      this._pending.delete(id);
      clearTimeout(p.timer);
      out.push(() => p.reject(e));
      told = true;
    }
    if (!told && remember) this._unreported = e;
  }

  _send(msg) {
    if (!this._ws) return;
    try {
      this._ws.send(wire.encodeToServer(msg, this._encoding));
    } catch (e) {
      console.error("keel client: could not send", e);
    }
  }

  // One connection attempt.
  async _attempt() {
    this._reconnectTimer = null;
    if (this._disposed) return;
    const gen = ++this._gen;
    const out = [];
    this._setStatus("connecting", out);
    this._run(out);
    const h = this._h;
    let params;
    try {
      params = await h.paramsFor();
    } catch (e) {
      return this._failed(gen, e, true);
    }
    if (this._disposed || gen !== this._gen) return;
    let url = h.url(this._c.wsBase, "/connect", "");
    if (url === null) {
      try {
        await h.resolve();
      } catch (e) {
        return this._failed(gen, e, !isSchedulingError(e));
      }
      url = h.url(this._c.wsBase, "/connect", "");
      if (url === null) return this._failed(gen, clientError("invalid_argument", "the actor key cannot be addressed"), true);
    }
    this._openSocket(gen, url, params);
  }

  _openSocket(gen, url, params) {
    if (this._disposed || gen !== this._gen) return;
    const c = this._c;
    const subprotocols = ["rivet", `rivet_encoding.${this._encoding}`];
    if (params !== undefined) subprotocols.push("rivet_conn_params." + percentEncode(jsonCodec.stringify(params)));
    if (c.token) subprotocols.push("rivet_token." + c.token);
    let ws;
    try {
      ws = new c.WebSocket(url, subprotocols);
    } catch (e) {
      const err = e instanceof ActorError ? e : clientError("connect_failed", `${url}: ${e.message}`, { cause: e });
      return this._failed(gen, err, true);
    }
    ws.binaryType = "arraybuffer";
    this._attemptSocket = ws;
    this._connError = null;
    let handshakeDone = false;
    // What the last error event on the open socket said (Node names the protocol fault it
    // failed the connection for, then closes with 1006: errorFromProtocolClose).
    let fault = "";
    const timer = setTimeout(() => {
      if (handshakeDone) return;
      try {
        ws.close();
      } catch {}
      this._failed(gen, clientError("timeout", `the WebSocket handshake with ${url} did not complete within ${c.requestTimeoutMs} ms`), true);
    }, c.requestTimeoutMs);
    ws.addEventListener("open", () => {
      handshakeDone = true;
      clearTimeout(timer);
      if (this._disposed || gen !== this._gen) {
        try {
          ws.close(1000, "");
        } catch {}
        return;
      }
      this._ws = ws;
    });
    ws.addEventListener("message", (ev) => {
      if (gen !== this._gen) return;
      this._onMessage(gen, toBytes(ev.data));
    });
    ws.addEventListener("error", (ev) => {
      if (handshakeDone && typeof ev?.message === "string") fault = ev.message;
    });
    ws.addEventListener("close", (ev) => {
      clearTimeout(timer);
      if (!handshakeDone) {
        // The handshake failed: the WebSocket API gives no status or body.
        const e = errorFromCloseReason(ev.reason) ?? clientError("connect_failed", `the WebSocket to ${url} could not be opened (code ${ev.code})`);
        if (isSchedulingError(e)) this._h.forgetId();
        return this._failed(gen, e, !this._waitsThrough(e));
      }
      this._onSocketClose(gen, ev.code, ev.reason ?? "", fault);
    });
  }

  // An attempt failed before the socket opened.
  _failed(gen, e, failQueued) {
    if (this._disposed || gen !== this._gen) return;
    this._attemptSocket = null;
    const out = [];
    this._attemptFailed(e, failQueued, false, out);
    this._run(out);
  }

  // An attempt ended with `e` before Init. The error listeners hear it, and when
  // `failQueued` the queued actions fail with it (when none was waiting, the next action
  // called before the connection opens does); then a reconnect is scheduled. `reported`:
  // the listeners and the waiting actions heard `e` already (from the actor's Error frame).
  _attemptFailed(e, failQueued, reported, out) {
    if (!reported) this._queueError(e, out);
    if (failQueued) this._failPending(e, false, out, !reported);
    this._setStatus("disconnected", out);
    this._scheduleReconnect();
  }

  // A scheduling error on a handle that resolves again (not one by id) ends only this
  // attempt: queued actions wait for the next one.
  _waitsThrough(e) {
    return isSchedulingError(e) && this._h.kind !== KIND_ID;
  }

  _scheduleReconnect() {
    if (this._disposed || this._reconnectTimer) return;
    const delay = this._backoff;
    this._backoff = Math.min(this._backoff * 2, MAX_BACKOFF_MS);
    this._reconnectTimer = setTimeout(() => this._attempt(), delay);
  }

  _onMessage(gen, data) {
    if (this._disposed || gen !== this._gen) return;
    const out = [];
    let msg;
    try {
      msg = wire.decodeToClient(data, this._encoding);
    } catch (cause) {
      // A frame that does not decode may have been an answer: the actions sent on this
      // socket could wait for it forever. The stream cannot be trusted past it, so it is
      // dropped as a lost connection is, and a new one opened. (The WebSocket API lets a
      // client close only with 1000 or 3000-4999: 1000 with the reason.)
      const e = clientError("bad_response", `the actor sent a message that does not decode as ${this._encoding}: ${cause.message}`, { cause });
      const ws = this._ws;
      this._ws = null;
      this._attemptSocket = null;
      this._gen++; // this socket's own close is not news
      try {
        ws?.close(1000, "client.bad_response");
      } catch {}
      const wasOpen = this._open;
      this._open = false;
      this._queueError(e, out);
      this._socketLost(e, wasOpen, false, out);
      return this._run(out);
    }
    const v = msg.val;
    switch (msg.tag) {
      case "Init": {
        this._actorId = v.actorId;
        this._connectionId = v.connectionId;
        this._h.setId(v.actorId);
        this._open = true;
        this._unreported = null;
        this._backoff = MIN_BACKOFF_MS;
        for (const [name, ls] of this._events) {
          if (ls.length > 0) this._send({ tag: "SubscriptionRequest", val: { eventName: name, subscribe: true } });
        }
        for (const [id, p] of this._pending) {
          if (p.sent) continue;
          p.sent = true;
          this._send({ tag: "ActionRequest", val: { id, name: p.name, args: p.args } });
        }
        this._setStatus("connected", out);
        // _setStatus resolves waiters only on a change; also on a re-Init.
        for (const w of this._readyWaiters) {
          clearTimeout(w.timer);
          out.push(() => w.resolve());
        }
        this._readyWaiters.clear();
        for (const fn of this._onOpen.values()) out.push(() => fn());
        break;
      }
      case "ActionResponse": {
        const id = Number(v.id);
        const p = this._pending.get(id);
        if (p) {
          this._pending.delete(id);
          clearTimeout(p.timer);
          out.push(() => p.resolve(v.output));
        }
        break;
      }
      case "Error": {
        const e = new ActorError(v.group, v.code, v.message, v.metadata);
        if (v.actionId !== undefined) {
          const id = Number(v.actionId);
          const p = this._pending.get(id);
          if (p) {
            this._pending.delete(id);
            clearTimeout(p.timer);
            out.push(() => p.reject(e));
          }
        } else {
          // A connection-level error (setup failed): the actions waiting on this
          // connection get it, and so do the error listeners.
          this._queueError(e, out);
          this._failPending(e, false, out, true);
          this._connError = e;
        }
        break;
      }
      case "Event": {
        const ls = this._events.get(v.name);
        if (ls) {
          let removedOnce = false;
          for (let i = 0; i < ls.length; ) {
            const l = ls[i];
            out.push(() => l.fn(...v.args));
            if (l.once) {
              ls.splice(i, 1);
              removedOnce = true;
            } else {
              ++i;
            }
          }
          if (removedOnce && ls.length === 0) {
            this._send({ tag: "SubscriptionRequest", val: { eventName: v.name, subscribe: false } });
            this._events.delete(v.name);
          }
        }
        break;
      }
    }
    this._run(out);
  }

  _onSocketClose(gen, code, reason, fault = "") {
    if (gen !== this._gen) return;
    this._ws = null;
    this._attemptSocket = null;
    const wasOpen = this._open;
    this._open = false;
    const setupError = this._connError;
    this._connError = null;
    if (this._disposed) return;
    const out = [];
    let structured = errorFromCloseReason(reason);
    // After a failed setup's Error frame, the close repeats its `group.code`: the error is
    // the one already reported, with its message and metadata, not a second one.
    const reported = structured !== null && setupError !== null && setupError.group === structured.group && setupError.code === structured.code;
    if (reported) structured = setupError;
    if (structured && isSchedulingError(structured)) this._h.forgetId();
    if (structured && !wasOpen) {
      // Refused before Init: the gateway refuses a WebSocket by accepting it and closing
      // with `group.code#ray` (actors.md §5.9). The attempt ends as a refused handshake
      // does, queued actions included.
      this._attemptFailed(structured, !this._waitsThrough(structured), reported, out);
    } else {
      // A drop (queued actions wait for the next attempt), or a close after Init: the
      // actions sent may or may not have run, so they fail. A protocol-level failure (a
      // frame one side could not take) is reported as such, like an undecodable message
      // (_onMessage): the error listeners hear it too.
      const protocol = structured ? null : errorFromProtocolClose(code, reason, fault);
      const e = structured ?? protocol ?? clientError("connection_lost", `the connection closed (code ${code}${reason ? ", " + reason : ""})`);
      if ((structured && !reported) || protocol) this._queueError(e, out);
      this._socketLost(e, wasOpen, structured !== null && !reported, out);
    }
    this._run(out);
  }

  // The socket gone (_ws null, _open false): a drop (queued actions wait for the next
  // attempt), or a close after Init: the actions sent may or may not have run, so they fail
  // with `e` (kept for the next action when none was waiting and `remember`). OnClose
  // listeners hear of the end of a connection that `wasOpen`; then a reconnect is scheduled.
  _socketLost(e, wasOpen, remember, out) {
    this._failPending(e, true, out, remember);
    if (wasOpen) for (const fn of this._onClose.values()) out.push(() => fn());
    this._setStatus("disconnected", out);
    this._scheduleReconnect();
  }
}

// ---------------------------------------------------------------------------------------
// Client

/** The client: handle factories and the engine's REST calls. */
export class Client {
  constructor(options = {}) {
    this._c = new ClientShared(options);
  }

  get endpoint() {
    return this._c.base;
  }
  get encoding() {
    return this._c.encoding;
  }

  get(name, key, options = {}) {
    return this._handle(KIND_GET, name, key, options);
  }
  /** options: {input, createInRegion, params, getParams} */
  getOrCreate(name, key, options = {}) {
    return this._handle(KIND_GET_OR_CREATE, name, key, { ...options, region: options.createInRegion ?? options.region });
  }
  getForId(name, actorId, options = {}) {
    if (typeof actorId !== "string" || actorId === "") throw clientError("invalid_argument", "the actor id must be a non-empty string");
    return actionProxy(new ActorHandle(new HandleState(this._c, KIND_ID, checkName(name), [], { ...options, actorId })));
  }
  /** Creates now (POST /actors); actor.duplicate_key when the key is taken. options: {input, region, params, getParams} */
  async create(name, key, options = {}) {
    checkName(name);
    const k = normaliseKey(key);
    const c = this._c;
    const body = { name, key: serializeActorKey(k), runner_name_selector: c.pool, crash_policy: "sleep" };
    if (options.input !== undefined) body.input = jsonCodec.base64Encode(cborCodec.encode(options.input));
    if (options.region) body.datacenter = options.region;
    const r = await c.rest("POST", `/actors?${c.namespaceQuery()}`, body);
    const info = parseActorInfo(r?.actor);
    return this.getForId(name, info.actorId, { params: options.params, getParams: options.getParams });
  }

  _handle(kind, name, key, options) {
    const state = new HandleState(this._c, kind, checkName(name), normaliseKey(key), options);
    return actionProxy(new ActorHandle(state));
  }

  // ---- REST ----

  /** Actors of `name` (optionally with `key`); destroyed ones only when asked. */
  async listActors(name, { key, includeDestroyed = false } = {}) {
    const c = this._c;
    const out = [];
    let cursor = "";
    for (let page = 0; page < 1000; ++page) {
      let path = `/actors?${c.namespaceQuery()}&name=${percentEncode(name)}`;
      if (key !== undefined) path += `&key=${percentEncode(serializeActorKey(normaliseKey(key)))}`;
      if (includeDestroyed) path += "&include_destroyed=true";
      if (cursor) path += `&cursor=${percentEncode(cursor)}`;
      const r = await c.rest("GET", path);
      if (!Array.isArray(r?.actors)) throw clientError("bad_response", "no actors array");
      for (const a of r.actors) out.push(parseActorInfo(a));
      const next = r.pagination?.cursor;
      if (typeof next !== "string" || next === "" || r.actors.length === 0) break;
      cursor = next;
    }
    return out;
  }
  async getActor(actorId) {
    const c = this._c;
    const r = await c.rest("GET", `/actors/${percentEncode(actorId)}?${c.namespaceQuery()}`);
    return parseActorInfo(r?.actor);
  }
  /** Actor names the connected runtimes registered. */
  async listActorNames() {
    const c = this._c;
    const out = [];
    let cursor = "";
    for (let page = 0; page < 1000; ++page) {
      let path = `/actors/names?${c.namespaceQuery()}&limit=1000`;
      if (cursor) path += `&cursor=${percentEncode(cursor)}`;
      const r = await c.rest("GET", path);
      if (!r?.names || typeof r.names !== "object" || Array.isArray(r.names)) throw clientError("bad_response", "no names object");
      const names = Object.keys(r.names);
      out.push(...names);
      const next = r.pagination?.cursor;
      if (typeof next !== "string" || next === "" || names.length === 0) break;
      cursor = next;
    }
    return out;
  }
  /** Destroys the actor and waits for the engine to finish. */
  async destroyActor(actorId) {
    const c = this._c;
    await c.rest("DELETE", `/actors/${percentEncode(actorId)}?${c.namespaceQuery()}`);
  }
  /** Puts the actor to sleep (POST /actors/{id}/sleep). */
  async sleepActor(actorId) {
    const c = this._c;
    await c.rest("POST", `/actors/${percentEncode(actorId)}/sleep?${c.namespaceQuery()}`, {});
  }

  /** Disposes every connection opened through this client. */
  async dispose() {
    await Promise.all([...this._c.conns].map((conn) => conn.dispose()));
  }
}

/**
 * createClient({endpoint = "http://127.0.0.1:6420", token, namespace = "default",
 * poolName = "default", encoding = "json", headers, WebSocket, fetch, retryPauseMs = 100,
 * requestTimeoutMs = 30000, actionTimeoutMs = 60000})
 */
export function createClient(options = {}) {
  return new Client(options);
}
