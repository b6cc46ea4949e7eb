// JS actors hosted by Deno, end to end: keel-engine (native, loopback, a namespace token) and
// `deno run` with the minimum permissions on test/hosts/deno_host.mjs (the fixtures of
// test/fixtures/actors.mjs), driven through the engine's gateway. Deno comes from the
// package's devDependencies (scripts/bootstrap.sh runs npm ci); without it the suite is
// skipped with a reason. Run: node --experimental-websocket --test packages/keel-wasm/test/
import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, test } from "node:test";

import { createClient } from "../src/client/index.js";
import { call, forceSleep, getOrCreate, waitFor } from "./gateway.mjs";
import { startEngine, waitForEnvoy } from "./harness.mjs";
import { devBinary, packageDir, spawnProcess } from "./hosts/procs.mjs";

const deno = devBinary("deno");
const TOKEN = "deno-s3cret";
const READY = /keel-deno-host ready (\{.*\})/;

// `deno run` with read access to the package only, network access to the engine's port only,
// and the environment (the registry reads KEEL_*). DENO_DIR is a temp dir (no shared cache).
function startDenoHost(engine, denoDir, { token = TOKEN, env = {} } = {}) {
  return spawnProcess(deno, [
    "run", "--no-prompt", `--allow-read=${packageDir}`, `--allow-net=127.0.0.1:${engine.port}`, "--allow-env",
    join(packageDir, "test/hosts/deno_host.mjs"),
  ], {
    env: { DENO_DIR: denoDir, NO_COLOR: "1", KEEL_ENDPOINT: engine.endpoint, KEEL_TOKEN: token,
           KEEL_LOG_LEVEL: "error", ...env },
  });
}

describe("wasm runtime on Deno", { skip: deno ? false : "deno not installed: run scripts/bootstrap.sh (npm ci in packages/keel-wasm)" }, () => {
  let engine;
  let host;
  let denoDir;
  let ready;
  before(async () => {
    denoDir = mkdtempSync(join(tmpdir(), "keel-deno-"));
    engine = await startEngine({ token: TOKEN });
    host = startDenoHost(engine, denoDir);
    ready = JSON.parse((await host.waitFor(READY, 20000, "deno host"))[1]);
  });
  after(async () => {
    await host?.stop();
    await engine?.stop();
    if (denoDir) rmSync(denoDir, { recursive: true, force: true });
  });

  test("the host connects with the token and its first actor answers", async (t) => {
    const envoys = await waitForEnvoy(engine, { ms: 5000 });
    assert.ok(envoys.some((e) => e.envoy_key === ready.envoyKey && e.stop_ts == null), JSON.stringify(envoys));
    const id = await getOrCreate(engine, "counter", "first");
    assert.equal(await call(engine, id, "increment", 5), 5);
    const firstActionMs = performance.now() - host.startedAt;
    t.diagnostic(`deno ${ready.deno}: wasm instantiate ${ready.instantiateMs.toFixed(1)} ms, ` +
                 `registry ready ${ready.sinceStartMs.toFixed(0)} ms after deno's start, ` +
                 `first action answered ${firstActionMs.toFixed(0)} ms after spawn`);
    assert.deepEqual(await call(engine, id, "identity"), { id, name: "counter", key: ["first"] });
    assert.equal(await call(engine, id, "slowIncrement", 2), 7);
  });

  test("state survives a forced sleep; the wake is a new instance", async () => {
    const id = await getOrCreate(engine, "counter", "sleepy");
    assert.equal(await call(engine, id, "increment", 4), 4);
    assert.equal(await call(engine, id, "wakes"), 1);
    await forceSleep(engine, id);
    assert.equal(await call(engine, id, "getCount"), 4);
    assert.equal(await call(engine, id, "wakes"), 1, "vars are per instance");
    assert.equal(await call(engine, id, "increment", 1), 5);
  });

  test("KV: put, get, list by prefix, binary keys, delete; durable across sleep", async () => {
    const id = await getOrCreate(engine, "store", "kv");
    await call(engine, id, "put", "user:1", "ada");
    await call(engine, id, "put", "user:2", "grace");
    await call(engine, id, "put", "other", "x");
    assert.deepEqual(await call(engine, id, "list", "user:"), [["user:1", "ada"], ["user:2", "grace"]]);
    assert.deepEqual(await call(engine, id, "binary"), [250, 251]);
    await forceSleep(engine, id);
    assert.equal(await call(engine, id, "get", "user:2"), "grace");
    assert.equal(await call(engine, id, "remove", "user:2"), null);
    assert.deepEqual(await call(engine, id, "list", "user:"), [["user:1", "ada"]]);
  });

  test("remote SQL: migration, inserts, named parameters; durable across sleep", async () => {
    const id = await getOrCreate(engine, "todos", "sql");
    assert.equal(await call(engine, id, "backend"), "remote");
    assert.equal(await call(engine, id, "add", "milk"), 1);
    assert.equal(await call(engine, id, "add", "eggs"), 2);
    assert.deepEqual(await call(engine, id, "byText", "eggs"), [{ id: 2 }]);
    await forceSleep(engine, id);
    assert.deepEqual(await call(engine, id, "list"), [
      { id: 1, text: "milk", done: 0 },
      { id: 2, text: "eggs", done: 0 },
    ]);
  });

  test("events: a connection of the JS client receives the broadcasts", async () => {
    const client = createClient({ endpoint: engine.endpoint, encoding: "json" });
    const conn = client.getOrCreate("counter", "events").connect();
    try {
      const seen = [];
      conn.on("newCount", (n) => seen.push(n));
      await conn.waitReady(10000);
      assert.equal(await conn.increment(3), 3);
      await waitFor(() => seen.length === 1, 5000, "the first event");
      // A change made over HTTP reaches the connection too.
      await call(engine, conn.actorId, "increment", 2);
      await waitFor(() => seen.length === 2, 5000, "the second event");
      assert.deepEqual(seen, [3, 5]);
    } finally {
      await conn.dispose();
    }
  });

  test("a host with a wrong token is refused and never listed", async () => {
    const before = (await waitForEnvoy(engine, { ms: 5000 })).length;
    const wrong = startDenoHost(engine, denoDir, { token: "wrong", env: { KEEL_CONNECT_TIMEOUT_MS: "1500" } });
    try {
      const m = await wrong.waitFor(/keel-deno-host failed (\{.*\})/, 15000, "deno host with a wrong token");
      assert.equal(JSON.parse(m[1]).code, "not_connected");
      assert.equal((await wrong.exited).code, 1);
      const keys = (await waitForEnvoy(engine, { ms: 1000 })).map((e) => e.envoy_key);
      assert.equal(keys.length, before);
      assert.deepEqual(keys, [ready.envoyKey]);
    } finally {
      await wrong.stop();
    }
  });

  test("SIGTERM stops the host gracefully (exit 0) and a new host serves the saved state", async () => {
    const id = await getOrCreate(engine, "counter", "restart");
    assert.equal(await call(engine, id, "increment", 11), 11);
    assert.deepEqual(await host.stop(), { code: 0, signal: null });
    await waitFor(async () => {
      const r = await fetch(`${engine.endpoint}/envoys?namespace=default`);
      return ((await r.json()).envoys ?? []).every((e) => e.stop_ts != null);
    }, 10000, "the stopped envoy to disconnect");
    host = startDenoHost(engine, denoDir);
    await host.waitFor(READY, 20000, "second deno host");
    assert.equal(await call(engine, id, "getCount"), 11);
  });
});
