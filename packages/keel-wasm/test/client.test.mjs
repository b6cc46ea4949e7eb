// The JS client against a real keel-engine: the example actors (keel-examples, pool
// "default") and, when the dev build has it, the acceptance fixtures
// (keel-acceptance-fixtures, pool "fixtures") for what the examples do not have — creation
// input, errors with metadata, queues with consumers, onRequest, onWebSocket, value echo.
// Every case that depends on the encoding runs once per encoding; its name starts with
// the cell, e.g. "[cbor] stateless action".
//
//   node --experimental-websocket --test packages/keel-wasm/test/client*.test.mjs
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { join } from "node:path";
import net from "node:net";

import { startEngine, startNativeRuntime, waitForEnvoy, binDir } from "./harness.mjs";
import { createClient, ActorError } from "../src/client/index.js";

const ENCODINGS = ["json", "cbor", "bare"];
const FIXTURES_BIN = "keel-acceptance-fixtures";
const haveFixtures = existsSync(join(binDir, FIXTURES_BIN));
const noFixtures = haveFixtures ? false : `${FIXTURES_BIN} is not in ${binDir}`;

// Every test and hook is bounded in time (a hung wait fails instead of hanging the run).
const T = { timeout: 30000 };
let engine, examples, fixtures;
let seq = 0;
const unique = (prefix) => `${prefix}-${process.pid}-${Date.now().toString(36)}-${++seq}`;

before(async () => {
  engine = await startEngine();
  examples = await startNativeRuntime(engine);
  if (haveFixtures) {
    const dcs = await (await fetch(`${engine.endpoint}/datacenters`)).json();
    const dc = dcs.datacenters[0].name;
    const put = await fetch(`${engine.endpoint}/runner-configs/fixtures?namespace=default`, {
      method: "PUT",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ datacenters: { [dc]: { normal: {} } } }),
    });
    assert.equal(put.status, 200, await put.text());
    fixtures = await startNativeRuntime(engine, { binary: FIXTURES_BIN, env: { KEEL_POOL: "fixtures" } });
    await waitForEnvoy(engine, { count: 2 });
  }
}, { timeout: 60000 });

after(async () => {
  await Promise.all(clients.map((c) => c.dispose()));
  await fixtures?.stop();
  await examples?.stop();
  await engine?.stop();
}, { timeout: 60000 });

// ---- helpers ----

function within(ms, promise, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

async function waitFor(pred, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await pred();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

// The next `event` on `conn`, as its argument array.
const nextEvent = (conn, event, ms = 5000) => within(ms, new Promise((r) => conn.once(event, (...args) => r(args))), `event ${event}`);

async function rejectsWith(promise, check) {
  try {
    await promise;
  } catch (e) {
    assert.ok(e instanceof ActorError, `not an ActorError: ${e?.stack ?? e}`);
    for (const [k, v] of Object.entries(check)) assert.deepStrictEqual(e[k], v, `${k} of ${e}`);
    return e;
  }
  assert.fail(`expected a rejection with ${JSON.stringify(check)}`);
}

// Clients made here are disposed after the run, so no connection outlives it (a leftover
// one would keep reconnecting and the process alive).
const clients = [];
function makeClient(options) {
  const c = createClient(options);
  clients.push(c);
  return c;
}
const clientFor = (encoding, extra = {}) => makeClient({ endpoint: engine.endpoint, encoding, retryPauseMs: 20, ...extra });

// A TCP proxy in front of the engine whose connections can be cut (a network drop).
async function startProxy(port) {
  const sockets = new Set();
  const server = net.createServer((downstream) => {
    const upstream = net.connect(port, "127.0.0.1");
    for (const s of [downstream, upstream]) {
      sockets.add(s);
      s.on("close", () => sockets.delete(s));
      s.on("error", () => {});
    }
    downstream.pipe(upstream).pipe(downstream);
  });
  await new Promise((r) => server.listen(0, "127.0.0.1", r));
  return {
    endpoint: `http://127.0.0.1:${server.address().port}`,
    cut() {
      for (const s of sockets) s.destroy();
    },
    close: () => new Promise((r) => {
      for (const s of sockets) s.destroy();
      server.close(r);
    }),
  };
}

// ---- encoding-independent behaviour ----

test("createClient validates its options", T, () => {
  assert.throws(() => createClient({ endpoint: "ftp://x" }), (e) => e instanceof ActorError && e.id === "client.invalid_argument");
  assert.throws(() => createClient({ encoding: "xml" }), (e) => e.id === "client.invalid_argument");
  const c = createClient({ endpoint: "http://127.0.0.1:6420/" });
  assert.equal(c.endpoint, "http://127.0.0.1:6420");
  assert.equal(c.encoding, "json");
  assert.throws(() => c.get("counter", 5), (e) => e.id === "client.invalid_argument");
  // Handles are not thenables and their gateway URL is the query form (direct for ids).
  const h = c.getOrCreate("counter", ["a", "b"], { input: { n: 1 } });
  assert.equal(h.then, undefined);
  assert.equal(
    h.gatewayUrl(),
    "http://127.0.0.1:6420/gateway/counter?rvt-namespace=default&rvt-method=getOrCreate&rvt-key=a%2Cb&rvt-runner=default&rvt-crash-policy=sleep&rvt-input=oWFuAQ",
  );
  assert.equal(c.get("counter").gatewayUrl(), "http://127.0.0.1:6420/gateway/counter?rvt-namespace=default&rvt-method=get");
  assert.equal(c.getForId("counter", "abc").gatewayUrl(), "http://127.0.0.1:6420/gateway/abc");
});

test("an unreachable engine is client.connect_failed", T, async () => {
  const c = makeClient({ endpoint: "http://127.0.0.1:9" });
  await rejectsWith(c.getOrCreate("counter", "x").increment(1), { group: "client", code: "connect_failed" });
  await rejectsWith(c.get("counter", "x").resolve(), { group: "client", code: "connect_failed" });
});

test("key forms: a string is a one-component key, keys with ',' resolve over REST", T, async () => {
  const c = clientFor("json");
  const k = unique("kf");
  const a = c.getOrCreate("counter", k);
  assert.equal(await a.increment(4), 4);
  assert.equal(await c.get("counter", [k]).resolve(), await a.resolve());
  // ["k", "x"] is another actor than ["k"].
  assert.equal(await c.getOrCreate("counter", [k, "x"]).getCount(), 0);
  // A component with ',' cannot be written as rvt-key: the handle resolves over REST first.
  const comma = c.getOrCreate("counter", [`${k},1`, "a/b\\c"]);
  assert.equal(await comma.increment(2), 2);
  assert.equal(await comma.increment(3), 5);
  const listed = await c.listActors("counter", { key: [`${k},1`, "a/b\\c"] });
  assert.equal(listed.length, 1);
  assert.deepStrictEqual(listed[0].key, [`${k},1`, "a/b\\c"]);
  assert.equal(listed[0].actorId, await comma.resolve());
  assert.ok((await c.listActorNames()).includes("counter"));
});

test("a get handle for a missing actor retries then reports actor.not_found; getForId does not retry", T, async () => {
  const c = clientFor("json");
  const started = Date.now();
  await rejectsWith(c.get("counter", unique("missing")).getCount(), { group: "actor", code: "not_found", httpStatus: 404 });
  // 24 attempts with a 20 ms pause in between.
  assert.ok(Date.now() - started >= 23 * 20, `gave up after ${Date.now() - started} ms`);
  await rejectsWith(c.get("counter", unique("missing")).resolve(), { group: "actor", code: "not_found" });
  const h = c.getOrCreate("counter", unique("gone"));
  const id = await h.resolve();
  await c.destroyActor(id);
  const t0 = Date.now();
  await rejectsWith(c.getForId("counter", id).getCount(), { group: "actor", code: "not_found", httpStatus: 404 });
  assert.ok(Date.now() - t0 < 15 * 20, "getForId must not retry");
  // The getOrCreate handle survives its actor being destroyed: it creates a new one.
  assert.equal(await h.increment(1), 1);
  assert.notEqual(await h.resolve(), id);
});

test("raw fetch reaches onRequest (404 structured error without a handler)", T, async () => {
  const c = clientFor("json");
  const r = await c.getOrCreate("counter", unique("raw")).fetch("/hello?x=1");
  assert.equal(r.status, 404);
  assert.deepStrictEqual(await r.json(), {
    group: "actor",
    code: "request_handler_not_defined",
    message: "This actor has no onRequest handler",
  });
});

test("raw fetch with a handler: path, query, method, headers and body", { ...T, skip: noFixtures }, async () => {
  const c = makeClient({ endpoint: engine.endpoint, poolName: "fixtures" });
  const h = c.getOrCreate("rawHttpActor", unique("raw"));
  const hello = await h.fetch("api/hello");
  assert.equal(hello.status, 200);
  assert.deepStrictEqual(await hello.json(), { message: "Hello from actor!" });
  const echo = await h.fetch("/api/echo#frag", { method: "POST", body: "ping ✓", headers: { "x-test": "yes", "content-type": "text/plain" } });
  assert.equal(echo.status, 200);
  assert.equal(await echo.text(), "ping ✓");
  assert.equal(echo.headers.get("x-test"), "yes");
  const missing = await h.fetch("nope");
  assert.equal(missing.status, 404);
  assert.equal(await missing.text(), "Not Found");
  assert.equal(await h.getRequestCount(), 3);
});

test("raw WebSocket reaches onWebSocket", { ...T, skip: noFixtures }, async () => {
  const c = makeClient({ endpoint: engine.endpoint, poolName: "fixtures" });
  const ws = await within(10000, c.getOrCreate("rawWebSocketActor", unique("rws")).webSocket("", []), "raw websocket");
  const messages = [];
  const got = (n) => waitFor(() => messages.length >= n, 5000, `${n} raw messages`);
  ws.addEventListener("message", (ev) => messages.push(JSON.parse(ev.data)));
  await got(1);
  assert.equal(messages[0].type, "welcome");
  ws.send(JSON.stringify({ hello: "there" }));
  await got(2);
  assert.deepStrictEqual(messages[1], { hello: "there" });
  ws.close();
});

test("a raw WebSocket from a getOrCreate handle whose actor was destroyed reaches the new actor", { ...T, skip: noFixtures }, async () => {
  const c = makeClient({ endpoint: engine.endpoint, poolName: "fixtures" });
  const h = c.getOrCreate("rawWebSocketActor", unique("rws-stale"));
  const first = await h.resolve();
  await c.destroyActor(first);
  const ws = await within(10000, h.webSocket("", []), "raw websocket");
  const messages = [];
  ws.addEventListener("message", (ev) => messages.push(JSON.parse(ev.data)));
  await waitFor(() => messages.length >= 1, 5000, "the welcome");
  assert.equal(messages[0].type, "welcome", "a socket to the destroyed actor would close at once");
  assert.equal(messages[0].connectionCount, 1);
  ws.close();
});

test("reconnect after a network drop: new Init, re-subscribed, queued actions sent", T, async () => {
  const proxy = await startProxy(engine.port);
  const c = makeClient({ endpoint: proxy.endpoint, encoding: "cbor" });
  const conn = c.getOrCreate("counter", unique("drop")).connect();
  try {
    const opens = [];
    const statuses = [];
    let closes = 0;
    conn.onOpen(() => opens.push(conn.connectionId));
    conn.onClose(() => ++closes);
    conn.onStatusChange((s) => statuses.push(s));
    const events = [];
    conn.on("newCount", (n) => events.push(n));
    await conn.waitReady(5000);
    assert.equal(await conn.increment(1), 1);
    proxy.cut();
    await waitFor(() => conn.status !== "connected", 5000, "the drop to be noticed");
    // Called while disconnected: queued, sent after the reconnect.
    const queued = conn.increment(10);
    assert.equal(await within(10000, queued, "queued action"), 11);
    assert.equal(opens.length, 2);
    assert.notEqual(opens[0], opens[1]);
    assert.equal(closes, 1);
    assert.deepStrictEqual(statuses.slice(0, 4), ["connected", "disconnected", "connecting", "connected"]);
    await waitFor(() => events.length >= 2, 5000, "events after the reconnect");
    assert.deepStrictEqual(events, [1, 11]);
  } finally {
    await conn.dispose();
    await proxy.close();
  }
});

test("the WebSocket option is used, with the protocol's subprotocols", T, async () => {
  const seen = [];
  class RecordingWebSocket extends globalThis.WebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      seen.push({ url, protocols });
    }
  }
  const c = makeClient({ endpoint: engine.endpoint, encoding: "bare", WebSocket: RecordingWebSocket });
  const conn = c.getOrCreate("chat", unique("wsopt")).connect({ nickname: "zoë" });
  try {
    await conn.waitReady(5000);
    assert.deepStrictEqual(await conn.history(), []);
    assert.equal(seen.length, 1);
    assert.match(seen[0].url, /^ws:\/\/127\.0\.0\.1:\d+\/gateway\/chat\/connect\?rvt-namespace=default&rvt-method=getOrCreate&rvt-key=wsopt-/);
    assert.deepStrictEqual(seen[0].protocols, ["rivet", "rivet_encoding.bare", "rivet_conn_params.%7B%22nickname%22%3A%22zo%C3%AB%22%7D"]);
  } finally {
    await conn.dispose();
  }
});

test("getParams runs before each request; its failure is client.get_params_failed", T, async () => {
  const c = clientFor("json");
  const key = unique("params");
  let calls = 0;
  const h = c.getOrCreate("chat", key, { getParams: async () => ({ nickname: `n${++calls}` }) });
  assert.equal(await h.action("send", "a"), 1);
  assert.equal(await h.action("send", "b"), 2);
  assert.deepStrictEqual((await h.history()).map((m) => m.from), ["n1", "n2"]);
  const failing = c.getOrCreate("chat", key, { getParams: () => { throw new Error("no session"); } });
  await rejectsWith(failing.history(), { group: "client", code: "get_params_failed", message: "no session" });
  const conn = failing.connect();
  try {
    const errors = [];
    conn.onError((e) => errors.push(e.id));
    await rejectsWith(conn.history(), { group: "client", code: "get_params_failed" });
    assert.equal(errors[0], "client.get_params_failed");
    assert.equal(conn.status, "disconnected");
  } finally {
    await conn.dispose();
  }
});

test("an engine that never answers is client.timeout", T, async () => {
  const held = new Set();
  const silent = net.createServer((s) => {
    held.add(s);
    s.on("error", () => {});
  });
  await new Promise((r) => silent.listen(0, "127.0.0.1", r));
  try {
    const c = makeClient({ endpoint: `http://127.0.0.1:${silent.address().port}`, requestTimeoutMs: 200 });
    await rejectsWith(c.getForId("counter", "x").getCount(), { group: "client", code: "timeout" });
    const conn = c.getForId("counter", "x").connect();
    const errors = [];
    conn.onError((e) => errors.push(e.id));
    await rejectsWith(conn.getCount(), { group: "client", code: "timeout" });
    assert.equal(errors[0], "client.timeout");
    await conn.dispose();
  } finally {
    for (const s of held) s.destroy();
    await new Promise((r) => silent.close(r));
  }
});

test("a connection action is bounded by its timeout", { ...T, skip: noFixtures }, async () => {
  const c = makeClient({ endpoint: engine.endpoint, poolName: "fixtures", actionTimeoutMs: 150 });
  const conn = c.getOrCreate("errorHandlingActor", unique("slow")).connect();
  try {
    await rejectsWith(conn.delayedAction(1000), { group: "client", code: "timeout" });
    assert.equal(await conn.action({ name: "delayedAction", args: [10], timeoutMs: 5000 }), "Completed after 10ms");
  } finally {
    await conn.dispose();
  }
});

// ---- per encoding ----

for (const enc of ENCODINGS) {
  test(`[${enc}] stateless action`, T, async () => {
    const c = clientFor(enc);
    const h = c.getOrCreate("counter", unique(`sa-${enc}`));
    assert.equal(await h.increment(5), 5);
    assert.equal(await h.action("increment", 2), 7);
    assert.equal(await h.action({ name: "getCount", args: [] }), 7);
    assert.equal(await h.getCount(), 7);
    // Calls so far went through the query form (the engine resolved the key); resolve()
    // caches the id and later calls go direct.
    assert.equal(h.actorId, "");
    const id = await h.resolve();
    assert.match(id, /^[0-9a-z]+$/);
    assert.equal(h.actorId, id);
    assert.equal(await h.increment(1), 8);
  });

  test(`[${enc}] getOrCreate, then get by key and getForId`, T, async () => {
    const c = clientFor(enc);
    const key = [unique(`gk-${enc}`), "room"];
    const goc = c.getOrCreate("counter", key);
    assert.equal(await goc.increment(3), 3);
    const id = await goc.resolve();
    const byKey = c.get("counter", key);
    assert.equal(await byKey.getCount(), 3);
    assert.equal(await byKey.resolve(), id);
    const byId = c.getForId("counter", id);
    assert.equal(byId.actorId, id);
    assert.equal(await byId.increment(1), 4);
    assert.equal(await goc.getCount(), 4);
    const info = await c.getActor(id);
    assert.equal(info.name, "counter");
    assert.deepStrictEqual(info.key, key);
    assert.equal(info.crashPolicy, "sleep");
    assert.equal(info.pool, "default");
  });

  test(`[${enc}] create with input, duplicate key refused`, T, async () => {
    const c = clientFor(enc, { poolName: haveFixtures ? "fixtures" : "default" });
    const name = haveFixtures ? "inputActor" : "counter";
    const key = unique(`cr-${enc}`);
    const input = { label: "hello ✓", n: 42, big: 2n ** 60n, bytes: new Uint8Array([1, 2, 3]), list: [true, null] };
    const h = await c.create(name, key, { input });
    assert.match(h.actorId, /^[0-9a-z]+$/);
    assert.equal(await c.get(name, key).resolve(), h.actorId);
    if (haveFixtures) {
      assert.deepStrictEqual(await h.getInputs(), { initialInput: input, onCreateInput: input });
    } else {
      assert.equal(await h.increment(1), 1);
    }
    await rejectsWith(c.create(name, key, { input }), { group: "actor", code: "duplicate_key", httpStatus: 400 });
    // The getOrCreate handle of that key finds the existing actor.
    assert.equal(await c.getOrCreate(name, key).resolve(), h.actorId);
  });

  test(`[${enc}] connection: Init, actions, event subscription`, T, async () => {
    const c = clientFor(enc);
    const h = c.getOrCreate("counter", unique(`cn-${enc}`));
    const conn = h.connect();
    assert.equal(conn.status, "connecting");
    assert.equal(conn.then, undefined);
    const statuses = [];
    conn.onStatusChange((s) => statuses.push(s));
    let opens = 0;
    let closes = 0;
    conn.onOpen(() => ++opens);
    conn.onClose(() => ++closes);
    const events = [];
    const off = conn.on("newCount", (...args) => events.push(args));
    const first = nextEvent(conn, "newCount");
    await conn.waitReady(5000);
    assert.equal(conn.status, "connected");
    assert.equal(conn.isConnected, true);
    assert.equal(conn.actorId, await h.resolve());
    assert.ok(conn.connectionId.length > 0);
    assert.equal(await conn.increment(2), 2);
    assert.deepStrictEqual(await first, [2]);
    // A stateless action of another client is broadcast to this connection too.
    assert.equal(await clientFor(enc).getForId("counter", conn.actorId).increment(3), 5);
    await waitFor(() => events.length >= 2, 5000, "the second event");
    assert.deepStrictEqual(events, [[2], [5]]);
    assert.equal(await conn.action("getCount"), 5);
    // Unsubscribed: no more events for that listener.
    off();
    assert.equal(await conn.increment(1), 6);
    assert.equal(await conn.getCount(), 6);
    assert.equal(events.length, 2);
    await conn.dispose();
    assert.equal(conn.status, "disconnected");
    assert.equal(opens, 1);
    assert.equal(closes, 1);
    assert.deepStrictEqual(statuses, ["connected", "disconnected"]);
    await rejectsWith(conn.getCount(), { group: "client", code: "closed" });
  });

  test(`[${enc}] connection params reach the actor (chat nickname)`, T, async () => {
    const c = clientFor(enc);
    const room = c.getOrCreate("chat", unique(`chat-${enc}`));
    const ada = room.connect({ nickname: "ada" });
    try {
      const msg = nextEvent(ada, "message");
      await ada.waitReady(5000);
      assert.equal(await ada.action("send", "hi ✓"), 1);
      const [m] = await msg;
      assert.equal(m.from, "ada");
      assert.equal(m.text, "hi ✓");
      assert.equal(typeof m.at, "number");
      // Over HTTP the handle's params travel in x-rivet-conn-params.
      const bob = c.getOrCreate("chat", room.key, { params: { nickname: "bob" } });
      assert.equal(await bob.action("send", "yo"), 2);
      const history = await bob.history();
      assert.deepStrictEqual(history.map((x) => [x.from, x.text]), [["ada", "hi ✓"], ["bob", "yo"]]);
      // A refused setup (nickname too long) is a connection error and fails the action.
      const long = room.connect({ nickname: "x".repeat(40) });
      const errors = [];
      long.onError((e) => errors.push(e.id));
      await rejectsWith(long.history(), { group: "user", code: "invalid_nickname" });
      assert.ok(errors.includes("user.invalid_nickname"), errors.join());
      await long.dispose();
    } finally {
      await ada.dispose();
    }
  });

  // The actor refuses the setup: an Error frame, then a close repeating its `group.code`.
  // The failure is reported once per attempt, and the error kept for the next action is
  // the frame's (its message), not the close reason's.
  test(`[${enc}] a failed setup is reported once per attempt with its structured error`, { ...T, skip: noFixtures }, async () => {
    const c = clientFor(enc, { poolName: "fixtures" });
    const conn = c.getOrCreate("connErrorSerializationActor", unique(`setup-${enc}`)).connect({ shouldThrow: true });
    const seen = [];
    conn.onError((e) => seen.push(`error ${e.id}: ${e.message}`));
    conn.onStatusChange((s) => seen.push(`status ${s}`));
    try {
      await waitFor(() => seen.includes("status disconnected"), 5000, "the first attempt's end");
      const first = seen.slice(0, seen.indexOf("status disconnected"));
      assert.deepStrictEqual(first.filter((x) => x.startsWith("error")), ["error connection.custom_error: Connection failed"], seen.join(" | "));
      // No action waited then: the next one fails at once with what the actor sent.
      await within(1000, rejectsWith(conn.action("getValue"), { group: "connection", code: "custom_error", message: "Connection failed" }), "the kept error");
    } finally {
      await conn.dispose();
    }
  });

  test(`[${enc}] errors: user error and unknown action, over HTTP and WebSocket`, T, async () => {
    const c = clientFor(enc);
    const chat = c.getOrCreate("chat", unique(`err-${enc}`));
    const e1 = await rejectsWith(chat.action("send", ""), { group: "user", code: "empty_message", message: "empty message", httpStatus: 500, metadata: undefined });
    assert.equal(e1.id, "user.empty_message");
    assert.equal(String(e1), "user.empty_message: empty message");
    await rejectsWith(chat.nope(1), { group: "actor", code: "action_not_found", message: "Action `nope` was not found.", httpStatus: 404 });
    const conn = chat.connect();
    try {
      await rejectsWith(conn.action("send", ""), { group: "user", code: "empty_message", httpStatus: 0 });
      await rejectsWith(conn.nope(), { group: "actor", code: "action_not_found", message: "Action `nope` was not found." });
      // The connection stays usable.
      assert.deepStrictEqual(await conn.history(), []);
    } finally {
      await conn.dispose();
    }
  });

  test(`[${enc}] errors: user error with metadata`, { ...T, skip: noFixtures }, async () => {
    const c = clientFor(enc, { poolName: "fixtures" });
    const h = c.getOrCreate("errorHandlingActor", unique(`meta-${enc}`));
    const check = (e) => {
      assert.equal(e.metadata.reason, "test");
      assert.equal(typeof e.metadata.timestamp, "number");
      assert.ok(e.metadata.timestamp > 1.6e12);
    };
    check(await rejectsWith(h.throwDetailedError(), { group: "user", code: "detailed_error", message: "Detailed error message", httpStatus: 500 }));
    const conn = h.connect();
    try {
      check(await rejectsWith(conn.throwDetailedError(), { group: "user", code: "detailed_error", message: "Detailed error message" }));
      await rejectsWith(conn.throwSimpleError(), { group: "user", code: "user_error", message: "Simple error message", metadata: undefined });
      const internal = await rejectsWith(conn.throwInternalError(), { code: "internal_error" });
      assert.equal(internal.metadata, undefined);
      assert.equal(await conn.successfulAction(), "success");
    } finally {
      await conn.dispose();
    }
  });

  test(`[${enc}] values round-trip through an actor (bigint, bytes, undefined, nesting)`, { ...T, skip: noFixtures }, async () => {
    const c = clientFor(enc, { poolName: "fixtures" });
    const h = c.getOrCreate("largePayloadActor", unique(`echo-${enc}`));
    const value = {
      big: 18446744073709551615n,
      neg: -9223372036854775808n,
      safe: 2 ** 53,
      f: 0.25,
      s: "h\u00e9llo \u{1F600}",
      bytes: new Uint8Array([0, 1, 255]),
      u: undefined,
      esc: ["$BigInt", "x"],
      nested: { list: [1, [2, [3]], null, true] },
    };
    assert.deepStrictEqual(await h.echo(value), value);
    const conn = h.connect();
    try {
      assert.deepStrictEqual(await conn.echo(value), value);
    } finally {
      await conn.dispose();
    }
  });

  test(`[${enc}] the connection survives the actor sleeping; events still arrive`, T, async () => {
    const c = clientFor(enc);
    const h = c.getOrCreate("counter", unique(`sleep-${enc}`));
    const conn = h.connect();
    try {
      const events = [];
      conn.on("newCount", (n) => events.push(n));
      await conn.waitReady(5000);
      assert.equal(await conn.increment(1), 1);
      const id = await h.resolve();
      await c.sleepActor(id);
      await waitFor(async () => (await c.getActor(id)).sleepTs, 5000, "the actor to sleep");
      // The next action wakes it (the gateway held the hibernatable socket meanwhile, or
      // the client reconnected): state is kept and events still arrive.
      assert.equal(await within(10000, conn.increment(2), "action after sleep"), 3);
      await waitFor(() => events.length >= 2, 5000, "the event after waking");
      assert.deepStrictEqual(events, [1, 3]);
      assert.equal(conn.status, "connected");
      assert.equal(conn.actorId, id);
      assert.equal(await h.getCount(), 3);
    } finally {
      await conn.dispose();
    }
  });

  test(`[${enc}] reconnect after the actor is destroyed: re-resolved, re-subscribed`, T, async () => {
    const c = clientFor(enc);
    const h = c.getOrCreate("counter", unique(`destroy-${enc}`));
    const conn = h.connect();
    try {
      const events = [];
      const errors = [];
      conn.on("newCount", (n) => events.push(n));
      conn.onError((e) => errors.push(e.id));
      await conn.waitReady(5000);
      assert.equal(await conn.increment(5), 5);
      const first = conn.actorId;
      await c.destroyActor(first);
      await waitFor(() => conn.isConnected && conn.actorId !== first, 10000, "the reconnect to a new actor");
      assert.ok(errors.includes("actor.destroyed"), errors.join());
      assert.equal(await conn.increment(1), 1);
      await waitFor(() => events.length >= 2, 5000, "the event from the new actor");
      assert.deepStrictEqual(events, [5, 1]);
      assert.equal(await h.resolve(), conn.actorId);
    } finally {
      await conn.dispose();
    }
  });

  test(`[${enc}] queue send`, T, async () => {
    const c = clientFor(enc);
    // An undeclared queue accepts and drops the message (actors.md §4.5).
    assert.deepStrictEqual(await c.getOrCreate("counter", unique(`q-${enc}`)).send("jobs", { n: 1 }), { status: "completed" });
    await rejectsWith(c.getOrCreate("counter", unique(`q-${enc}`)).send("", 1), { group: "client", code: "invalid_argument" });
  });

  test(`[${enc}] queue send with a consumer, wait and timeout`, { ...T, skip: noFixtures }, async () => {
    const c = clientFor(enc, { poolName: "fixtures" });
    const h = c.getOrCreate("queueActor", unique(`q-${enc}`));
    const body = { hello: "world", big: 2n ** 64n - 1n, bytes: new Uint8Array([7]) };
    assert.deepStrictEqual(await h.send("greeting", body), { status: "completed" });
    assert.deepStrictEqual(await h.receiveOne("greeting", 1000), { name: "greeting", body });
    assert.deepStrictEqual(await h.send("tasks", { value: 1 }, { wait: true, timeout: 50 }), { status: "timedOut" });
    assert.deepStrictEqual(await h.receiveAndComplete("tasks", 1000), { name: "tasks", body: { value: 1 } });
    const waited = h.send("tasks", { value: 123 }, { wait: true, timeout: 5000 });
    assert.deepStrictEqual(await h.receiveAndComplete("tasks", 5000), { name: "tasks", body: { value: 123 } });
    assert.deepStrictEqual(await waited, { status: "completed", response: { echo: { value: 123 } } });
  });
}
