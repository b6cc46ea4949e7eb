// The wasm runtime in Node 20, end to end: keel-engine (native, loopback, port 0) and a
// registry of JS actors (test/fixtures/actors.mjs) in this process, reached through the
// engine's gateway. Run: node --experimental-websocket --test packages/keel-wasm/test/
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";

import { serve } from "../src/index.js";
import * as actors from "./fixtures/actors.mjs";
import { action, actorRecord, call, forceSleep, getOrCreate, waitFor } from "./gateway.mjs";
import { startEngine } from "./harness.mjs";

const quiet = { handleSignals: false, logLevel: "error" };

describe("wasm runtime on Node", () => {
  let engine;
  let registry;
  before(async () => {
    engine = await startEngine();
    registry = await serve(actors, { endpoint: engine.endpoint, ...quiet });
  });
  after(async () => {
    await registry?.shutdown();
    await engine?.stop();
  });

  test("an action answers and its state change is durable before the answer", async () => {
    const id = await getOrCreate(engine, "counter", "durable");
    assert.equal(await call(engine, id, "increment", 5), 5);
    assert.equal(await call(engine, id, "increment", 2), 7);
    assert.equal(await call(engine, id, "slowIncrement", 3), 10);
    assert.deepEqual(await call(engine, id, "identity"), { id, name: "counter", key: ["durable"] });
  });

  test("state survives sleep; the sleeping actor is gone from the runtime; wake runs onWake", async () => {
    const id = await getOrCreate(engine, "counter", "sleepy");
    await call(engine, id, "increment", 4);
    assert.equal(await call(engine, id, "wakes"), 1);
    const before = registry.actorCount;
    await forceSleep(engine, id);
    await waitFor(() => registry.actorCount === before - 1, 5000, "the instance to be freed");
    assert.equal(await call(engine, id, "getCount"), 4);
    assert.equal(await call(engine, id, "wakes"), 1, "vars are per instance: a new instance counted one wake");
    assert.equal((await actorRecord(engine, id)).sleep_ts, undefined);
  });

  test("the actor asks to sleep itself and wakes on the next request", async () => {
    const id = await getOrCreate(engine, "counter", "self-sleep");
    await call(engine, id, "increment", 9);
    assert.equal(await call(engine, id, "goToSleep"), true);
    await waitFor(async () => (await actorRecord(engine, id)).sleep_ts !== undefined, 10000, "sleep");
    assert.equal(await call(engine, id, "getCount"), 9);
  });

  test("errors: a UserError reaches the client with code and metadata; others are sanitised", async () => {
    const id = await getOrCreate(engine, "counter", "errors");
    const user = await action(engine, id, "fail");
    assert.equal(user.status, 500);
    assert.deepEqual(user.body, { group: "user", code: "refused", message: "counter says no", metadata: { limit: 3 } });
    const internal = await action(engine, id, "crash");
    assert.equal(internal.body.group, "rivetkit");
    assert.equal(internal.body.code, "internal_error");
    assert.ok(!JSON.stringify(internal.body).includes("internal detail"));
    const missing = await action(engine, id, "noSuchAction");
    assert.equal(missing.status, 404);
    assert.equal(missing.body.code, "action_not_found");
    // The actor keeps working after each failure.
    assert.equal(await call(engine, id, "increment", 1), 1);
  });

  test("KV: put, get, list by prefix, delete, binary keys, durable across sleep", async () => {
    const id = await getOrCreate(engine, "store", "kv");
    await call(engine, id, "put", "user:1", "ada");
    await call(engine, id, "put", "user:2", "grace");
    await call(engine, id, "put", "other", "x");
    assert.equal(await call(engine, id, "get", "user:1"), "ada");
    assert.equal(await call(engine, id, "get", "missing"), null);
    assert.deepEqual(await call(engine, id, "list", "user:"), [["user:1", "ada"], ["user:2", "grace"]]);
    assert.deepEqual(await call(engine, id, "binary"), [250, 251]);
    await forceSleep(engine, id);
    assert.equal(await call(engine, id, "get", "user:2"), "grace");
    assert.equal(await call(engine, id, "remove", "user:2"), null);
    assert.deepEqual(await call(engine, id, "list", "user:"), [["user:1", "ada"]]);
  });

  test("remote SQL: migration, inserts, named parameters, errors, durable across sleep", async () => {
    const id = await getOrCreate(engine, "todos", "sql");
    assert.equal(await call(engine, id, "backend"), "remote");
    assert.equal(await call(engine, id, "add", "milk"), 1);
    assert.equal(await call(engine, id, "add", "eggs"), 2);
    assert.deepEqual(await call(engine, id, "byText", "eggs"), [{ id: 2 }]);
    assert.equal(await call(engine, id, "route"), "read");
    const bad = await action(engine, id, "bad");
    assert.equal(bad.body.group, "sqlite");
    assert.match(bad.body.code, /prepare_failed|execution_failed|invalid_sql/);
    await forceSleep(engine, id);
    assert.equal(await call(engine, id, "count"), 2);
    assert.deepEqual(await call(engine, id, "list"), [
      { id: 1, text: "milk", done: 0 },
      { id: 2, text: "eggs", done: 0 },
    ]);
    assert.equal(await call(engine, id, "clear"), 2);
  });

  test("schedule: a durable alarm runs its action", async () => {
    const id = await getOrCreate(engine, "timers", "alarm");
    const eventId = await call(engine, id, "scheduleTick", 50, "first");
    assert.equal(typeof eventId, "string");
    await waitFor(async () => (await call(engine, id, "ticks")).length === 1, 10000, "the tick");
    assert.deepEqual(await call(engine, id, "ticks"), ["first"]);
  });

  test("schedule: an alarm wakes a sleeping actor", async () => {
    const id = await getOrCreate(engine, "timers", "wake-alarm");
    await call(engine, id, "scheduleTick", 400, "late");
    await forceSleep(engine, id);
    await waitFor(async () => (await actorRecord(engine, id)).sleep_ts === undefined, 10000, "the alarm to wake it");
    await waitFor(async () => (await call(engine, id, "ticks")).length === 1, 10000, "the tick");
  });

  test("queue: a message sent by one action is received by another, in order", async () => {
    const id = await getOrCreate(engine, "timers", "queue");
    await call(engine, id, "enqueue", { job: 1 });
    await call(engine, id, "enqueue", { job: 2 });
    assert.deepEqual(await call(engine, id, "take"), { job: 1 });
    assert.deepEqual(await call(engine, id, "take"), { job: 2 });
    assert.equal(await call(engine, id, "take"), null);
  });

  test("createState receives the creation input", async () => {
    const r = await fetch(`${engine.endpoint}/gateway/withInput/action/get?rvt-namespace=default&rvt-method=getOrCreate&rvt-pool=default&rvt-key=k1`, {
      method: "POST",
      headers: { "content-type": "application/json", "x-rivet-encoding": "json" },
      body: JSON.stringify({ args: [] }),
    });
    assert.equal(r.status, 200);
    assert.deepEqual((await r.json()).output, { greeting: "hello nobody", key: ["k1"] });
  });
});

describe("wasm runtime configuration", () => {
  test("a local SQLite backend is unavailable in wasm: the first SQL call fails with sqlite.unavailable", async () => {
    const engine = await startEngine();
    const registry = await serve({ notes: actors.notes }, { endpoint: engine.endpoint, sqliteBackend: "local", ...quiet });
    try {
      const id = await getOrCreate(engine, "notes", "local");
      for (const name of ["write", "backend"]) {
        const r = await action(engine, id, name, ["x"]);
        assert.equal(r.status, 500);
        assert.equal(r.body.group, "sqlite");
        assert.equal(r.body.code, "unavailable");
        assert.match(r.body.message, /remote/);
      }
    } finally {
      await registry.shutdown({ immediate: true });
      await engine.stop();
    }
  });

  test("the engine refuses an envoy with a wrong token and accepts the right one", async () => {
    const engine = await startEngine({ token: "s3cret" });
    try {
      const { loadKeel, Registry } = await import("../src/index.js");
      const M = await loadKeel();
      const wrong = new Registry(M, { endpoint: engine.endpoint, token: "wrong", ...quiet });
      wrong.register({ counter: actors.counter });
      wrong.start();
      await assert.rejects(wrong.ready(1500), (e) => e.code === "not_connected");
      await wrong.shutdown({ immediate: true });
      const right = await serve({ counter: actors.counter }, { endpoint: engine.endpoint, token: "s3cret", ...quiet });
      assert.equal(right.connected, true);
      await right.shutdown();
    } finally {
      await engine.stop();
    }
  });
});

describe("wasm runtime: raw HTTP and raw WebSocket", () => {
  let engine;
  let registry;
  before(async () => {
    engine = await startEngine();
    registry = await serve({ raw: actors.raw, rawGated: actors.rawGated }, { endpoint: engine.endpoint, ...quiet });
  });
  after(async () => {
    await registry?.shutdown();
    await engine?.stop();
  });

  test("onRequest gets a Fetch Request and its Response reaches the client", async () => {
    const id = await getOrCreate(engine, "raw", "http");
    const r = await fetch(`${engine.endpoint}/gateway/${id}/request/some/path?q=1`, {
      method: "POST",
      headers: { "x-test": "yes" },
      body: "payload",
    });
    assert.equal(r.status, 201);
    assert.equal(r.headers.get("x-from"), "js");
    const body = await r.json();
    assert.equal(body.method, "POST");
    assert.match(body.url, /\/some\/path\?q=1$/);
    assert.equal(body.header, "yes");
    assert.equal(body.body, "payload");
    assert.equal(body.actor, "raw");
  });

  test("onRequest: request.signal aborts when the client goes away", async () => {
    const id = await getOrCreate(engine, "raw", "abort");
    const client = new AbortController();
    const pending = fetch(`${engine.endpoint}/gateway/${id}/request/wait`, { signal: client.signal })
      .catch(() => "client aborted");
    await waitFor(async () => (await call(engine, id, "counts")).waiting === 1, 5000, "the handler to start");
    client.abort();
    assert.equal(await pending, "client aborted");
    await waitFor(async () => (await call(engine, id, "counts")).aborted === 1, 5000,
      "the handler to see its request aborted");
    const r = await fetch(`${engine.endpoint}/gateway/${id}/request/after`);
    assert.equal(r.status, 201);
  });

  test("onWebSocket: greeting, text and binary echo, state changes, server close", async () => {
    const id = await getOrCreate(engine, "raw", "ws");
    const ws = new WebSocket(`${engine.endpoint.replace("http", "ws")}/gateway/${id}/websocket/chat?who=ada`);
    ws.binaryType = "arraybuffer";
    const inbox = [];
    let waiter = null;
    ws.onmessage = (e) => {
      inbox.push(e.data);
      waiter?.();
    };
    const closed = new Promise((resolve) => { ws.onclose = (e) => resolve({ code: e.code, reason: e.reason }); });
    const next = async () => {
      const deadline = Date.now() + 5000;
      while (inbox.length === 0) {
        if (Date.now() > deadline) throw new Error("no message within 5 s");
        await new Promise((r) => { waiter = r; setTimeout(r, 100); });
      }
      return inbox.shift();
    };
    await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
    assert.equal(await next(), "hello ada");
    ws.send("one");
    assert.equal(await next(), "echo:one:1");
    ws.send(new Uint8Array([1, 2, 3]));
    assert.deepEqual([...new Uint8Array(await next())], [3, 2, 1]);
    ws.send("bye");
    assert.deepEqual(await closed, { code: 4000, reason: "asked to" });
    assert.equal(await call(engine, id, "messages"), 3);
  });

  test("a raw socket's send and close refuse arguments of the wrong type, naming the call", async () => {
    const id = await getOrCreate(engine, "raw", "ws-args");
    const ws = new WebSocket(`${engine.endpoint.replace("http", "ws")}/gateway/${id}/websocket/chat?who=bob`);
    const inbox = [];
    ws.onmessage = (e) => inbox.push(e.data);
    await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
    ws.send("bad-args");
    await waitFor(() => inbox.length >= 4, 5000, () => `the greeting and three refusals, got ${JSON.stringify(inbox)}`);
    assert.deepEqual(inbox, [
      "hello bob",
      "actor.invalid_argument: ws.send: the data must be a string or bytes (Uint8Array, ArrayBuffer), got 42",
      "actor.invalid_argument: ws.close: the code must be an integer from 1000 to 4999, got \"4000\"",
      "actor.invalid_argument: ws.close: the reason must be a string, got 7",
    ]);
    ws.send("still open");
    await waitFor(() => inbox.length === 5, 5000, "the echo");
    assert.equal(inbox[4], "echo:still open:2");
    ws.close();
  });

  test("messages sent while onConnect still runs reach the listeners onWebSocket adds, in order", async () => {
    const id = await getOrCreate(engine, "rawGated", "early");
    const ws = new WebSocket(`${engine.endpoint.replace("http", "ws")}/gateway/${id}/websocket/`);
    const inbox = [];
    ws.onmessage = (e) => inbox.push(e.data);
    await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
    ws.send("one");
    ws.send("two");
    // The action travels behind the two messages to the runtime, which holds them until
    // onWebSocket has run; it then lets onConnect finish.
    assert.equal(await call(engine, id, "release"), true);
    await waitFor(() => inbox.length >= 3, 5000, () => `ready and two echoes, got ${JSON.stringify(inbox)}`);
    assert.deepEqual(inbox, ["ready", "echo:one", "echo:two"]);
    ws.send("three");
    await waitFor(() => inbox.length === 4, 5000, "the third echo");
    assert.equal(inbox[3], "echo:three");
    assert.equal(await call(engine, id, "messages"), 3);
    ws.close();
  });
});

describe("wasm runtime: bad values and bad arguments", () => {
  let engine;
  let registry;
  const logs = [];
  before(async () => {
    engine = await startEngine();
    registry = await serve({ hardened: actors.hardened, brokenStart: actors.brokenStart }, {
      endpoint: engine.endpoint,
      handleSignals: false,
      logLevel: "warn",
      logger: (level, component, message) => logs.push(`${level} ${component}: ${message}`),
    });
  });
  after(async () => {
    await registry?.shutdown();
    await engine?.stop();
  });

  const error = async (id, name, args = []) => {
    const r = await action(engine, id, name, args);
    assert.equal(r.status >= 400, true, `${name} should fail: ${JSON.stringify(r.body)}`);
    return r.body;
  };

  test("a thrown value without a prototype and a result whose getter throws do not crash the runtime", async () => {
    const id = await getOrCreate(engine, "hardened", "crashers");
    assert.deepEqual(await error(id, "throwWithoutPrototype"),
      { group: "rivetkit", code: "internal_error", message: "An internal error occurred" });
    const getter = await error(id, "returnThrowingGetter");
    assert.equal(`${getter.group}.${getter.code}`, "actor.invalid_value");
    assert.match(getter.message, /getter boom/);
    assert.equal(await call(engine, id, "increment", 1), 1, "the runtime and the actor still work");
    assert.equal(registry.connected, true);
  });

  test("state that cannot be saved fails the action that made it so, and the last saved state stays durable", async () => {
    const id = await getOrCreate(engine, "hardened", "state");
    assert.equal(await call(engine, id, "increment", 2), 2);
    const bad = await error(id, "putFunctionInState");
    assert.equal(`${bad.group}.${bad.code}`, "actor.invalid_value");
    assert.match(bad.message, /state cannot be saved/);
    assert.ok(logs.some((l) => /state cannot be saved/.test(l)), logs.join("\n"));
    assert.equal(await call(engine, id, "removeFunctionFromState"), 2, "fixing the state makes actions succeed again");
    await forceSleep(engine, id);
    assert.equal(await call(engine, id, "getCount"), 2);
  });

  test("bad arguments to the context are structured errors", async () => {
    const id = await getOrCreate(engine, "hardened", "arguments");
    const kv = await error(id, "kvNumberKey");
    assert.equal(`${kv.group}.${kv.code}`, "actor.invalid_value");
    assert.match(kv.message, /expected bytes/);
    const queue = await error(id, "queueFunction");
    assert.equal(`${queue.group}.${queue.code}`, "actor.invalid_value");
    const schedule = await error(id, "scheduleStringDelay");
    assert.equal(`${schedule.group}.${schedule.code}`, "actor.invalid_argument");
    assert.match(schedule.message, /schedule\.after.*"1000"/);
    // Names and SQL text that are not strings are refused where they are given, naming the
    // call and what it got (not rivetkit.internal_error from the wasm binding).
    const refused = async (name, args, pattern) => {
      const e = await error(id, name, args);
      assert.equal(`${e.group}.${e.code}`, "actor.invalid_argument", `${name}${JSON.stringify(args)}: ${JSON.stringify(e)}`);
      assert.match(e.message, pattern);
    };
    await refused("broadcastNumber", [], /^c\.broadcast: the event name must be a string, got 42$/);
    await refused("connSendNumber", [], /^conn\.send: the event name must be a string, got 7$/);
    await refused("disconnectNumber", [], /^conn\.disconnect: the reason must be a string, got 500$/);
    await refused("queueSendNumber", [], /^queue\.send: the queue name must be a string, got 5$/);
    for (const method of ["execute", "exec", "query", "run", "executeRaw", "executeWrite"]) {
      await refused("sqlTextNumber", [method], new RegExp(`^sql\\.${method}: the SQL text must be a string, got 123$`));
    }
    // The UserError reaches the client; only its unserializable metadata is dropped.
    assert.deepEqual(await error(id, "userErrorBadMetadata"),
      { group: "user", code: "with_bad_metadata", message: "kept" });
    assert.equal(await call(engine, id, "increment", 1), 1);
  });

  test("a start hook's Error reaches clients as its one-line summary; the runtime's log keeps the stack", async () => {
    const id = await getOrCreate(engine, "brokenStart", "wake");
    const started = Date.now();
    const r = await action(engine, id, "ping");
    assert.equal(r.status >= 400, true, JSON.stringify(r.body));
    // The engine gives up after its re-wakes and names the last stop's reason.
    assert.equal(`${r.body.group}.${r.body.code}`, "guard.service_unavailable", JSON.stringify(r.body));
    assert.match(r.body.message, /Last error: actor\.crashed: .*Error: wake failed on purpose$/);
    assert.doesNotMatch(r.body.message, /\n|\s{2}at |\.mjs:/, "no stack, no file paths");
    // GET /actors shows the same reason.
    const record = await actorRecord(engine, id);
    const crashed = JSON.stringify(record.error ?? record);
    assert.match(crashed, /Error: wake failed on purpose/);
    assert.doesNotMatch(crashed, /\\n|\s{2}at |\.mjs:/);
    // The runtime's log has the whole stack, down to the fixture's file (its line breaks
    // escaped as \n by the log format).
    const logged = logs.filter((l) => l.includes("actor failed to start") && l.includes("wake failed on purpose"));
    assert.ok(logged.length > 0, logs.join("\n"));
    assert.ok(logged.every((l) => /\\n {4}at .*fixtures\/actors\.mjs:\d+/.test(l)), logged[0]);
    assert.ok(Date.now() - started < 10000, `the failure took ${Date.now() - started} ms`);
  });

  test("a client's `__proto__` key is an own property, not the object's prototype", async () => {
    const id = await getOrCreate(engine, "hardened", "proto");
    const r = await action(engine, id, "describeArg", [JSON.parse('{"__proto__":{"isAdmin":true},"x":1}')]);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.deepEqual(r.body.output, { own: ["__proto__", "x"], inherited: null });
  });

  test("logs: a throwing onStateChange is logged with its error; c.log prints objects as JSON", async () => {
    const id = await getOrCreate(engine, "hardened", "logs");
    assert.equal(await call(engine, id, "increment", 13), 13);
    assert.ok(logs.some((l) => /onStateChange threw.*unlucky thirteen/.test(l)), logs.join("\n"));
    assert.equal(await call(engine, id, "logObject"), true);
    assert.ok(logs.some((l) => l.endsWith(`${id}: structured {"a":1} [2,3]`)), logs.join("\n"));
  });
});

describe("wasm runtime: definitions and serve()", () => {
  test("actor() refuses unknown keys and options, bad option values and exclusive pairs", async () => {
    const { actor } = await import("../src/index.js");
    const refused = (definition, pattern) =>
      assert.throws(() => actor(definition), (e) => e.group === "config" && e.code === "invalid_actor" && pattern.test(e.message));
    refused({ action: {} }, /unknown key `action`/);
    refused({ onBeforeActionResponse() {} }, /not supported/);
    refused({ state: {}, createState: () => ({}) }, /mutually exclusive/);
    refused({ options: { sleepTimout: 100 } }, /unknown option `sleepTimout`/);
    refused({ options: { sleepTimeout: "5s" } }, /options\.sleepTimeout must be a finite number/);
    refused({ options: { noSleep: "yes" } }, /noSleep must be a boolean/);
    refused({ actions: { a: 1 } }, /action a must be a function/);
    refused({ events: ["ok", 1] }, /events must be an array of names/);
    refused({ queues: "jobs" }, /queues must be an array of names/);
    actor({ state: {}, options: { sleepTimeout: 100, noSleep: false, icon: "x" }, actions: { a: () => 1 } });
  });

  test("serve() and serverless() refuse unknown options and values of the wrong kind before starting", async () => {
    const { actor, serve, serverless } = await import("../src/index.js");
    const actors = { a: actor({ actions: { x: () => 1 } }) };
    const refused = (e, pattern) => e.group === "config" && e.code === "invalid_options" && pattern.test(e.message);
    // A typo would otherwise connect to the default endpoint (or fail 30 s later).
    await assert.rejects(serve(actors, { enpoint: "http://127.0.0.1:1" }),
      (e) => refused(e, /^serve: unknown option `enpoint`; valid options: .*endpoint/));
    await assert.rejects(serve(actors, { endpoint: 6420 }), (e) => refused(e, /`endpoint` must be a string, got number/));
    await assert.rejects(serve(actors, { handleSignals: "no" }), (e) => refused(e, /`handleSignals` must be a boolean/));
    await assert.rejects(serve(actors, { connectTimeoutMs: -1 }), (e) => refused(e, /`connectTimeoutMs` must be a finite number >= 0/));
    await assert.rejects(serve(actors, { protocolVersion: 5 }), (e) => refused(e, /`protocolVersion` must be one of 2, 3, 4, got 5/));
    await assert.rejects(serve(actors, { logLevel: "verbose" }), (e) => refused(e, /`logLevel` must be one of/));
    await assert.rejects(serve(actors, null), (e) => refused(e, /options must be an object/));
    assert.throws(() => serverless(actors, { basepath: "/api" }), (e) => refused(e, /^serverless: unknown option `basepath`/));
    assert.throws(() => serverless(actors, { pingIntervalMs: "1s" }), (e) => refused(e, /`pingIntervalMs` must be a finite number/));
    // Every documented option, given with its kind, passes; undefined means "not given".
    assert.equal(typeof serverless(actors, { basePath: "/api", maxStartPayloadBytes: 1024, pingIntervalMs: 500,
      stopTimeoutMs: 100, endpoint: undefined, token: "t", namespace: "default", logLevel: "off" }).fetch, "function");
  });

  test("serve() that cannot reach an engine rejects, and then nothing keeps the process alive", async () => {
    const { spawn } = await import("node:child_process");
    const script = `
      import { actor, serve } from ${JSON.stringify(new URL("../src/index.js", import.meta.url).href)};
      try {
        await serve({ a: actor({ actions: { x: () => 1 } }) }, { endpoint: "http://127.0.0.1:1", connectTimeoutMs: 300, logLevel: "off" });
      } catch (e) {
        console.log(JSON.stringify({ id: e.id, message: e.message, metadata: e.metadata }));
      }`;
    const child = spawn(process.execPath, ["--experimental-websocket", "--input-type=module", "-e", script],
      { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout.on("data", (d) => { out += d; });
    const kill = setTimeout(() => child.kill("SIGKILL"), 15000);
    const [code, signal] = await new Promise((r) => child.once("exit", (c, s) => r([c, s])));
    clearTimeout(kill);
    assert.equal(signal, null, `the process did not exit by itself (output: ${out})`);
    assert.equal(code, 0);
    const e = JSON.parse(out);
    assert.equal(e.id, "envoy.not_connected");
    assert.match(e.message, /127\.0\.0\.1:1/);
    assert.deepEqual(e.metadata, { endpoint: "http://127.0.0.1:1", timeoutMs: 300 });
  });
});
