#!/usr/bin/env -S node --experimental-websocket
// Hosts the JavaScript example actors on the wasm runtime as an envoy of keel-engine.
// Settings from the environment, as for the native runtime: KEEL_ENDPOINT (default
// http://127.0.0.1:6420), KEEL_TOKEN, KEEL_NAMESPACE, KEEL_POOL, KEEL_LOG_LEVEL.
//   node --experimental-websocket examples/js/main.mjs        (Node 20)
//   deno run --allow-read --allow-net --allow-env examples/js/main.mjs
// Ctrl-C / SIGTERM stops gracefully (every actor saves and sleeps first).
import { serve } from "../../packages/keel-wasm/src/index.js";
import * as actors from "./actors.mjs";

const t0 = performance.now();
const registry = await serve(actors);
console.log(`keel-js-examples: envoy ${registry.envoyKey} connected in ${(performance.now() - t0).toFixed(1)} ms ` +
  `(actors: ${Object.keys(actors).join(", ")})`);
