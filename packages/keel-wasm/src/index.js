/* @ts-self-types="./index.d.ts" */
// keel-wasm: write Keel actors in JavaScript. The actor runtime and the envoy protocol are
// the C++ core compiled to WebAssembly (dist/keel.wasm); this module defines actors and
// connects them to keel-engine over the host's WebSocket.
//
//   import { actor, serve } from "keel-wasm";
//   const counter = actor({
//     state: { count: 0 },
//     actions: {
//       increment(c, n) { c.state.count += n; c.broadcast("newCount", c.state.count); return c.state.count; },
//     },
//   });
//   await serve({ counter }, { endpoint: "http://127.0.0.1:6420" });
import { ActorContext, Conn } from "./context.js";
import { ActorError, UserError } from "./errors.js";
import { detectHost, loadKeel, makeHost } from "./host.js";

export { ActorError, UserError, Conn, ActorContext, loadKeel, detectHost };
export { serverless } from "./serverless.js";

const DEFINITION = Symbol.for("keel.actor");
const HOOKS = ["createState", "createVars", "onCreate", "onMigrate", "onWake", "onBeforeActorStart",
  "run", "onSleep", "onDestroy", "onBeforeConnect", "createConnState", "onConnect", "onDisconnect",
  "onStateChange", "onRequest", "onWebSocket"];

// Declares an actor type. Keys: state | createState(c, input), vars | createVars(c),
// connState | createConnState(c, params), actions {name(c, ...args)}, events, queues,
// db (true, or {onMigrate(db)}), options (sleepTimeout, noSleep, actionTimeout, … in ms)
// and the hooks onCreate, onMigrate, onWake, onBeforeActorStart, run, onSleep, onDestroy,
// onBeforeConnect(c, params), onConnect(c, conn), onDisconnect(c, conn),
// onStateChange(c, state), onRequest(c, request) → Response, onWebSocket(c, ws).
export function actor(definition) {
  if (definition === null || typeof definition !== "object") {
    throw new ActorError("config", "invalid_actor", "actor() takes a definition object");
  }
  for (const hook of HOOKS) {
    if (definition[hook] !== undefined && typeof definition[hook] !== "function") {
      throw new ActorError("config", "invalid_actor", `${hook} must be a function`);
    }
  }
  for (const [name, fn] of Object.entries(definition.actions ?? {})) {
    if (typeof fn !== "function") throw new ActorError("config", "invalid_actor", `action ${name} must be a function`);
  }
  return { ...definition, [DEFINITION]: true };
}

function envOf(options) {
  if (options.env) return options.env;
  if (typeof process !== "undefined" && process.env) return process.env;
  if (typeof Deno !== "undefined") {
    try {
      return Deno.env.toObject();
    } catch {
      return {};  // no --allow-env
    }
  }
  return {};
}

function defaultLogger(minLevel) {
  const order = { trace: 0, debug: 1, info: 2, warn: 3, error: 4, off: 5 };
  const min = order[minLevel] ?? 2;
  return (level, component, message) => {
    if ((order[level] ?? 2) < min) return;
    const line = `${new Date().toISOString()} ${level.toUpperCase()} ${component}: ${message}`;
    (level === "error" || level === "warn" ? console.error : console.log)(line);
  };
}

// The core sees plain definitions; connection hooks get (c, conn) here.
function toCoreDefinition(def) {
  const out = { ...def };
  if (def.onConnect) out.onConnect = (c) => def.onConnect(c, c.conn);
  if (def.onDisconnect) out.onDisconnect = (c) => def.onDisconnect(c, c.conn);
  // The state passed is the context's (read-only there, like c.state).
  if (def.onStateChange) out.onStateChange = (c) => def.onStateChange(c, c.state);
  if (def.onWebSocket) out.onWebSocket = (c, socket) => def.onWebSocket(c, c._registry.host.makeSocket(socket));
  if (def.db && typeof def.db === "object" && typeof def.db.onMigrate === "function") {
    const migrate = def.db.onMigrate;
    out.db = { onMigrate: (c) => migrate(c.sql, c) };
  }
  return out;
}

// A running registry: the actors of one runtime, connected to keel-engine as an envoy.
export class Registry {
  constructor(M, options) {
    this._M = M;
    const env = envOf(options);
    const logLevel = options.logLevel ?? env.KEEL_LOG_LEVEL ?? "warn";
    this.logger = options.logger ?? defaultLogger(logLevel);
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.WebSocket !== "function") {
      throw new ActorError("config", "no_websocket",
        "this host has no global WebSocket: pass options.WebSocket, or run Node 20 with --experimental-websocket");
    }
    const sqliteBackend = options.sqliteBackend ?? env.KEEL_SQLITE_BACKEND ?? "remote";
    if (!["auto", "local", "remote"].includes(sqliteBackend)) {
      throw new ActorError("config", "invalid_sqlite_backend",
        `sqliteBackend must be auto, local or remote, got "${sqliteBackend}"`);
    }
    const seed = new Uint32Array(2);
    crypto.getRandomValues(seed);
    this.host = makeHost(M, this);
    this.rt = new M.WasmRuntime(this.host, {
      endpoint: options.endpoint ?? env.KEEL_ENDPOINT ?? "http://127.0.0.1:6420",
      token: options.token ?? env.KEEL_TOKEN ?? "",
      namespace: options.namespace ?? env.KEEL_NAMESPACE ?? "default",
      pool: options.pool ?? env.KEEL_POOL ?? "default",
      envoyKey: options.envoyKey ?? "",
      version: options.version ?? Number(env.KEEL_ENVOY_VERSION ?? 1),
      protocolVersion: options.protocolVersion ?? 4,
      sqliteBackend,
      logLevel,
      inspectorToken: options.inspectorToken ?? env.KEEL_INSPECTOR_TOKEN,
      seedHi: seed[0],
      seedLo: seed[1],
    });
    this._stopped = null;
    this.closed = false;
  }

  makeContext(info) {
    const c = new ActorContext(this.rt, info, this.logger);
    c._registry = this;
    return c;
  }

  register(actors) {
    for (const [name, def] of Object.entries(actors)) {
      if (!def || !def[DEFINITION]) {
        throw new ActorError("config", "invalid_actor", `${name}: not an actor() definition`);
      }
      this.rt.registerActor(name, toCoreDefinition(def));
    }
  }

  start() {
    this.rt.start();
  }

  get envoyKey() {
    return this.rt.envoyKey();
  }
  get connected() {
    return this.rt.connected();
  }
  get actorCount() {
    return this.rt.instanceCount();
  }

  // Resolves once the engine has greeted this envoy (rejects after `timeoutMs`).
  async ready(timeoutMs = 30000) {
    let timer;
    const timeout = new Promise((resolve) => { timer = setTimeout(() => resolve(false), timeoutMs); });
    const connected = await Promise.race([this.rt.whenConnected(), timeout]);
    clearTimeout(timer);
    if (!connected) throw new ActorError("envoy", "not_connected", "the engine did not accept this envoy in time");
  }

  // Graceful stop: every actor sleeps (state is saved), then the connection closes.
  // `immediate` skips waiting for the actors.
  shutdown({ immediate = false } = {}) {
    if (!this._stopped) {
      // The C++ runtime object is kept (a few KB): an actor's JS promise may still settle
      // after an immediate shutdown, and its coroutine must find the runtime alive.
      this._stopped = this.rt.shutdown(immediate).then(() => {
        this.closed = true;
        this.host.clearAllTimers();
      });
    }
    return this._stopped;
  }
}

// Starts a registry hosting `actors` ({name: actor(...)}) and connects it to the engine.
// Options (environment fallbacks as in the native runtime): endpoint (KEEL_ENDPOINT),
// token (KEEL_TOKEN), namespace (KEEL_NAMESPACE), pool (KEEL_POOL), sqliteBackend
// (KEEL_SQLITE_BACKEND; wasm has only "remote"), logLevel (KEEL_LOG_LEVEL), version,
// protocolVersion (2–4), envoyKey, WebSocket, wasmModule (workerd), env (an environment
// object, e.g. a Worker's), handleSignals (Node/Deno: SIGINT/SIGTERM stop gracefully;
// default true), waitForConnection (default true).
export async function serve(actors, options = {}) {
  const M = await loadKeel(options);
  const registry = new Registry(M, options);
  registry.register(actors);
  registry.start();
  if (options.handleSignals !== false) installSignals(registry);
  if (options.waitForConnection !== false) await registry.ready(options.connectTimeoutMs);
  return registry;
}

function installSignals(registry) {
  const stop = () => {
    registry.shutdown().then(() => {
      if (typeof process !== "undefined" && process.exit) process.exit(0);
      if (typeof Deno !== "undefined") Deno.exit(0);
    });
  };
  const host = detectHost();
  if (host === "node") {
    process.once("SIGINT", stop);
    process.once("SIGTERM", stop);
  } else if (host === "deno") {
    try {
      Deno.addSignalListener("SIGINT", stop);
      Deno.addSignalListener("SIGTERM", stop);
    } catch {}
  }
}
