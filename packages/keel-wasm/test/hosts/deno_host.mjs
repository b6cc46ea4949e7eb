// A Deno program hosting the test fixtures' actors (test/fixtures/actors.mjs) as an envoy of
// keel-engine, for test/deno.test.mjs. Configured by the environment like any registry
// (KEEL_ENDPOINT, KEEL_TOKEN, KEEL_POOL, KEEL_LOG_LEVEL); KEEL_CONNECT_TIMEOUT_MS bounds the
// wait for the engine's greeting. Prints one line `keel-deno-host ready {json}` with the
// wasm instantiation time and the time since process start, or exits 1 with
// `keel-deno-host failed {json}`. SIGTERM/SIGINT stop it gracefully (actors sleep first).
//
//   deno run --allow-read=packages/keel-wasm --allow-net=127.0.0.1:6420 --allow-env \
//     packages/keel-wasm/test/hosts/deno_host.mjs
//
// Outside Deno it does nothing: Node's test runner loads every .mjs under test/.
import { loadKeel, serve } from "../../src/index.js";
import * as actors from "../fixtures/actors.mjs";

if (typeof Deno !== "undefined") {
  const t0 = performance.now();
  await loadKeel();
  const instantiateMs = performance.now() - t0;
  try {
    const registry = await serve(actors, {
      connectTimeoutMs: Number(Deno.env.get("KEEL_CONNECT_TIMEOUT_MS") ?? 20000),
    });
    console.log(`keel-deno-host ready ${JSON.stringify({
      deno: Deno.version.deno,
      envoyKey: registry.envoyKey,
      instantiateMs,
      sinceStartMs: performance.now(),
    })}`);
  } catch (e) {
    console.log(`keel-deno-host failed ${JSON.stringify({ group: e.group, code: e.code, message: e.message })}`);
    Deno.exit(1);
  }
}
