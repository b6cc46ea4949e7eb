// Startup of the wasm runtime in Node (issue 8: "instantiate and start the first actor in
// ≤ 50 ms in each host, not counting the host process's own start"). Prints one JSON object:
//   wasm_bytes / wasm_gzip_bytes   size of dist/keel.wasm (built -Oz)
//   host_warmup_ms                 Node's first fetch + WebSocket (lazy undici load; host cost)
//   instantiate_ms                 compile + instantiate keel.wasm (loadKeel)
//   connect_ms                     registry created and the engine's Init received
//   first_actor_ms                 get-or-create + first action answered (actor start
//                                  included), on a runtime that is already connected
//   total_ms                       instantiate + connect + first actor
// Needs a keel-engine: KEEL_ENDPOINT, or one is started from KEEL_BIN_DIR (default
// build/dev/bin; a release build gives the engine's real speed).
//   node --experimental-websocket packages/keel-wasm/bench/startup.mjs
//   KEEL_ENDPOINT=… deno run --allow-read --allow-net=127.0.0.1 --allow-env packages/keel-wasm/bench/startup.mjs
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";

import { actor, detectHost, loadKeel, serve } from "../src/index.js";

const t0 = performance.now();
await loadKeel();
const tInstantiated = performance.now();

let engine = null;
let endpoint = process.env.KEEL_ENDPOINT;
if (!endpoint) {
  const { startEngine } = await import("../test/harness.mjs");
  engine = await startEngine();
  endpoint = engine.endpoint;
}

// Node loads its fetch and WebSocket implementations (undici) lazily, on first use: part of
// the host's own start, measured apart (host_warmup_ms) so the figures below are ours.
const tw = performance.now();
await (await fetch(`${endpoint}/health`)).text();
await new Promise((resolve) => {
  const ws = new WebSocket(endpoint.replace("http", "ws") + "/envoys/connect");
  ws.onerror = ws.onclose = () => resolve();
  ws.onopen = () => ws.close();
});
const hostWarmup = performance.now() - tw;

const counter = actor({
  state: { count: 0 },
  actions: { increment: (c, n) => (c.state.count += n) },
});
const t1 = performance.now();
const registry = await serve({ counter }, { endpoint, handleSignals: false, logLevel: "error" });
const tConnected = performance.now();

const key = `startup-${Date.now()}`;
const r = await fetch(`${endpoint}/gateway/counter/action/increment?rvt-namespace=default&rvt-method=getOrCreate&rvt-runner=default&rvt-key=${key}`, {
  method: "POST",
  headers: { "content-type": "application/json", "x-rivet-encoding": "json" },
  body: JSON.stringify({ args: [1] }),
});
const body = await r.json();
const tFirst = performance.now();
if (body.output !== 1) throw new Error(`unexpected answer ${JSON.stringify(body)}`);

const wasm = readFileSync(new URL("../dist/keel.wasm", import.meta.url));
const round = (x) => Math.round(x * 10) / 10;
console.log(JSON.stringify({
  host: typeof Deno !== "undefined" ? `deno ${Deno.version.deno}` : `${detectHost()} ${process.version}`,
  wasm_bytes: wasm.length,
  wasm_gzip_bytes: gzipSync(wasm).length,
  host_warmup_ms: round(hostWarmup),
  instantiate_ms: round(tInstantiated - t0),
  connect_ms: round(tConnected - t1),
  first_actor_ms: round(tFirst - tConnected),
  total_ms: round(tInstantiated - t0 + (tFirst - t1)),
}));
await registry.shutdown();
await engine?.stop();
