// The `c` every action and hook receives: a thin view over one actor instance in the C++
// core (src/wasm/keel_wasm.cc), identified by a numeric handle. Once the instance has
// stopped, its operations fail with `actor.stopped`.
import { ActorError } from "./errors.js";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function unwrap(r) {
  if (r !== null && typeof r === "object" && "__keelError" in r) throw r.__keelError;
  return r;
}
const toBytes = (k) => (typeof k === "string" ? encoder.encode(k) : k);
const fromBytes = (b, type) => (type === "binary" ? b : decoder.decode(b));

const invalidArgument = (message) => new ActorError("actor", "invalid_argument", message);

// A value as an argument error shows what it got: strings quoted, other primitives as they
// print, objects by type.
function describeArg(v) {
  if (typeof v === "string") return JSON.stringify(v);
  if (typeof v === "number" || typeof v === "bigint" || typeof v === "boolean" || v == null) return String(v);
  if (v instanceof Date) return "an invalid Date";
  return typeof v;
}

// Checks an argument the core takes as text (an event, queue or action name, SQL, a
// reason): anything else would reach the wasm binding and fail as an internal error.
// `call` names the call and `what` the argument, e.g. ("c.broadcast", "the event name").
function stringArg(value, call, what, { nonEmpty = false } = {}) {
  if (typeof value !== "string" || (nonEmpty && value === "")) {
    throw invalidArgument(`${call}: ${what} must be a ${nonEmpty ? "non-empty " : ""}string, got ${describeArg(value)}`);
  }
  return value;
}

function isNamedParams(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v) && !ArrayBuffer.isView(v) &&
    !(v instanceof ArrayBuffer);
}
// execute(sql, ...args): one plain object → named parameters; otherwise positional.
function params(args) {
  if (args.length === 0) return undefined;
  if (args.length === 1 && isNamedParams(args[0])) return args[0];
  return args;
}
function rowsToObjects({ columns, rows }) {
  return rows.map((row) => {
    const o = {};
    columns.forEach((c, i) => { o[c] = row[i]; });
    return o;
  });
}

export class Conn {
  constructor(rt, handle, id) {
    this._rt = rt;
    this._h = handle;
    this.id = id;
  }
  get params() { return unwrap(this._rt.connParams(this._h, this.id)); }
  // A /connect WebSocket connection that survives the actor's sleep at the gateway.
  get isHibernatable() { return unwrap(this._rt.connFlags(this._h, this.id)).hibernatable; }
  // The per-request connection of an HTTP action, queue send or raw request.
  get transient() { return unwrap(this._rt.connFlags(this._h, this.id)).transient; }
  get state() { return unwrap(this._rt.connGetState(this._h, this.id)); }
  set state(v) { unwrap(this._rt.connSetState(this._h, this.id, v)); }
  send(event, ...args) {
    stringArg(event, "conn.send", "the event name");
    unwrap(this._rt.connSend(this._h, this.id, event, args));
  }
  disconnect(reason) {
    if (reason != null) stringArg(reason, "conn.disconnect", "the reason");
    unwrap(this._rt.connDisconnect(this._h, this.id, reason ?? ""));
  }
}

class Kv {
  constructor(rt, h) { this._rt = rt; this._h = h; }
  // Values come back as strings, or as Uint8Array with {type: "binary"}; null when absent.
  async get(key, { type = "text" } = {}) {
    const v = await this._rt.kvGet(this._h, toBytes(key));
    return v === null ? null : fromBytes(v, type);
  }
  put(key, value) { unwrap(this._rt.kvPut(this._h, toBytes(key), toBytes(value))); }
  delete(key) { unwrap(this._rt.kvDelete(this._h, toBytes(key))); }
  // [[key, value], …] of the keys starting with `prefix`, in key order.
  async list(prefix = "", { reverse = false, limit, type = "text", keyType = "text" } = {}) {
    const entries = await this._rt.kvList(this._h, toBytes(prefix), reverse, limit ?? -1);
    return entries.map(([k, v]) => [fromBytes(k, keyType), fromBytes(v, type)]);
  }
  // [[key, value], …] of the keys in [start, end), in key order (or reversed).
  async listRange(start, end, { reverse = false, limit, type = "text", keyType = "text" } = {}) {
    const entries = await this._rt.kvListRange(this._h, toBytes(start), toBytes(end), reverse, limit ?? -1);
    return entries.map(([k, v]) => [fromBytes(k, keyType), fromBytes(v, type)]);
  }
  deleteRange(start, end) { return this._rt.kvDeleteRange(this._h, toBytes(start), toBytes(end)); }
}

// The latest time an alarm may be set for: JavaScript's last Date (year 275760).
const MAX_TIMESTAMP = 8.64e15;

class Schedule {
  constructor(rt, h) { this._rt = rt; this._h = h; }
  // Runs `action(...args)` after `ms` milliseconds (durable); returns the event id.
  after(ms, action, ...args) {
    if (typeof ms !== "number" || !Number.isFinite(ms) || ms < 0) {
      throw invalidArgument(`schedule.after: the delay must be a finite number of milliseconds >= 0, got ${describeArg(ms)}`);
    }
    stringArg(action, "schedule.after", "the action's name", { nonEmpty: true });
    const at = unwrap(this._rt.nowMs()) + ms;
    if (at > MAX_TIMESTAMP) throw invalidArgument(`schedule.after: ${ms} ms from now is past the latest time a Date can hold`);
    return unwrap(this._rt.schedule(this._h, at, action, args));
  }
  // Runs `action(...args)` at `timestamp` (epoch ms, or a Date).
  at(timestamp, action, ...args) {
    const ts = timestamp instanceof Date ? timestamp.getTime() : timestamp;
    if (typeof ts !== "number" || !Number.isFinite(ts) || ts < 0 || ts > MAX_TIMESTAMP) {
      throw invalidArgument(`schedule.at: the time must be epoch milliseconds (a finite number >= 0) or a valid Date, got ${describeArg(timestamp)}`);
    }
    stringArg(action, "schedule.at", "the action's name", { nonEmpty: true });
    return unwrap(this._rt.schedule(this._h, ts, action, args));
  }
}

class Queue {
  constructor(rt, h, inv) { this._rt = rt; this._h = h; this._inv = inv; }
  async send(name, body) {
    stringArg(name, "queue.send", "the queue name");
    return await this._rt.queueSend(this._h, name, body);
  }
  // Messages stored (including received-but-uncompleted ones).
  size() { return unwrap(this._rt.queueSize(this._h)); }
  // The next message (waiting up to `timeout` ms, forever when unset), or undefined.
  // `completable`: the message stays stored until `message.complete(response)`.
  async next({ names, name, timeout, completable = false } = {}) {
    const [m] = await this.nextBatch({ names, name, timeout, completable, count: 1 });
    return m;
  }
  async nextBatch({ names, name, timeout, completable = false, count = 1 } = {}) {
    const list = names ?? (name !== undefined ? [name] : undefined);
    if (list !== undefined && (!Array.isArray(list) || list.some((n) => typeof n !== "string"))) {
      throw invalidArgument("queue: `names` must be an array of queue names (strings)");
    }
    if (timeout !== undefined && (typeof timeout !== "number" || !(timeout >= 0))) {
      throw invalidArgument(`queue: \`timeout\` must be a number of milliseconds >= 0, got ${describeArg(timeout)}`);
    }
    if (!Number.isInteger(count) || count < 1) {
      throw invalidArgument(`queue: \`count\` must be an integer >= 1, got ${describeArg(count)}`);
    }
    const msgs = await this._rt.queueReceive(this._h, this._inv, { names: list, timeout, completable, count });
    return msgs.map((m) => {
      if (completable) m.complete = (response) => this._rt.queueComplete(this._h, this._inv, m.id, response);
      return m;
    });
  }
}

class Sql {
  constructor(rt, h) { this._rt = rt; this._h = h; }
  // Rows as objects. Without arguments `sql` may hold several statements; with them it is
  // one statement (`?` positional, or one object for :name/@name/$name parameters).
  // Each rejects with actor.invalid_argument when `sql` is not a string.
  async execute(sql, ...args) {
    stringArg(sql, "sql.execute", "the SQL text");
    if (args.length === 0) return rowsToObjects(await this._rt.sqlExec(this._h, sql));
    return rowsToObjects(await this._rt.sqlExecute(this._h, sql, params(args), false));
  }
  async exec(sql) {
    stringArg(sql, "sql.exec", "the SQL text");
    return await this._rt.sqlExec(this._h, sql);
  }
  async query(sql, p) {
    stringArg(sql, "sql.query", "the SQL text");
    const r = await this._rt.sqlExecute(this._h, sql, p, false);
    return { columns: r.columns, rows: r.rows };
  }
  async run(sql, p) {
    stringArg(sql, "sql.run", "the SQL text");
    const r = await this._rt.sqlExecute(this._h, sql, p, false);
    return { changes: r.changes, lastInsertRowId: r.lastInsertRowId };
  }
  async executeRaw(sql, p) {
    stringArg(sql, "sql.executeRaw", "the SQL text");
    return await this._rt.sqlExecute(this._h, sql, p, false);
  }
  async executeWrite(sql, p) {
    stringArg(sql, "sql.executeWrite", "the SQL text");
    return await this._rt.sqlExecute(this._h, sql, p, true);
  }
  // Runs `fn` with every execute forced to the writer (migrations do this already).
  async writeMode(fn) {
    unwrap(this._rt.sqlWriteMode(this._h, true));
    try {
      return await fn();
    } finally {
      unwrap(this._rt.sqlWriteMode(this._h, false));
    }
  }
  get backend() { return unwrap(this._rt.sqlBackend(this._h)); }
}

// A Fetch API Request for the core's {method, path, query, headers}; its `signal` follows
// `raw.signal` when the core gives one (onRequest: aborted when the client goes away).
export function toRequest(raw, body) {
  const query = raw.query ? `?${raw.query}` : "";
  const method = raw.method.toUpperCase();
  const init = { method, headers: raw.headers };
  if (raw.signal) init.signal = raw.signal;
  if (body !== undefined && method !== "GET" && method !== "HEAD" && body.length > 0) init.body = body;
  return new Request(`http://actor${raw.path}${query}`, init);
}

// A raw WebSocket accepted in onWebSocket(c, ws) (actors.md §4.9): send(string | bytes),
// close(code, reason), and "message" ({data: string | Uint8Array, binary}) / "close"
// ({code, reason}) events through addEventListener or onmessage/onclose. A listener's
// promise keeps the actor awake until it settles.
// The client may send as soon as it sees the socket open, which is before onBeforeConnect,
// onConnect and onWebSocket have run. Events that come before onWebSocket's synchronous
// part has returned wait for it, in order, so the listeners it adds there see every
// message; a listener added later (after an await) sees only what comes after it.
export class ActorWebSocket {
  constructor(rt, id, request) {
    this._rt = rt;
    this.id = id;
    this._raw = request;
    this.readyState = 1;
    this.onmessage = null;
    this.onclose = null;
    this._listeners = { message: new Set(), close: new Set() };
    this._ready = new Promise((resolve) => { this._start = resolve; });
  }
  // onWebSocket's synchronous part is over: held events go out (index.js).
  _started() {
    if (this._start === null) return;
    const start = this._start;
    this._start = null;
    start();
  }
  get request() {
    return this._req ??= toRequest(this._raw);
  }
  send(data) {
    const binary = typeof data !== "string";
    if (binary && !ArrayBuffer.isView(data) && !(data instanceof ArrayBuffer)) {
      throw invalidArgument(`ws.send: the data must be a string or bytes (Uint8Array, ArrayBuffer), got ${describeArg(data)}`);
    }
    unwrap(this._rt.rawSend(this.id, data, binary));
  }
  close(code = 1000, reason) {
    if (!Number.isInteger(code) || code < 1000 || code > 4999) {
      throw invalidArgument(`ws.close: the code must be an integer from 1000 to 4999, got ${describeArg(code)}`);
    }
    if (reason != null) stringArg(reason, "ws.close", "the reason");
    if (this.readyState >= 2) return;
    this.readyState = 2;
    unwrap(this._rt.rawClose(this.id, code, reason ?? ""));
  }
  addEventListener(type, fn) { this._listeners[type]?.add(fn); }
  removeEventListener(type, fn) { this._listeners[type]?.delete(fn); }
  _dispatch(type, event) {
    // Held until onWebSocket has added its listeners; each waits on the same promise, so
    // they leave in the order they came, before any event that comes after.
    if (this._start !== null) return this._ready.then(() => this._dispatch(type, event));
    if (type === "close") this.readyState = 3;
    const results = [];
    const prop = type === "message" ? this.onmessage : this.onclose;
    if (typeof prop === "function") results.push(prop.call(this, event));
    for (const fn of this._listeners[type] ?? []) results.push(fn.call(this, event));
    return Promise.all(results);
  }
}

const reentrant = () => {
  throw new ActorError("actor", "state_mutation_reentrant", "State mutations are not allowed inside onStateChange.");
};
const readOnlyHandler = {
  get(target, prop, receiver) {
    const v = Reflect.get(target, prop, receiver);
    return v !== null && typeof v === "object" && !ArrayBuffer.isView(v) ? readOnly(v) : v;
  },
  set: reentrant,
  defineProperty: reentrant,
  deleteProperty: reentrant,
  setPrototypeOf: reentrant,
};
// A deep read-only view (plain objects and arrays; Maps and bytes are returned as they are).
function readOnly(v) {
  return v !== null && typeof v === "object" && !ArrayBuffer.isView(v) && !(v instanceof Map) ? new Proxy(v, readOnlyHandler) : v;
}

export class ActorContext {
  constructor(rt, info, logger) {
    this._rt = rt;
    this._i = info;
    this._h = info.handle;
    this._logger = logger;
  }
  // The HTTP request behind a connection hook, onRequest or onWebSocket (Fetch Request).
  get request() {
    if (!this._i.request) return undefined;
    return this._req ??= toRequest(this._i.request);
  }
  get actorId() { return this._i.actorId; }
  get name() { return this._i.name; }
  get key() { return this._i.key; }
  get generation() { return this._i.generation; }

  // Inside onStateChange the state is read-only (writes throw actor.state_mutation_reentrant).
  get state() {
    const state = unwrap(this._rt.getState(this._h));
    return this._i.inStateChange ? readOnly(state) : state;
  }
  set state(v) { unwrap(this._rt.setState(this._h, v)); }
  get vars() { return unwrap(this._rt.getVars(this._h)); }
  set vars(v) { unwrap(this._rt.setVars(this._h, v)); }

  // The calling connection (actions over a WebSocket connection, connection hooks).
  get conn() {
    const id = this._i.conn ?? this._i.connId;
    return id === undefined ? undefined : new Conn(this._rt, this._h, id);
  }
  // Connected clients (persistent connections), by id.
  get conns() {
    const ids = unwrap(this._rt.connIds(this._h));
    return new Map(ids.map((id) => [id, new Conn(this._rt, this._h, id)]));
  }
  broadcast(event, ...args) {
    stringArg(event, "c.broadcast", "the event name");
    unwrap(this._rt.broadcast(this._h, event, args));
  }

  get kv() { return new Kv(this._rt, this._h); }
  get schedule() { return new Schedule(this._rt, this._h); }
  get queue() { return new Queue(this._rt, this._h, this._i.inv); }
  get sql() { return new Sql(this._rt, this._h); }
  get db() { return this.sql; }

  sleep() { unwrap(this._rt.sleep(this._h)); }
  destroy() { unwrap(this._rt.destroy(this._h)); }
  keepAwake(promise) { unwrap(this._rt.keepAwake(this._h, promise)); return promise; }
  waitUntil(promise) { unwrap(this._rt.waitUntil(this._h, promise)); }
  // saveState() and saveState({immediate: true}) save now; saveState({maxWait: ms}) at the
  // latest ms from now. Each resolves once the engine committed.
  saveState(opts) {
    const maxWait = opts && !opts.immediate && opts.maxWait != null ? Number(opts.maxWait) : 0;
    return this._rt.saveState(this._h, Number.isFinite(maxWait) && maxWait > 0 ? maxWait : 0);
  }
  get aborted() { return unwrap(this._rt.aborted(this._h)); }

  // Arguments are joined by spaces; objects and arrays as JSON, Errors with their stack.
  get log() {
    const id = this._i.actorId;
    const l = this._logger;
    const line = (a) => `${id}: ${a.map(logText).join(" ")}`;
    return {
      debug: (...a) => l("debug", "actor", line(a)),
      info: (...a) => l("info", "actor", line(a)),
      warn: (...a) => l("warn", "actor", line(a)),
      error: (...a) => l("error", "actor", line(a)),
    };
  }
}

function logText(v) {
  try {
    if (typeof v === "string") return v;
    if (v instanceof Error) return v.stack ?? `${v.name}: ${v.message}`;
    if (v !== null && typeof v === "object") {
      return JSON.stringify(v, (_k, x) => (typeof x === "bigint" ? `${x}n` : x instanceof Map ? Object.fromEntries(x) : x));
    }
    return String(v);
  } catch {
    try {
      return String(v);
    } catch {
      return Object.prototype.toString.call(v);
    }
  }
}

export { unwrap, ActorError };
