// TypeScript declarations of keel-wasm (hand-written: Emscripten 3.1.6 has no --emit-tsd).
// The runtime API: define actors with actor(), host them with serve().

/** A value actors keep in state, pass as arguments and results, and send in events: what
 *  CBOR can carry — the same values clients send and receive. */
import type { Value } from "./client/index.js";
export type { Value };

/** A structured error: `group.code` + message (+ metadata). */
export class ActorError extends Error {
  constructor(group: string, code: string, message: string, options?: { metadata?: Value; public?: boolean });
  readonly group: string;
  readonly code: string;
  readonly metadata?: Value;
  /** Public errors reach clients as they are; others as `rivetkit.internal_error`. */
  readonly public: boolean;
  /** "group.code" */
  readonly id: string;
}

/** An error for the client: group "user", code default "user_error". */
export class UserError extends ActorError {
  constructor(message: string, options?: { code?: string; metadata?: Value });
}

/** A persistent client connection (or the per-request connection of an HTTP action). */
export class Conn<ConnState = Value> {
  readonly id: string;
  readonly params: Value;
  /** A /connect WebSocket connection (survives the actor's sleep at the gateway). */
  readonly isHibernatable: boolean;
  /** The per-request connection of an HTTP action, queue send or raw request. */
  readonly transient: boolean;
  state: ConnState;
  /** Sends an event to this connection only. */
  send(event: string, ...args: Value[]): void;
  disconnect(reason?: string): void;
}

/** A message on a raw WebSocket; `rivetMessageIndex` is the gateway's index (from 1, +1 per client message). */
export interface RawMessageEvent { data: string | Uint8Array; binary: boolean; rivetMessageIndex: number }

/** A raw WebSocket accepted in onWebSocket. */
export class ActorWebSocket {
  readonly id: number;
  readonly request: Request;
  /** 1 open, 2 closing, 3 closed. */
  readonly readyState: number;
  send(data: string | Uint8Array | ArrayBuffer | ArrayBufferView): void;
  close(code?: number, reason?: string): void;
  onmessage: ((event: RawMessageEvent) => unknown) | null;
  onclose: ((event: { code: number; reason: string }) => unknown) | null;
  addEventListener(type: "message", fn: (event: RawMessageEvent) => unknown): void;
  addEventListener(type: "close", fn: (event: { code: number; reason: string }) => unknown): void;
  removeEventListener(type: "message" | "close", fn: (...args: any[]) => unknown): void;
}

type KvKey = string | Uint8Array;
type KvValue = string | Uint8Array;

export interface Kv {
  get(key: KvKey): Promise<string | null>;
  get(key: KvKey, options: { type: "text" }): Promise<string | null>;
  get(key: KvKey, options: { type: "binary" }): Promise<Uint8Array | null>;
  /** Durable before the actor's next output. */
  put(key: KvKey, value: KvValue): void;
  delete(key: KvKey): void;
  list(prefix?: KvKey, options?: { reverse?: boolean; limit?: number; type?: "text" | "binary"; keyType?: "text" | "binary" }):
    Promise<Array<[string | Uint8Array, string | Uint8Array]>>;
  /** Keys in [start, end), in key order (or reversed). */
  listRange(start: KvKey, end: KvKey, options?: { reverse?: boolean; limit?: number; type?: "text" | "binary"; keyType?: "text" | "binary" }):
    Promise<Array<[string | Uint8Array, string | Uint8Array]>>;
  deleteRange(start: KvKey, end: KvKey): Promise<void>;
}

export interface Schedule {
  /** Runs `action(...args)` after `ms`; returns the event id. Durable. */
  after(ms: number, action: string, ...args: Value[]): string;
  /** Runs `action(...args)` at `timestamp` (epoch ms or Date). */
  at(timestamp: number | Date, action: string, ...args: Value[]): string;
}

export interface QueueMessage {
  id: number;
  name: string;
  body: Value;
  createdAt: number;
  /** Present for completable receives. */
  complete?(response?: Value): Promise<void>;
}

export interface QueueReceiveOptions {
  names?: string[];
  name?: string;
  /** Milliseconds; forever when unset. */
  timeout?: number;
  completable?: boolean;
}

export interface Queue {
  send(name: string, body: Value): Promise<number>;
  /** Messages stored, including received-but-uncompleted ones. */
  size(): number;
  next(options?: QueueReceiveOptions): Promise<QueueMessage | undefined>;
  nextBatch(options?: QueueReceiveOptions & { count?: number }): Promise<QueueMessage[]>;
}

type SqlValue = null | number | bigint | string | Uint8Array;
type SqlParams = Value[] | { [name: string]: Value };

export interface ExecuteResult {
  columns: string[];
  rows: SqlValue[][];
  changes: number;
  lastInsertRowId: number | null;
  route: "read" | "write" | "writeFallback";
}

/** The actor's SQLite database (remote: executed by keel-engine). */
export interface Sql {
  /** Rows as objects. Without arguments `sql` may hold several statements; with them it is
   *  one statement (`?` positional, or one object for :name/@name/$name parameters). */
  execute<Row = Record<string, SqlValue>>(sql: string, ...args: Value[]): Promise<Row[]>;
  exec(sql: string): Promise<{ columns: string[]; rows: SqlValue[][] }>;
  query(sql: string, params?: SqlParams): Promise<{ columns: string[]; rows: SqlValue[][] }>;
  run(sql: string, params?: SqlParams): Promise<{ changes: number; lastInsertRowId: number | null }>;
  executeRaw(sql: string, params?: SqlParams): Promise<ExecuteResult>;
  executeWrite(sql: string, params?: SqlParams): Promise<ExecuteResult>;
  /** Runs `fn` with every execute forced to the writer. */
  writeMode<T>(fn: () => T | Promise<T>): Promise<T>;
  readonly backend: "local" | "remote";
}

export class ActorContext<State = any, Vars = any, ConnState = any> {
  readonly actorId: string;
  readonly name: string;
  readonly key: string[];
  readonly generation: number;
  state: State;
  vars: Vars;
  /** The calling connection (actions over a connection, connection hooks). */
  readonly conn: Conn<ConnState> | undefined;
  readonly conns: Map<string, Conn<ConnState>>;
  /** The HTTP request behind a connection hook, onRequest or onWebSocket. */
  readonly request: Request | undefined;
  broadcast(event: string, ...args: Value[]): void;
  readonly kv: Kv;
  readonly schedule: Schedule;
  readonly queue: Queue;
  readonly sql: Sql;
  readonly db: Sql;
  sleep(): void;
  destroy(): void;
  keepAwake<T>(promise: Promise<T>): Promise<T>;
  waitUntil(promise: Promise<unknown>): void;
  /**
   * Persists now (no options, or `immediate`), or at the latest `maxWait` ms from now, and
   * resolves once the engine committed.
   */
  saveState(opts?: { immediate?: boolean; maxWait?: number }): Promise<void>;
  /** True once the actor started shutting down. */
  readonly aborted: boolean;
  readonly log: { debug(...a: unknown[]): void; info(...a: unknown[]): void; warn(...a: unknown[]): void; error(...a: unknown[]): void };
}

type Awaitable<T> = T | Promise<T>;
type Ctx<S, V, C> = ActorContext<S, V, C>;

export interface ActorOptions {
  sleepTimeout?: number;
  noSleep?: boolean;
  actionTimeout?: number;
  sleepGracePeriod?: number;
  createStateTimeout?: number;
  onCreateTimeout?: number;
  onMigrateTimeout?: number;
  createVarsTimeout?: number;
  onWakeTimeout?: number;
  onBeforeActorStartTimeout?: number;
  onBeforeConnectTimeout?: number;
  createConnStateTimeout?: number;
  onConnectTimeout?: number;
  /** Changes made by work that has not answered yet are saved within this many ms (1000). */
  stateSaveInterval?: number;
  maxQueueSize?: number;
  maxQueueMessageSize?: number;
}

export interface ActorDefinition<S = any, V = any, C = any> {
  /** Initial state (copied per actor), or createState. */
  state?: S;
  createState?(c: Ctx<S, V, C>, input: Value): Awaitable<S>;
  /** Per-instance, not persisted. */
  vars?: V;
  createVars?(c: Ctx<S, V, C>): Awaitable<V>;
  connState?: C;
  createConnState?(c: Ctx<S, V, C>, params: Value): Awaitable<C>;
  actions?: { [name: string]: (c: Ctx<S, V, C>, ...args: any[]) => any };
  /** Declared events; `canSubscribe` may veto a subscription. */
  events?: string[] | { [name: string]: { canSubscribe?(c: Ctx<S, V, C>): Awaitable<boolean> } | null };
  /** Declared queues; `canPublish` may veto a send. */
  queues?: string[] | { [name: string]: { canPublish?(c: Ctx<S, V, C>): Awaitable<boolean> } | null };
  /** The actor's database; onMigrate runs at every start, in write mode. */
  db?: boolean | { onMigrate?(db: Sql, c: Ctx<S, V, C>): Awaitable<void> };
  options?: ActorOptions;
  onCreate?(c: Ctx<S, V, C>, input: Value): Awaitable<void>;
  onMigrate?(c: Ctx<S, V, C>, isNew: boolean): Awaitable<void>;
  onWake?(c: Ctx<S, V, C>): Awaitable<void>;
  onBeforeActorStart?(c: Ctx<S, V, C>): Awaitable<void>;
  run?(c: Ctx<S, V, C>): Awaitable<void>;
  onSleep?(c: Ctx<S, V, C>): Awaitable<void>;
  onDestroy?(c: Ctx<S, V, C>): Awaitable<void>;
  onBeforeConnect?(c: Ctx<S, V, C>, params: Value): Awaitable<void>;
  onConnect?(c: Ctx<S, V, C>, conn: Conn<C>): Awaitable<void>;
  onDisconnect?(c: Ctx<S, V, C>, conn: Conn<C>): Awaitable<void>;
  onStateChange?(c: Ctx<S, V, C>, state: S): void;
  /** `request.signal` aborts when the client goes away before the response; the handler is
   * not cancelled, and its response is dropped. */
  onRequest?(c: Ctx<S, V, C>, request: Request): Awaitable<Response>;
  onWebSocket?(c: Ctx<S, V, C>, ws: ActorWebSocket): Awaitable<void>;
}

export type Actor<S = any, V = any, C = any> = ActorDefinition<S, V, C> & { readonly __keelActor: true };

export function actor<S = any, V = any, C = any>(definition: ActorDefinition<S, V, C>): Actor<S, V, C>;

export interface ServeOptions {
  /** KEEL_ENDPOINT, default http://127.0.0.1:6420 */
  endpoint?: string;
  /** KEEL_TOKEN */
  token?: string;
  /** KEEL_NAMESPACE, default "default" */
  namespace?: string;
  /** KEEL_POOL, default "default" */
  pool?: string;
  /** KEEL_SQLITE_BACKEND; wasm has only "remote" ("local" fails at the first SQL call with sqlite.unavailable). */
  sqliteBackend?: "auto" | "local" | "remote";
  /** KEEL_LOG_LEVEL, default "warn" */
  logLevel?: "trace" | "debug" | "info" | "warn" | "error" | "off";
  logger?: (level: string, component: string, message: string) => void;
  version?: number;
  protocolVersion?: 2 | 3 | 4;
  envoyKey?: string;
  inspectorToken?: string;
  WebSocket?: typeof WebSocket;
  /** A compiled keel.wasm (required in workerd: `import wasmModule from "keel-wasm/dist/keel.wasm"`). */
  wasmModule?: WebAssembly.Module;
  /** An environment object (e.g. a Worker's env) instead of process.env / Deno.env. */
  env?: Record<string, string | undefined>;
  /** Node/Deno: SIGINT/SIGTERM stop gracefully (default true). */
  handleSignals?: boolean;
  /** Resolve serve() only once the engine accepted the envoy (default true). */
  waitForConnection?: boolean;
  /** Default 30000: then serve() rejects with envoy.not_connected and stops the registry. */
  connectTimeoutMs?: number;
}

export class Registry {
  /** Prefer serve(); `module` is what loadKeel() resolves to. */
  constructor(module: unknown, options?: ServeOptions);
  readonly envoyKey: string;
  readonly connected: boolean;
  /** Awake actor instances in this runtime. */
  readonly actorCount: number;
  readonly closed: boolean;
  register(actors: Record<string, Actor>): void;
  start(): void;
  ready(timeoutMs?: number): Promise<void>;
  /** Graceful: every actor saves and sleeps, then the connection closes. */
  shutdown(options?: { immediate?: boolean }): Promise<void>;
}

export function serve(actors: Record<string, Actor>, options?: ServeOptions): Promise<Registry>;
export function loadKeel(options?: { wasmModule?: WebAssembly.Module }): Promise<unknown>;
export function detectHost(): "workerd" | "deno" | "node" | "web";

/** A serverless host (workerd, or any fetch-handler host): the engine POSTs the start
 *  command to `{basePath}/start` and the actor runs for that request's life. */
export function serverless(actors: Record<string, Actor>, options?: ServeOptions & {
  /** Default /api/rivet */
  basePath?: string;
  /** Default 1 MiB */
  maxStartPayloadBytes?: number;
  /** SSE ping period, default 1000 */
  pingIntervalMs?: number;
  /** Bound on the registry's shutdown after the stream ends, default 5000 */
  stopTimeoutMs?: number;
}): {
  fetch(request: Request, env?: Record<string, unknown>, ctx?: { waitUntil(p: Promise<unknown>): void }): Promise<Response>;
};
