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
import { checkOptions } from "./options.js";

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
//
// The definition is checked strictly (actors.md §1.1): an unknown key, an unknown option, a
// hook or action that is not a function, an option that is not a number of milliseconds,
// events or queues that are neither an array of names nor an object, or both halves of a mutually exclusive pair (state/createState, vars/createVars,
// connState/createConnState) throw config.invalid_actor.
export function actor(definition) {
  const invalid = (message) => new ActorError("config", "invalid_actor", message);
  if (definition === null || typeof definition !== "object" || Array.isArray(definition)) {
    throw invalid("actor() takes a definition object");
  }
  for (const key of Object.keys(definition)) {
    if (!DEFINITION_KEYS.has(key)) {
      const hint = NOT_SUPPORTED.has(key) ? " (not supported by the wasm runtime)" : "";
      throw invalid(`unknown key \`${key}\`${hint}; valid keys: ${[...DEFINITION_KEYS].join(", ")}`);
    }
  }
  for (const hook of HOOKS) {
    if (definition[hook] !== undefined && typeof definition[hook] !== "function") {
      throw invalid(`${hook} must be a function`);
    }
  }
  for (const [a, b] of [["state", "createState"], ["vars", "createVars"], ["connState", "createConnState"]]) {
    if (definition[a] !== undefined && definition[b] !== undefined) {
      throw invalid(`\`${a}\` and \`${b}\` are mutually exclusive: give one of them`);
    }
  }
  const { actions, options } = definition;
  if (actions !== undefined && (actions === null || typeof actions !== "object" || Array.isArray(actions))) {
    throw invalid("actions must be an object of functions");
  }
  for (const [name, fn] of Object.entries(actions ?? {})) {
    if (typeof fn !== "function") throw invalid(`action ${name} must be a function`);
  }
  for (const key of ["events", "queues"]) {
    const list = definition[key];
    if (list === undefined || list === null) continue;
    const names = Array.isArray(list) ? list.every((n) => typeof n === "string") : typeof list === "object";
    if (!names) throw invalid(`${key} must be an array of names (strings) or an object keyed by name`);
  }
  if (options !== undefined) {
    if (options === null || typeof options !== "object" || Array.isArray(options)) throw invalid("options must be an object");
    for (const [key, value] of Object.entries(options)) {
      if (key === "noSleep") {
        if (value !== undefined && typeof value !== "boolean") throw invalid("options.noSleep must be a boolean");
      } else if (NUMBER_OPTIONS.has(key)) {
        if (value !== undefined && (typeof value !== "number" || !Number.isFinite(value) || value < 0)) {
          throw invalid(`options.${key} must be a finite number >= 0 (milliseconds, or a count), got ${String(value)}`);
        }
      } else if (!IGNORED_OPTIONS.has(key)) {
        throw invalid(`unknown option \`${key}\`; valid options: noSleep, ${[...NUMBER_OPTIONS].join(", ")}`);
      }
    }
  }
  return { ...definition, [DEFINITION]: true };
}
const DEFINITION_KEYS = new Set(["state", "vars", "connState", "actions", "events", "queues", "db", "options", ...HOOKS]);
// actors.md §1.1 keys this runtime does not implement: refused rather than ignored.
const NOT_SUPPORTED = new Set(["actionInputSchemas", "connParamsSchema", "onBeforeActionResponse"]);
const NUMBER_OPTIONS = new Set(["sleepTimeout", "actionTimeout", "sleepGracePeriod", "createStateTimeout",
  "onCreateTimeout", "onMigrateTimeout", "createVarsTimeout", "onWakeTimeout", "onBeforeActorStartTimeout",
  "onBeforeConnectTimeout", "createConnStateTimeout", "onConnectTimeout", "stateSaveInterval", "maxQueueSize",
  "maxQueueMessageSize"]);
// Accepted for compatibility, without effect here: display metadata and the deprecated
// timeouts sleepGracePeriod superseded (actors.md §1.2).
const IGNORED_OPTIONS = new Set(["name", "icon", "onDestroyTimeout", "waitUntilTimeout"]);

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
  if (def.onWebSocket) {
    // Messages that came before onWebSocket ran wait until its synchronous part (where a
    // handler adds its listeners) has returned or thrown.
    out.onWebSocket = (c, ws) => {
      try {
        return def.onWebSocket(c, ws);
      } finally {
        ws._started();
      }
    };
  }
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
    this.endpoint = options.endpoint ?? env.KEEL_ENDPOINT ?? "http://127.0.0.1:6420";
    this.rt = new M.WasmRuntime(this.host, {
      endpoint: this.endpoint,
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
    if (!connected) {
      throw new ActorError("envoy", "not_connected",
        `the engine at ${this.endpoint} did not accept this envoy within ${timeoutMs} ms ` +
        "(is keel-engine running there, and are the token and namespace right?)",
        { metadata: { endpoint: this.endpoint, timeoutMs } });
    }
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
// default true), waitForConnection (default true), connectTimeoutMs (default 30000). An
// unknown option or a value of the wrong kind rejects with config.invalid_options.
export async function serve(actors, options = {}) {
  checkOptions("serve", options);
  const M = await loadKeel(options);
  const registry = new Registry(M, options);
  registry.register(actors);
  registry.start();
  const removeSignals = options.handleSignals !== false ? installSignals(registry) : () => {};
  if (options.waitForConnection !== false) {
    try {
      await registry.ready(options.connectTimeoutMs);
    } catch (e) {
      // Nothing to serve: stop reconnecting, so a program that handles the error can exit.
      removeSignals();
      await registry.shutdown({ immediate: true });
      throw e;
    }
  }
  return registry;
}

// Returns a function that removes the handlers.
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
    return () => {
      process.off("SIGINT", stop);
      process.off("SIGTERM", stop);
    };
  }
  if (host === "deno") {
    try {
      Deno.addSignalListener("SIGINT", stop);
      Deno.addSignalListener("SIGTERM", stop);
      return () => {
        Deno.removeSignalListener("SIGINT", stop);
        Deno.removeSignalListener("SIGTERM", stop);
      };
    } catch {}
  }
  return () => {};
}
