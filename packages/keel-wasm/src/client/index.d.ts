// Type declarations of the Keel JS client (src/client/index.js). Hand-written.

/** json (text frames, application/json), cbor or bare (binary frames, application/octet-stream). */
export type Encoding = "json" | "cbor" | "bare";

/**
 * An application value as it travels (actors.md §4.8): undefined, null, boolean, number,
 * bigint (integers beyond ±2^53), string, Uint8Array (bytes), arrays, plain objects (maps
 * with text keys) and Map (maps with other keys).
 */
export type Value =
  | undefined
  | null
  | boolean
  | number
  | bigint
  | string
  | Uint8Array
  | Value[]
  | { [key: string]: Value }
  | Map<Value, Value>;

/** A key: one string, or a list of strings ([] and undefined are the empty key). */
export type ActorKey = string | readonly string[];

/** A WebSocket constructor (the host's, or e.g. the `ws` package's). */
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocket;

export interface ClientOptions {
  /** The engine's gateway, http:// or https://. Default "http://127.0.0.1:6420". */
  endpoint?: string;
  /** Bearer token for REST, rvt-token / x-rivet-token for the gateway, rivet_token.* for WebSockets. */
  token?: string;
  /** Default "default". */
  namespace?: string;
  /** The pool getOrCreate/create place new actors in. Default "default". */
  poolName?: string;
  /** Default "json". */
  encoding?: Encoding;
  /** Extra headers on every HTTP request (not on WebSockets). */
  headers?: Record<string, string> | [string, string][] | Headers;
  /** WebSocket implementation; default globalThis.WebSocket. */
  WebSocket?: WebSocketConstructor;
  /** fetch implementation; default globalThis.fetch. */
  fetch?: typeof fetch;
  /** Pause between scheduling-error retries. Default 100 ms. */
  retryPauseMs?: number;
  /** Bound on each HTTP request and WebSocket handshake. Default 30000 ms. */
  requestTimeoutMs?: number;
  /** Bound on each connection action. Default 60000 ms. */
  actionTimeoutMs?: number;
}

/** Connection params: fixed, or asked again before every request / connection attempt. */
export interface HandleOptions {
  params?: Value;
  /** Its failure is reported as client.get_params_failed. */
  getParams?: () => Value | Promise<Value>;
}

export interface GetOrCreateOptions extends HandleOptions {
  /** Handed to createState/onCreate when this call creates the actor. */
  input?: Value;
  /** Preferred datacenter. */
  createInRegion?: string;
}

export interface CreateOptions extends HandleOptions {
  input?: Value;
  region?: string;
}

export interface QueueSendOptions {
  /** Wait for a consumer to complete the message. */
  wait?: boolean;
  /** Milliseconds to wait (with `wait`). */
  timeout?: number;
  signal?: AbortSignal;
}

export interface QueueSendResult {
  status: "completed" | "timedOut";
  /** The consumer's completion value (with `wait`). */
  response?: Value;
}

/** An actor as the REST API describes it (actors.md §7). */
export interface ActorInfo {
  actorId: string;
  name: string;
  key?: string[];
  crashPolicy: string;
  pool: string;
  createTs: number;
  startTs?: number;
  connectableTs?: number;
  sleepTs?: number;
  destroyTs?: number;
  error?: string;
  /** The record as the engine sent it. */
  raw: Record<string, unknown>;
}

export type ConnStatus = "idle" | "connecting" | "connected" | "disconnected";

export interface ActionRequest {
  name: string;
  args?: Value[];
  signal?: AbortSignal;
  /** Connections only: bound on this action (default: actionTimeoutMs). */
  timeoutMs?: number;
}

/**
 * Every failure the client reports. group/code/message/metadata are what the actor or the
 * engine said; failures on this side are group "client" with code invalid_argument,
 * connect_failed, timeout, connection_lost, closed, get_params_failed, bad_response or
 * protocol_error (a connection's WebSocket failed at the protocol level; metadata
 * `{ close_code: 1002 | 1007 | 1009 }`).
 */
export class ActorError extends Error {
  constructor(group: string, code: string, message: string, metadata?: Value, httpStatus?: number, options?: ErrorOptions);
  readonly name: "ActorError";
  group: string;
  code: string;
  metadata: Value;
  /** The HTTP status when the error came in an HTTP response, else 0. */
  httpStatus: number;
  /** "group.code" */
  readonly id: string;
  is(group: string, code: string): boolean;
  /** "group.code: message" */
  toString(): string;
}

/** Action methods of an actor: typed from a map of signatures, or any name when untyped. */
export type Actions = Record<string, (...args: any[]) => any>;
export type ActionMethods<A extends Actions> = {
  [K in keyof A]: (...args: Parameters<A[K]>) => Promise<Awaited<ReturnType<A[K]>>>;
};
export type UntypedActions = { [action: string]: (...args: any[]) => Promise<any> };

/** A reference to one actor (by id, or by name + key). */
export class ActorHandle<A extends Actions = UntypedActions> {
  readonly name: string;
  readonly key: string[];
  /** The cached actor id ("" until resolved; always set for getForId/create handles). */
  readonly actorId: string;
  /** The actor id: cached, else looked up (get: GET /actors; getOrCreate: PUT /actors). */
  resolve(): Promise<string>;
  /** Direct form for id handles, query form (rvt-*) otherwise. */
  gatewayUrl(): string;
  getGatewayUrl(): string;
  /** A stateless action over HTTP. */
  action<R = any>(name: string, ...args: Value[]): Promise<R>;
  action<R = any>(request: ActionRequest): Promise<R>;
  /** POST /queue/<name> (retries dispatch-inbox overload). */
  send(queue: string, body: Value, options?: QueueSendOptions): Promise<QueueSendResult>;
  /** A raw request to the actor's onRequest at /request/<path>; any status resolves. */
  fetch(path?: string, init?: RequestInit): Promise<Response>;
  /** A raw WebSocket to the actor's onWebSocket at /websocket/<path>, once open. */
  webSocket(path?: string, protocols?: string | string[], options?: { timeoutMs?: number }): Promise<WebSocket>;
  /** A persistent connection (starts connecting at once). `params` replace the handle's. */
  connect(params?: Value): ActorConnOf<A>;
}

/** A persistent connection (actors.md §4.6). */
export class ActorConn {
  readonly status: ConnStatus;
  readonly isConnected: boolean;
  /** From the last Init ("" before). */
  readonly actorId: string;
  readonly connectionId: string;
  /** Resolves once open; client.timeout / client.closed otherwise. Default 30000 ms. */
  waitReady(timeoutMs?: number): Promise<void>;
  /** Sent now, or queued until the connection opens. */
  action<R = any>(name: string, ...args: Value[]): Promise<R>;
  action<R = any>(request: ActionRequest): Promise<R>;
  /** Listeners get the event's arguments; the first subscribes, removing the last unsubscribes. */
  on(event: string, listener: (...args: any[]) => void): () => void;
  once(event: string, listener: (...args: any[]) => void): () => void;
  onError(listener: (error: ActorError) => void): () => void;
  onOpen(listener: () => void): () => void;
  onClose(listener: () => void): () => void;
  onStatusChange(listener: (status: ConnStatus) => void): () => void;
  /** Closes for good: pending actions fail with client.closed; idempotent. */
  dispose(): Promise<void>;
}

export type ActorHandleOf<A extends Actions = UntypedActions> = ActorHandle<A> & ActionMethods<A>;
export type ActorConnOf<A extends Actions = UntypedActions> = ActorConn & ActionMethods<A>;

export class Client {
  constructor(options?: ClientOptions);
  readonly endpoint: string;
  readonly encoding: Encoding;
  get<A extends Actions = UntypedActions>(name: string, key?: ActorKey, options?: HandleOptions): ActorHandleOf<A>;
  getOrCreate<A extends Actions = UntypedActions>(name: string, key?: ActorKey, options?: GetOrCreateOptions): ActorHandleOf<A>;
  getForId<A extends Actions = UntypedActions>(name: string, actorId: string, options?: HandleOptions): ActorHandleOf<A>;
  /** Creates now (POST /actors); actor.duplicate_key when the key is taken. */
  create<A extends Actions = UntypedActions>(name: string, key?: ActorKey, options?: CreateOptions): Promise<ActorHandleOf<A>>;
  listActors(name: string, options?: { key?: ActorKey; includeDestroyed?: boolean }): Promise<ActorInfo[]>;
  getActor(actorId: string): Promise<ActorInfo>;
  listActorNames(): Promise<string[]>;
  destroyActor(actorId: string): Promise<void>;
  sleepActor(actorId: string): Promise<void>;
  /** Disposes every connection opened through this client. */
  dispose(): Promise<void>;
}

/** Throws ActorError client.invalid_argument for a bad endpoint or encoding. */
export function createClient(options?: ClientOptions): Client;

/** Serialised key (actors.md §4.1): [] → "/", "/" and "\" escaped, "" → "\0". */
export function serializeActorKey(key: readonly string[]): string;
export function parseActorKey(serialized: string): string[] | null;
/** Percent-encodes all but A-Z a-z 0-9 - _ . ~ (UTF-8). */
export function percentEncode(text: string): string;

/** CBOR of application values (actors.md §4.8). */
export namespace cbor {
  class CborError extends Error {}
  function encode(value: Value): Uint8Array;
  function decode(bytes: Uint8Array | ArrayBuffer, limits?: { maxDepth?: number; maxItems?: number }): Value;
}

/** The client protocol's versioned BARE messages (v3 written, v1–v3 read); Cbor fields are bytes. */
export namespace bare {
  const PROTOCOL_VERSION: 3;
  class BareError extends Error {}
  type ToServer =
    | { tag: "ActionRequest"; val: { id: number | bigint; name: string; args: Uint8Array } }
    | { tag: "SubscriptionRequest"; val: { eventName: string; subscribe: boolean } };
  type ToClient =
    | { tag: "Init"; val: { actorId: string; connectionId: string } }
    | { tag: "Error"; val: { group: string; code: string; message: string; metadata?: Uint8Array; actionId?: number | bigint } }
    | { tag: "ActionResponse"; val: { id: number | bigint; output: Uint8Array } }
    | { tag: "Event"; val: { name: string; args: Uint8Array } };
  function encodeToServer(msg: ToServer): Uint8Array;
  function decodeToServer(bytes: Uint8Array): ToServer;
  function encodeToClient(msg: ToClient): Uint8Array;
  function decodeToClient(bytes: Uint8Array): ToClient;
  function encodeHttpActionRequest(msg: { args: Uint8Array }): Uint8Array;
  function decodeHttpActionRequest(bytes: Uint8Array): { args: Uint8Array };
  function encodeHttpActionResponse(msg: { output: Uint8Array }): Uint8Array;
  function decodeHttpActionResponse(bytes: Uint8Array): { output: Uint8Array };
  function encodeHttpQueueSendRequest(msg: { body: Uint8Array; name?: string; wait?: boolean; timeout?: number | bigint }): Uint8Array;
  function decodeHttpQueueSendRequest(bytes: Uint8Array): { body: Uint8Array; name?: string; wait?: boolean; timeout?: number | bigint };
  function encodeHttpQueueSendResponse(msg: { status: string; response?: Uint8Array }): Uint8Array;
  function decodeHttpQueueSendResponse(bytes: Uint8Array): { status: string; response?: Uint8Array };
  function encodeHttpResponseError(msg: { group: string; code: string; message: string; metadata?: Uint8Array }): Uint8Array;
  function decodeHttpResponseError(bytes: Uint8Array): { group: string; code: string; message: string; metadata?: Uint8Array };
  function encodeHttpResolveResponse(msg: { actorId: string }): Uint8Array;
  function decodeHttpResolveResponse(bytes: Uint8Array): { actorId: string };
}

/** The client protocol's messages in json (string), cbor or bare (bytes), values decoded. */
export namespace wire {
  const ENCODINGS: readonly Encoding[];
  class WireError extends Error {}
  type ToServer =
    | { tag: "ActionRequest"; val: { id: number | bigint; name: string; args: Value[] } }
    | { tag: "SubscriptionRequest"; val: { eventName: string; subscribe: boolean } };
  type ToClient =
    | { tag: "Init"; val: { actorId: string; connectionId: string } }
    | { tag: "Error"; val: { group: string; code: string; message: string; metadata?: Value; actionId?: number | bigint } }
    | { tag: "ActionResponse"; val: { id: number | bigint; output: Value } }
    | { tag: "Event"; val: { name: string; args: Value[] } };
  type Data = string | Uint8Array | ArrayBuffer;
  function contentType(encoding: Encoding): string;
  function encodeToServer(msg: ToServer, encoding: Encoding): string | Uint8Array;
  function decodeToServer(data: Data, encoding: Encoding): ToServer;
  function encodeToClient(msg: ToClient, encoding: Encoding): string | Uint8Array;
  function decodeToClient(data: Data, encoding: Encoding): ToClient;
  function encodeHttpActionRequest(msg: { args: Value[] }, encoding: Encoding): string | Uint8Array;
  function decodeHttpActionRequest(data: Data, encoding: Encoding): { args: Value[] };
  function encodeHttpActionResponse(msg: { output: Value }, encoding: Encoding): string | Uint8Array;
  function decodeHttpActionResponse(data: Data, encoding: Encoding): { output: Value };
  function encodeHttpQueueSendRequest(msg: { body: Value; name?: string; wait?: boolean; timeout?: number | bigint }, encoding: Encoding): string | Uint8Array;
  function decodeHttpQueueSendRequest(data: Data, encoding: Encoding): { body: Value; name?: string; wait?: boolean; timeout?: number | bigint };
  function encodeHttpQueueSendResponse(msg: { status: string; response?: Value }, encoding: Encoding): string | Uint8Array;
  function decodeHttpQueueSendResponse(data: Data, encoding: Encoding): { status: string; response?: Value };
  function encodeHttpResponseError(msg: { group: string; code: string; message: string; metadata?: Value }, encoding: Encoding): string | Uint8Array;
  function decodeHttpResponseError(data: Data, encoding: Encoding): { group: string; code: string; message: string; metadata?: Value };
}
