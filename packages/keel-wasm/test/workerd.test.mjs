// JS actors in workerd, served serverlessly (src/serverless.js), end to end: keel-engine
// (native, loopback, an admin token) with a serverless pool whose url is the worker's
// /api/rivet; creating an actor there makes the engine POST /start to the worker, whose
// registry lives for that request and connects its envoy with the x-rivet-token it got.
// The worker is test/hosts/worker.mjs; its capnp config is generated in a temp dir and
// embeds the package's files under their package-relative names (so the relative imports
// resolve), dist/keel.wasm as the wasm module test/hosts/keel.wasm, and an inline entry
// module that imports it. workerd comes from the
// package's devDependencies (scripts/bootstrap.sh runs npm ci); without it the suite is
// skipped with a reason. Run: node --experimental-websocket --test packages/keel-wasm/test/
import assert from "node:assert/strict";
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative, sep } from "node:path";
import { after, before, describe, test } from "node:test";

import { createClient } from "../src/client/index.js";
import { action, actorRecord, authHeaders, call, forceSleep, getOrCreate, waitFor } from "./gateway.mjs";
import { startEngine } from "./harness.mjs";
import { devBinary, freePort, packageDir, spawnProcess } from "./hosts/procs.mjs";

const workerd = devBinary("workerd");
const TOKEN = "workerd-s3cret";
const POOL = "edge";

// The worker's entry module (inline in the config: see test/hosts/worker.mjs).
const ENTRY = [
  'import wasmModule from "./keel.wasm";',
  'import { worker } from "./worker.mjs";',
  "export default worker(wasmModule);",
].join("\n");
// Module name → file (package-relative): what the entry imports, and every module of src/
// (so an import added there needs no change here).
const ES_MODULES = [
  "test/hosts/worker.mjs",
  "test/fixtures/actors.mjs",
  ...readdirSync(join(packageDir, "src"), { recursive: true })
    .filter((f) => f.endsWith(".js"))
    .map((f) => `src/${f.split(sep).join("/")}`),
  "dist/keel.mjs",
];
const WASM_MODULES = { "test/hosts/keel.wasm": "dist/keel.wasm" };

// workerd's config (toolchain.md Appendix C): one worker on 127.0.0.1:port, outbound
// allowed to loopback only through globalOutbound. capnp `embed` paths are relative to the
// config file.
function writeConfig(dir, port) {
  const embed = (file) => JSON.stringify(relative(dir, join(packageDir, file)));
  const modules = [
    `    (name = "test/hosts/entry.mjs", esModule = ${JSON.stringify(ENTRY)}),`,
    ...ES_MODULES.map((m) => `    (name = ${JSON.stringify(m)}, esModule = embed ${embed(m)}),`),
    ...Object.entries(WASM_MODULES).map(([m, f]) => `    (name = ${JSON.stringify(m)}, wasm = embed ${embed(f)}),`),
  ];
  const path = join(dir, "config.capnp");
  writeFileSync(path, `using Workerd = import "/workerd/workerd.capnp";
const config :Workerd.Config = (
  services = [
    (name = "main", worker = .keelWorker),
    (name = "loopback", network = (allow = ["local"])),
  ],
  sockets = [ (name = "http", address = "127.0.0.1:${port}", http = (), service = "main") ],
);
const keelWorker :Workerd.Worker = (
  modules = [
${modules.join("\n")}
  ],
  compatibilityDate = "2025-01-01",
  globalOutbound = "loopback",
  bindings = [ (name = "KEEL_LOG_LEVEL", text = ${JSON.stringify(process.env.KEEL_TEST_LOG_LEVEL ?? "error")}) ],
);
`);
  return path;
}

// Starts workerd on a free loopback port; resolves once the worker answers /health.
async function startWorkerd(dir) {
  const port = await freePort();
  const config = writeConfig(dir, port);
  const proc = spawnProcess(workerd, ["serve", config], { cwd: dir });
  const url = `http://127.0.0.1:${port}`;
  await waitFor(async () => {
    if (proc.child.exitCode !== null) throw new Error(`workerd exited:\n${proc.output()}`);
    try {
      return (await fetch(`${url}/api/rivet/health`)).ok;
    } catch {
      return false;
    }
  }, 15000, "workerd to serve");
  return { proc, url, base: `${url}/api/rivet` };
}

async function putServerlessPool(engine, pool, url, token, lifespan = { request_lifespan: 300 }) {
  const body = { datacenters: { default: { serverless: { url, max_runners: 10, ...lifespan } } } };
  const r = await fetch(`${engine.endpoint}/runner-configs/${pool}?namespace=default`, {
    method: "PUT",
    headers: { "content-type": "application/json", ...authHeaders(token) },
    body: JSON.stringify(body),
  });
  assert.equal(r.status, 200, await r.text());
}

// The keys of the envoys of `pool` the engine lists as connected, without stop_ts (one per
// /start in progress).
async function connectedEnvoyKeys(engine, pool) {
  const r = await fetch(`${engine.endpoint}/envoys?namespace=default`, { headers: authHeaders(TOKEN) });
  return (await r.json()).envoys.filter((e) => e.pool_name === pool && e.stop_ts == null).map((e) => e.envoy_key);
}
const connectedEnvoys = async (engine, pool) => (await connectedEnvoyKeys(engine, pool)).length;

describe("wasm runtime in workerd (serverless)", { skip: workerd ? false : "workerd not installed: run scripts/bootstrap.sh (npm ci in packages/keel-wasm)" }, () => {
  let dir;
  let worker;
  let engine;
  let spawnedAt;
  const timing = {};
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), "keel-workerd-"));
    spawnedAt = performance.now();
    [worker, engine] = await Promise.all([
      startWorkerd(dir).then((w) => { timing.workerdServing = performance.now() - spawnedAt; return w; }),
      startEngine({ extraArgs: ["--admin-token", TOKEN] }),
    ]);
    // The isolate's first loadKeel() (import of keel.mjs and instantiation: workerd compiled
    // the wasm module when it loaded the config), by the worker's own clock.
    timing.instantiate = (await (await fetch(`${worker.url}/__keel/instantiate`)).json()).instantiateMs;
    await putServerlessPool(engine, POOL, worker.base, TOKEN);
  });
  after(async () => {
    await engine?.stop();
    await worker?.proc.stop();
    if (process.env.KEEL_TEST_VERBOSE && worker) console.error(`workerd output:\n${worker.proc.output()}`);
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  test("the engine's /start runs the actor in the worker; its first action answers", async (t) => {
    const t0 = performance.now();
    const id = await getOrCreate(engine, "counter", "first", { pool: POOL, token: TOKEN });
    assert.equal(await call(engine, id, "increment", 5), 5);
    const firstActionMs = performance.now() - spawnedAt;
    // Create + the engine's POST /start + registry, connect, actor start + first action:
    // the first actor in a host that is already serving.
    const firstActorMs = performance.now() - t0;
    t.diagnostic(`workerd: serving ${timing.workerdServing.toFixed(0)} ms after spawn; first loadKeel() ` +
                 `${timing.instantiate} ms; first actor (create, /start, connect, start, action) ` +
                 `${firstActorMs.toFixed(1)} ms; first action answered ${firstActionMs.toFixed(0)} ms after ` +
                 `spawning workerd and keel-engine`);
    assert.deepEqual(await call(engine, id, "identity"), { id, name: "counter", key: ["first"] });
    assert.equal(await call(engine, id, "slowIncrement", 2), 7);
    const errors = await action(engine, id, "fail");
    assert.deepEqual(errors.body, { group: "user", code: "refused", message: "counter says no", metadata: { limit: 3 } });
    // The envoy connected with the token of the engine's x-rivet-token header: the worker
    // has no other (no KEEL_TOKEN binding), and this engine refuses envoys without one.
    assert.equal(await connectedEnvoys(engine, POOL), 1);
  });

  test("state persists across sleep and wake (the engine POSTs /start again)", async () => {
    const id = await getOrCreate(engine, "counter", "sleepy", { pool: POOL, token: TOKEN });
    assert.equal(await call(engine, id, "increment", 4), 4);
    assert.equal(await call(engine, id, "wakes"), 1);
    const envoysBefore = await connectedEnvoys(engine, POOL);
    await forceSleep(engine, id, { token: TOKEN });
    // The /start stream ended with `stopping` and its registry shut down: its envoy left.
    await waitFor(async () => (await connectedEnvoys(engine, POOL)) === envoysBefore - 1, 10000,
      "the sleeping actor's envoy to leave");
    assert.equal(await call(engine, id, "getCount"), 4);
    assert.equal(await call(engine, id, "wakes"), 1, "a new instance counted one wake");
    assert.equal((await actorRecord(engine, id, { token: TOKEN })).sleep_ts, undefined);
    // The actor asks to sleep itself; the next request wakes it again.
    assert.equal(await call(engine, id, "goToSleep"), true);
    await waitFor(async () => (await actorRecord(engine, id, { token: TOKEN })).sleep_ts !== undefined, 10000, "sleep");
    assert.equal(await call(engine, id, "increment", 1), 5);
  });

  test("an actor outlives its request's lifespan: drained (GOING_AWAY) to a new /start, state kept", async () => {
    // actors.md §6.10 step 4: at request_lifespan − drain_grace_period the engine stops the
    // actor with GOING_AWAY and starts it again on a new request.
    const pool = "edge-short";
    await putServerlessPool(engine, pool, worker.base, TOKEN, { request_lifespan: 3, drain_grace_period: 1 });
    try {
      const id = await getOrCreate(engine, "counter", "long-lived", { pool, token: TOKEN });
      assert.equal(await call(engine, id, "increment", 4), 4);
      const [first] = await connectedEnvoyKeys(engine, pool);
      assert.ok(first, "the first request's envoy is listed");
      await waitFor(async () => {
        const keys = await connectedEnvoyKeys(engine, pool);
        return keys.length > 0 && !keys.includes(first);
      }, 10000, "the actor to move to a new request's envoy");
      assert.equal(await call(engine, id, "increment", 1), 5);
      const pools = await (await fetch(`${engine.endpoint}/runner-configs?namespace=default&runner_name=${pool}`,
        { headers: authHeaders(TOKEN) })).json();
      assert.equal(pools.runner_configs[pool].datacenters.default.runner_pool_error, null);
    } finally {
      await fetch(`${engine.endpoint}/runner-configs/${pool}?namespace=default`, { method: "DELETE", headers: authHeaders(TOKEN) });
    }
  });

  test("KV: put, get, list by prefix, binary keys, delete; durable across sleep", async () => {
    const id = await getOrCreate(engine, "store", "kv", { pool: POOL, token: TOKEN });
    await call(engine, id, "put", "user:1", "ada");
    await call(engine, id, "put", "user:2", "grace");
    await call(engine, id, "put", "other", "x");
    assert.deepEqual(await call(engine, id, "list", "user:"), [["user:1", "ada"], ["user:2", "grace"]]);
    assert.deepEqual(await call(engine, id, "binary"), [250, 251]);
    await forceSleep(engine, id, { token: TOKEN });
    assert.equal(await call(engine, id, "get", "user:2"), "grace");
    assert.equal(await call(engine, id, "remove", "user:2"), null);
    assert.deepEqual(await call(engine, id, "list", "user:"), [["user:1", "ada"]]);
  });

  test("remote SQL: migration, inserts, named parameters, errors; durable across sleep", async () => {
    const id = await getOrCreate(engine, "todos", "sql", { pool: POOL, token: TOKEN });
    assert.equal(await call(engine, id, "backend"), "remote");
    assert.equal(await call(engine, id, "add", "milk"), 1);
    assert.equal(await call(engine, id, "add", "eggs"), 2);
    assert.deepEqual(await call(engine, id, "byText", "eggs"), [{ id: 2 }]);
    const bad = await action(engine, id, "bad");
    assert.equal(bad.body.group, "sqlite");
    await forceSleep(engine, id, { token: TOKEN });
    assert.deepEqual(await call(engine, id, "list"), [
      { id: 1, text: "milk", done: 0 },
      { id: 2, text: "eggs", done: 0 },
    ]);
  });

  test("events: a connection of the JS client receives the broadcasts of an actor in the worker", async () => {
    const client = createClient({ endpoint: engine.endpoint, token: TOKEN, poolName: POOL });
    const conn = client.getOrCreate("counter", "events").connect();
    try {
      const seen = [];
      conn.on("newCount", (n) => seen.push(n));
      await conn.waitReady(10000);
      assert.equal(await conn.increment(3), 3);
      await call(engine, conn.actorId, "increment", 2);
      await waitFor(() => seen.length === 2, 5000, "two events");
      assert.deepEqual(seen, [3, 5]);
    } finally {
      await conn.dispose();
    }
  });

  test("the worker's HTTP surface: health, metadata, routing and structured /start errors", async () => {
    const health = await fetch(`${worker.base}/health`);
    assert.deepEqual(await health.json(), { status: "ok", runtime: "rivetkit", version: "0.1.0" });
    const meta = await (await fetch(`${worker.base}/metadata`)).json();
    assert.equal(meta.runtime, "rivetkit");
    assert.equal(meta.envoyProtocolVersion, 4);
    assert.deepEqual(meta.envoy, { kind: { serverless: {} }, version: 1 });
    for (const name of ["counter", "store", "todos"]) assert.deepEqual(meta.actorNames[name], {});
    const root = await fetch(worker.base);
    assert.equal(root.status, 200);
    assert.match(await root.text(), /RivetKit/);
    const missing = await fetch(`${worker.base}/nope`);
    assert.equal(missing.status, 404);
    assert.equal(await missing.text(), "Not Found (RivetKit)");
    assert.equal((await fetch(`${worker.base}/start`, { method: "DELETE" })).status, 404);
    assert.equal((await fetch(`${worker.base}/start`, { method: "OPTIONS" })).status, 204);

    const start = (headers, body) => fetch(`${worker.base}/start`, { method: "POST", headers, body });
    let r = await start({}, "x");
    assert.equal(r.status, 400);
    assert.deepEqual(await r.json(), { group: "request", code: "invalid",
      message: "Invalid request: x-rivet-endpoint header is required",
      metadata: { reason: "x-rivet-endpoint header is required" } });
    r = await fetch(`${worker.base}/start`, { headers: { "x-rivet-endpoint": engine.endpoint, "x-rivet-runner-name": POOL } });
    assert.equal((await r.json()).metadata.reason, "x-rivet-namespace-name header is required");
    const headers = { "x-rivet-endpoint": engine.endpoint, "x-rivet-pool-name": POOL,
                      "x-rivet-namespace-name": "default", "x-rivet-token": TOKEN };
    // A v3 version prefix, then prefix 4 on something that is no ToEnvoy.
    r = await start(headers, new Uint8Array([3, 0, 0, 0]));
    assert.equal(r.status, 400);
    let body = await r.json();
    assert.equal(`${body.group}.${body.code}`, "serverless.invalid_payload");
    assert.match(body.message, /version/);
    r = await start(headers, new Uint8Array([4, 0, 0xff, 0xff, 0xff]));
    assert.equal(r.status, 400);
    assert.equal((await r.json()).code, "invalid_payload");
    r = await start(headers, new Uint8Array((1 << 20) + 1));
    assert.equal(r.status, 413);
    body = await r.json();
    assert.equal(`${body.group}.${body.code}`, "message.incoming_too_long");
  });

  test("the /start stream: pings each second, `stopping` when the actor sleeps, a client gone stops the actor; a wrong token is refused", async () => {
    // A proxy between the engine and the worker records each /start stream; on the "bad/"
    // path it replaces the x-rivet-token the engine sent with a wrong one.
    const streams = [];
    const { createServer } = await import("node:http");
    const proxy = createServer(async (req, res) => {
      if (req.method === "GET" && req.url.endsWith("/metadata")) {
        // The engine's metadata poll of each serverless pool: passed through, not recorded.
        const upstream = await fetch(`${worker.base}/metadata`);
        res.writeHead(upstream.status, { "content-type": upstream.headers.get("content-type") ?? "" });
        res.end(Buffer.from(await upstream.arrayBuffer()));
        return;
      }
      const chunks = [];
      for await (const c of req) chunks.push(c);
      const headers = { ...req.headers };
      delete headers.host;
      delete headers["content-length"];
      if (req.url.startsWith("/bad/")) headers["x-rivet-token"] = "wrong-token";
      const abort = new AbortController();
      const rec = { path: req.url, data: "", ended: false, abort, t0: Date.now(), pingTimes: [] };
      streams.push(rec);
      try {
        const upstream = await fetch(`${worker.base}/start`, { method: "POST", headers, body: Buffer.concat(chunks), signal: abort.signal });
        rec.status = upstream.status;
        rec.contentType = upstream.headers.get("content-type");
        rec.cacheControl = upstream.headers.get("cache-control");
        res.writeHead(upstream.status, { "content-type": rec.contentType ?? "" });
        const decoder = new TextDecoder();
        for await (const chunk of upstream.body) {
          const text = decoder.decode(chunk, { stream: true });
          for (let i = 0; i < text.split("event: ping").length - 1; ++i) rec.pingTimes.push(Date.now());
          rec.data += text;
          res.write(chunk);
        }
        rec.ended = true;
      } catch {
        rec.aborted = true;
      }
      res.end();
    });
    await new Promise((r) => proxy.listen(0, "127.0.0.1", r));
    const proxyUrl = `http://127.0.0.1:${proxy.address().port}`;
    try {
      await putServerlessPool(engine, "proxied", `${proxyUrl}/good/api/rivet`, TOKEN);
      await putServerlessPool(engine, "proxied-bad", `${proxyUrl}/bad/api/rivet`, TOKEN);

      // The right token: the actor runs, its stream pings, and sleeping ends it with `stopping`.
      const id = await getOrCreate(engine, "counter", "proxied", { pool: "proxied", token: TOKEN });
      assert.equal(await call(engine, id, "increment", 2), 2);
      const good = streams.find((r) => r.path.startsWith("/good/"));
      assert.equal(good.status, 200);
      assert.equal(good.contentType, "text/event-stream");
      assert.equal(good.cacheControl, "no-cache");
      await waitFor(() => good.pingTimes.length >= 2, 5000, "a second ping");
      assert.ok(good.data.startsWith("event: ping\ndata:\n\n"), good.data);
      const gap = good.pingTimes[1] - good.pingTimes[0];
      assert.ok(gap >= 700 && gap <= 4000, `pings ${gap} ms apart`);
      assert.ok(!good.data.includes("stopping"), good.data);
      await forceSleep(engine, id, { token: TOKEN });
      await waitFor(() => good.ended, 5000, "the stream to end");
      assert.ok(good.data.endsWith("event: stopping\ndata:\n\n"), good.data);

      // The client going away while the actor runs: the worker shuts that registry down
      // gracefully, its envoy leaves, and the engine starts the actor again (a new /start)
      // with its state intact.
      const id2 = await getOrCreate(engine, "counter", "abandoned", { pool: "proxied", token: TOKEN });
      assert.equal(await call(engine, id2, "increment", 6), 6);
      const open = streams.filter((r) => r.path.startsWith("/good/") && !r.ended && !r.aborted);
      assert.equal(open.length, 1);
      const startsBefore = streams.length;
      const [abandoned] = await connectedEnvoyKeys(engine, "proxied");
      open[0].abort.abort();
      // (The engine may already have started the actor again on a new envoy.)
      await waitFor(async () => !(await connectedEnvoyKeys(engine, "proxied")).includes(abandoned), 10000,
        "the abandoned registry's envoy to leave");
      assert.equal(await call(engine, id2, "getCount"), 6);
      assert.ok(streams.length > startsBefore, "the engine POSTed /start again");

      // A wrong token: the stream opens and pings, but the engine never lists the envoy.
      await getOrCreate(engine, "counter", "proxied-bad", { pool: "proxied-bad", token: TOKEN });
      await waitFor(() => streams.some((r) => r.path.startsWith("/bad/") && r.pingTimes.length >= 2), 5000,
        "the wrong-token stream's second ping");
      const bad = streams.find((r) => r.path.startsWith("/bad/"));
      assert.equal(bad.status, 200);
      assert.ok(!bad.data.includes("stopping"), bad.data);
      assert.equal(await connectedEnvoys(engine, "proxied-bad"), 0);
      const envoys = await (await fetch(`${engine.endpoint}/envoys?namespace=default`, { headers: authHeaders(TOKEN) })).json();
      assert.ok(!envoys.envoys.some((e) => e.pool_name === "proxied-bad"), JSON.stringify(envoys));
    } finally {
      for (const pool of ["proxied", "proxied-bad"]) {
        await fetch(`${engine.endpoint}/runner-configs/${pool}?namespace=default`, { method: "DELETE", headers: authHeaders(TOKEN) });
      }
      // Cancelling the forwarded streams is the client going away: the worker shuts those
      // registries down.
      for (const r of streams) r.abort.abort();
      proxy.closeAllConnections();
      await new Promise((r) => proxy.close(r));
    }
  });
});
