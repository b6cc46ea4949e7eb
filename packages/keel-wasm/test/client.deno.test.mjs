// The same client module, unmodified, under Deno (the package's devDependency `deno`):
// stateless actions, a connection with an event, in each encoding, against a real
// keel-engine + keel-examples. Skipped when node_modules has no deno.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join, dirname } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

import { startEngine, startNativeRuntime } from "./harness.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const deno = join(here, "../node_modules/.bin/deno");
const clientUrl = pathToFileURL(join(here, "../src/client/index.js")).href;
const skip = existsSync(deno) ? false : "node_modules/.bin/deno is not installed";

let engine, runtime;

before(async () => {
  if (skip) return;
  engine = await startEngine();
  runtime = await startNativeRuntime(engine);
}, { timeout: 60000 });

after(async () => {
  await runtime?.stop();
  await engine?.stop();
}, { timeout: 60000 });

// Runs `code` with `deno eval`, bounded by `ms`; resolves with its stdout.
function denoEval(code, ms) {
  return new Promise((resolve, reject) => {
    const child = spawn(deno, ["eval", "--quiet", code], { stdio: ["ignore", "pipe", "pipe"] });
    let out = "";
    let err = "";
    child.stdout.on("data", (d) => (out += d));
    child.stderr.on("data", (d) => (err += d));
    const timer = setTimeout(() => child.kill("SIGKILL"), ms);
    child.on("exit", (code, signal) => {
      clearTimeout(timer);
      if (code === 0) resolve(out);
      else reject(new Error(`deno exited (${code ?? signal}): ${err}`));
    });
  });
}

test("the client runs unmodified under Deno in json, cbor and bare", { skip, timeout: 60000 }, async () => {
  const code = `
    import { createClient, ActorError } from ${JSON.stringify(clientUrl)};
    const results = {};
    for (const encoding of ["json", "cbor", "bare"]) {
      const client = createClient({ endpoint: ${JSON.stringify(engine.endpoint)}, encoding });
      const h = client.getOrCreate("counter", ["deno", encoding]);
      const conn = h.connect();
      const event = new Promise((r) => conn.once("newCount", r));
      await conn.waitReady(5000);
      const http = await h.increment(2);
      const ws = await conn.increment(3);
      const ev = await event;
      let error = null;
      try { await h.nope(); } catch (e) { error = e instanceof ActorError ? e.id : String(e); }
      await conn.dispose();
      results[encoding] = { http, ws, ev, error, id: conn.actorId === await h.resolve() };
    }
    console.log(JSON.stringify(results));
  `;
  const out = JSON.parse(await denoEval(code, 45000));
  for (const encoding of ["json", "cbor", "bare"]) {
    // The event of the first increment (2) may arrive before or after the subscription
    // took effect on the actor; the connection's own increment is what it waits for.
    assert.deepStrictEqual({ ...out[encoding], ev: undefined }, { http: 2, ws: 5, ev: undefined, error: "actor.action_not_found", id: true }, encoding);
    assert.ok([2, 5].includes(out[encoding].ev), `${encoding}: event ${out[encoding].ev}`);
  }
});
