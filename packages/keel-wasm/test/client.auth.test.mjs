// The JS client against an engine that requires tokens: the `default` namespace's token
// (envoys), an admin token (REST API) and a gateway token (actor routes), all the same
// secret. The right token reaches everything (REST as a bearer token, the gateway as
// rvt-token / x-rivet-token / rivet_token.*); a wrong or missing one is refused with a
// structured error.
//
// Note: a namespace token alone only guards envoy connections (src/engine/core/engine.cc);
// clients are refused by the admin token (REST) and the gateway token (actor routes).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";

import { startEngine, startNativeRuntime } from "./harness.mjs";
import { createClient, ActorError } from "../src/client/index.js";

const SECRET = "s3cret-token";
// Every test and hook is bounded in time (a hung wait fails instead of hanging the run).
const T = { timeout: 30000 };
let engine, runtime;
// Clients made here are disposed after the run, so no connection outlives it.
const clients = [];
function makeClient(options) {
  const c = createClient(options);
  clients.push(c);
  return c;
}
let seq = 0;
const unique = (prefix) => `${prefix}-${process.pid}-${++seq}`;

before(async () => {
  engine = await startEngine({ token: SECRET, extraArgs: ["--admin-token", SECRET, "--gateway-token", SECRET] });
  runtime = await startNativeRuntime(engine, { token: SECRET });
}, { timeout: 60000 });

after(async () => {
  await Promise.all(clients.map((c) => c.dispose()));
  await runtime?.stop();
  await engine?.stop();
}, { timeout: 60000 });

function within(ms, promise, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

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

for (const enc of ["json", "cbor", "bare"]) {
  test(`[${enc}] the right token reaches REST, the gateway (query and direct forms) and WebSockets`, T, async () => {
    const c = makeClient({ endpoint: engine.endpoint, token: SECRET, encoding: enc });
    const h = c.getOrCreate("counter", unique(`ok-${enc}`));
    assert.equal(await h.increment(2), 2);  // query form: rvt-token
    const id = await h.resolve();  // REST: Authorization: Bearer
    assert.equal(await h.increment(3), 5);  // direct form: x-rivet-token
    assert.equal(await c.getForId("counter", id).getCount(), 5);
    const conn = h.connect();  // rivet_token.<token>
    try {
      const event = within(5000, new Promise((r) => conn.once("newCount", r)), "the newCount event");
      await conn.waitReady(5000);
      assert.equal(await conn.increment(1), 6);
      assert.equal(await event, 6);
    } finally {
      await conn.dispose();
    }
    assert.equal((await c.getActor(id)).actorId, id);
  });

  test(`[${enc}] a wrong token is refused with a structured error`, T, async () => {
    const c = makeClient({ endpoint: engine.endpoint, token: "wrong", encoding: enc });
    const h = c.getOrCreate("counter", unique(`bad-${enc}`));
    await rejectsWith(h.increment(1), { group: "api", code: "forbidden", message: "a valid gateway token is required", httpStatus: 403 });
    await rejectsWith(h.resolve(), { group: "api", code: "forbidden", message: "the token is not valid", httpStatus: 403 });
    await rejectsWith(c.create("counter", unique("bad")), { group: "api", code: "forbidden", httpStatus: 403 });
    const conn = h.connect();
    try {
      const errors = [];
      conn.onError((e) => errors.push(e));
      const e = await rejectsWith(conn.getCount(), { group: "api", code: "forbidden" });
      assert.match(e.message, /^api\.forbidden(#.*)?$/);
      assert.ok(errors.length >= 1 && errors[0].id === "api.forbidden");
      assert.notEqual(conn.status, "connected");
    } finally {
      await conn.dispose();
    }
  });
}

test("without a token: REST is api.unauthorized, the gateway api.forbidden", T, async () => {
  const c = makeClient({ endpoint: engine.endpoint });
  await rejectsWith(c.get("counter", "x").resolve(), { group: "api", code: "unauthorized", httpStatus: 401 });
  await rejectsWith(c.listActorNames(), { group: "api", code: "unauthorized", httpStatus: 401 });
  await rejectsWith(c.getOrCreate("counter", "x").getCount(), { group: "api", code: "forbidden", httpStatus: 403 });
});
