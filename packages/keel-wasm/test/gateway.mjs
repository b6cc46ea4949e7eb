// Small fetch helpers over the engine's REST API and gateway (json encoding), for the wasm
// runtime's tests. They do not use the JS client on purpose: a client bug must not hide a
// runtime bug.
export function authHeaders(token) {
  return token ? { authorization: `Bearer ${token}` } : {};
}

// PUT /actors (get-or-create) → actor id.
export async function getOrCreate(engine, name, key, { input, token, pool = "default" } = {}) {
  const body = { name, key, runner_name_selector: pool, crash_policy: "sleep" };
  if (input !== undefined) body.input = Buffer.from(JSON.stringify(input)).toString("base64");
  const r = await fetch(`${engine.endpoint}/actors?namespace=default`, {
    method: "PUT",
    headers: { "content-type": "application/json", ...authHeaders(token) },
    body: JSON.stringify(body),
  });
  const json = await r.json();
  if (!r.ok) throw new Error(`get-or-create ${name}/${key}: ${r.status} ${JSON.stringify(json)}`);
  return json.actor.actor_id;
}

// POST /gateway/{id}/action/{name} → {status, body}; body is {output} or an error.
export async function action(engine, actorId, name, args = [], { token } = {}) {
  const r = await fetch(`${engine.endpoint}/gateway/${actorId}/action/${name}`, {
    method: "POST",
    headers: { "content-type": "application/json", "x-rivet-encoding": "json", ...authHeaders(token) },
    body: JSON.stringify({ args }),
  });
  const text = await r.text();
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    body = { raw: text };
  }
  return { status: r.status, body };
}

// The action's output; throws with the error body otherwise.
export async function call(engine, actorId, name, ...args) {
  const r = await action(engine, actorId, name, args);
  if (r.status !== 200) throw new Error(`${name}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body.output;
}

// POST /actors/{id}/sleep, then waits until the engine reports the actor asleep.
export async function forceSleep(engine, actorId, { token, ms = 15000 } = {}) {
  const r = await fetch(`${engine.endpoint}/actors/${actorId}/sleep?namespace=default`, {
    method: "POST",
    headers: { "content-type": "application/json", ...authHeaders(token) },
    body: "{}",
  });
  if (!r.ok) throw new Error(`sleep ${actorId}: ${r.status} ${await r.text()}`);
  await waitFor(async () => (await actorRecord(engine, actorId, { token }))?.sleep_ts !== undefined, ms,
    `actor ${actorId} asleep`);
}

export async function actorRecord(engine, actorId, { token } = {}) {
  const r = await fetch(`${engine.endpoint}/actors?namespace=default&actor_ids=${actorId}`, {
    headers: authHeaders(token),
  });
  const json = await r.json();
  return json.actors?.[0];
}

// Polls `fn` (every 20 ms) until it returns truthy, for at most `ms`. `what` (a string, or a
// function giving one, read at the timeout) says what was awaited.
export async function waitFor(fn, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) {
      throw new Error(`timed out after ${ms} ms waiting for ${typeof what === "function" ? what() : what}`);
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}
