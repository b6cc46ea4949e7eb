// Persisted state round trip between runtimes (issue 8): actors written by the native
// runtime (keel-examples) are woken by the wasm runtime hosting the same actors in
// JavaScript (examples/js), changed there, and woken natively again — state, schedule
// (alarms and their pending events), queue messages and a hibernated connection (its
// record: params, connection state, subscriptions) stay intact in both directions. One engine throughout;
// the runtimes take turns in its `default` pool.
import assert from "node:assert/strict";
import { after, before, test } from "node:test";

import { createClient } from "../src/client/index.js";
import { serve } from "../src/index.js";
import * as jsExamples from "../../../examples/js/actors.mjs";
import { forceSleep, waitFor } from "./gateway.mjs";
import { startEngine, startNativeRuntime } from "./harness.mjs";

let engine;
let client;
before(async () => {
  engine = await startEngine({ storage: "rocksdb" });
  client = createClient({ endpoint: engine.endpoint, encoding: "bare" });
});
after(async () => {
  await client?.dispose?.();
  await engine?.stop();
});

async function envoyCount() {
  const r = await fetch(`${engine.endpoint}/envoys?namespace=default`);
  return (await r.json()).envoys.filter((e) => e.stop_ts == null).length;
}

test("native → wasm → native: state, schedule, queue and a hibernated connection survive", { timeout: 90000 }, async () => {
  const counter = client.getOrCreate("counter", ["roundtrip"]);
  const scheduler = client.getOrCreate("scheduler", ["roundtrip"]);
  const chat = client.getOrCreate("chat", ["roundtrip"]);

  // 1. Native.
  let native = await startNativeRuntime(engine);
  assert.equal(await counter.increment(5), 5);
  const farId = await scheduler.remind("far", 3_600_000);
  const soonId = await scheduler.remind("soon", 2500);
  await scheduler.send("inbox", { text: "queued natively", delay_ms: 3_600_000 });
  const conn = chat.connect({ nickname: "ada" });
  const messages = [];
  conn.on("message", (m) => messages.push(m));
  assert.equal(await conn.send("from native"), 1);
  await waitFor(() => messages.length === 1, 5000, "the first message event");
  await native.stop();  // SIGTERM: every actor saves and sleeps; the connection hibernates
  await waitFor(async () => (await envoyCount()) === 0, 10000, "the native envoy to leave");

  // 2. Wasm (JavaScript actors, same names).
  const registry = await serve(jsExamples, { endpoint: engine.endpoint, handleSignals: false, logLevel: "error" });
  try {
    assert.equal(await counter.getCount(), 5);
    assert.equal(await counter.increment(1), 6);
    const pending = await scheduler.pending();
    assert.deepEqual(pending.map((r) => r.id).sort(), [farId, soonId].sort());
    // The message queued natively is taken in wasm; one queued here waits for native.
    assert.equal(await scheduler.drain(), 1);
    await scheduler.send("inbox", { text: "queued in wasm", delay_ms: 3_600_000 });
    // The alarm set natively fires in wasm.
    await waitFor(async () => (await scheduler.fired()).some((r) => r.id === soonId), 15000, "the alarm to fire in wasm");
    // The same client connection, restored from its record: conn state "ada", subscribed.
    assert.equal(await conn.send("from wasm"), 2);
    await waitFor(() => messages.length === 2, 5000, "the second message event");
    assert.deepEqual(messages.map((m) => [m.from, m.text]), [["ada", "from native"], ["ada", "from wasm"]]);
    await forceSleep(engine, await counter.resolve());
    assert.equal(await counter.getCount(), 6);
  } finally {
    await registry.shutdown();
  }
  await waitFor(async () => (await envoyCount()) === 0, 10000, "the wasm envoy to leave");

  // 3. Native again.
  native = await startNativeRuntime(engine);
  try {
    assert.equal(await counter.getCount(), 6);
    const fired = await scheduler.fired();
    assert.deepEqual(fired.map((r) => r.text), ["soon"]);
    assert.deepEqual((await scheduler.pending()).map((r) => r.text), ["far", "queued natively"]);
    assert.equal(await scheduler.drain(), 1);
    assert.deepEqual((await scheduler.pending()).map((r) => r.text), ["far", "queued natively", "queued in wasm"]);
    assert.equal(await scheduler.drain(), 0);
    assert.equal(await conn.send("native again"), 3);
    await waitFor(() => messages.length === 3, 5000, "the third message event");
    assert.deepEqual((await chat.history()).map((m) => [m.from, m.text]), [
      ["ada", "from native"], ["ada", "from wasm"], ["ada", "native again"],
    ]);
  } finally {
    await conn.dispose();
    await native.stop();
  }
});
