// Serverless hosting (actors.md §6.10 and Appendix B, envoy-protocol.md §4.9): instead of
// connecting on its own, the runtime answers HTTP and keel-engine calls it. Made for hosts
// where a connection cannot outlive the request that opened it (workerd / Cloudflare
// Workers outside a Durable Object); it works in any host with fetch-style handlers.
//
//   import wasmModule from "keel-wasm/dist/keel.wasm";   // workerd: a wasm module import
//   export default serverless({ counter }, { wasmModule });
//
// Routes under `basePath` (default /api/rivet), as the native keel::ServerlessHost
// (src/runtime/native/serverless.h):
//   GET  {base} or {base}/   200 text/plain
//   GET  {base}/health       200 {"status":"ok","runtime":"rivetkit","version"}
//   GET  {base}/metadata     200 {"runtime":"rivetkit","version","envoyProtocolVersion",
//                                 "actorNames":{name:{}},"envoy":{"kind":{"serverless":{}},"version"}}
//   GET|POST {base}/start    the serverless start (below)
//   OPTIONS *                204
//   anything else            404 "Not Found (RivetKit)"
//
// /start: headers x-rivet-endpoint, x-rivet-pool-name (or legacy x-rivet-runner-name) and
// x-rivet-namespace-name are required (400 request/invalid), x-rivet-token is optional
// (fallback: options.token, KEEL_TOKEN). When an endpoint or namespace is configured
// (options.endpoint / KEEL_ENDPOINT, options.namespace / KEEL_NAMESPACE) the headers must
// match (400 config/endpoint_mismatch, config/namespace_mismatch). A body above
// `maxStartPayloadBytes` (1 MiB) is 413 message/incoming_too_long. Then a Registry is
// created for the life of this request: it connects an envoy to the header's endpoint and
// the body (a version-prefixed ToEnvoy start command) is injected into it (rejected: 400 with
// its group/code, e.g. serverless/invalid_payload). The answer is a text/event-stream:
// `event: ping` at once and every `pingIntervalMs` (1 s) while the actor runs; once the
// envoy hosts no actor any more (the actor started and stopped, e.g. slept) the stream sends
// `event: stopping` and ends, and the registry shuts down. A client that goes away ends the
// stream too, and the registry shuts down gracefully (the actor sleeps, its state saved).
//
// Errors are JSON {"group","code","message"[,"metadata"]}. Other options: those of serve()
// (logLevel, logger, sqliteBackend, version, protocolVersion, WebSocket, env, …), plus
// basePath, maxStartPayloadBytes, pingIntervalMs, stopTimeoutMs (bound on the shutdown after
// a stream ended, default 5000). The Worker's `env` (bindings) is read like the process
// environment (KEEL_LOG_LEVEL, KEEL_TOKEN, …).
import { loadKeel, Registry } from "./index.js";
import { checkOptions } from "./options.js";

const VERSION = "0.1.0";
const PING = "event: ping\ndata:\n\n";
const STOPPING = "event: stopping\ndata:\n\n";
const CORS = {
  "access-control-allow-origin": "*",
  "access-control-allow-methods": "GET, POST, OPTIONS",
  "access-control-allow-headers": "*",
  "access-control-max-age": "86400",
};

function hostEnv() {
  if (typeof process !== "undefined" && process.env) return process.env;
  if (typeof Deno !== "undefined") {
    try {
      return Deno.env.toObject();
    } catch {
      return {};
    }
  }
  return {};
}

// The string bindings of a Worker's env over the configured/process environment.
function mergedEnv(options, workerEnv) {
  const out = { ...(options.env ?? hostEnv()) };
  if (workerEnv && typeof workerEnv === "object") {
    for (const [k, v] of Object.entries(workerEnv)) if (typeof v === "string") out[k] = v;
  }
  return out;
}

function json(status, body) {
  return new Response(JSON.stringify(body), {
    status,
    headers: { ...CORS, "content-type": "application/json" },
  });
}
function text(status, body) {
  return new Response(body, { status, headers: { ...CORS, "content-type": "text/plain; charset=utf-8" } });
}
function errorBody(group, code, message, metadata) {
  const body = { group, code, message };
  if (metadata !== undefined) body.metadata = metadata;
  return body;
}

function normalizeBase(base) {
  let b = base ?? "/api/rivet";
  if (!b.startsWith("/")) b = `/${b}`;
  while (b.endsWith("/")) b = b.slice(0, -1);
  return b;  // "" for the root
}

const trimSlashes = (u) => u.replace(/\/+$/, "");

// Returns a fetch handler object ({ fetch(request, env, ctx) }: a workerd/Cloudflare module
// worker's default export; Deno.serve and Bun take `.fetch` too) serving `actors`.
export function serverless(actors, options = {}) {
  checkOptions("serverless", options, {
    string: ["basePath"],
    number: ["maxStartPayloadBytes", "pingIntervalMs", "stopTimeoutMs"],
  });
  const base = normalizeBase(options.basePath);
  const maxStart = options.maxStartPayloadBytes ?? 1 << 20;
  const pingMs = options.pingIntervalMs ?? 1000;
  const stopTimeoutMs = options.stopTimeoutMs ?? 5000;
  const names = Object.keys(actors).sort();
  const metadata = (env) => ({
    runtime: "rivetkit",
    version: VERSION,
    envoyProtocolVersion: options.protocolVersion ?? 4,
    actorNames: Object.fromEntries(names.map((n) => [n, {}])),
    envoy: { kind: { serverless: {} }, version: options.version ?? Number(env.KEEL_ENVOY_VERSION ?? 1) },
  });

  async function start(request, env, ctx) {
    const h = request.headers;
    const required = (name, legacy) => {
      const v = h.get(name) || (legacy ? h.get(legacy) : null);
      if (v) return v;
      const reason = `${name} header is required`;
      throw json(400, errorBody("request", "invalid", `Invalid request: ${reason}`, { reason }));
    };
    const endpoint = required("x-rivet-endpoint");
    const pool = required("x-rivet-pool-name", "x-rivet-runner-name");
    const namespace = required("x-rivet-namespace-name");
    const pinnedEndpoint = options.endpoint ?? env.KEEL_ENDPOINT;
    if (pinnedEndpoint && trimSlashes(pinnedEndpoint) !== trimSlashes(endpoint)) {
      return json(400, errorBody("config", "endpoint_mismatch",
        `x-rivet-endpoint \`${endpoint}\` does not match the configured endpoint \`${pinnedEndpoint}\``));
    }
    const pinnedNamespace = options.namespace ?? env.KEEL_NAMESPACE;
    if (pinnedNamespace && pinnedNamespace !== namespace) {
      return json(400, errorBody("config", "namespace_mismatch",
        `x-rivet-namespace-name \`${namespace}\` does not match the configured namespace \`${pinnedNamespace}\``));
    }
    const declared = Number(h.get("content-length") ?? 0);
    const body = declared > maxStart * 2 ? null : new Uint8Array(await request.arrayBuffer());
    if (body === null || body.length > maxStart) {
      const size = body === null ? declared : body.length;
      return json(413, errorBody("message", "incoming_too_long",
        `start payload of ${size} bytes is larger than the maximum of ${maxStart}`));
    }

    const M = await loadKeel(options);
    const { envoyKey: _fixedKeysWouldCollide, ...rest } = options;
    const registry = new Registry(M, {
      ...rest,
      endpoint,
      namespace,
      pool,
      token: h.get("x-rivet-token") ?? options.token ?? env.KEEL_TOKEN ?? "",
      env,
    });
    let injected;
    try {
      registry.register(actors);
      registry.start();
      injected = registry.rt.injectStart(body);
    } catch (e) {
      injected = { __keelError: e };
    }
    if (injected !== null && typeof injected === "object" && "__keelError" in injected) {
      const e = injected.__keelError;
      const shut = registry.shutdown({ immediate: true }).catch(() => {});
      ctx?.waitUntil?.(shut);
      if (typeof e?.group === "string" && typeof e?.code === "string") {
        return json(400, errorBody(e.group, e.code, String(e.message ?? "")));
      }
      registry.logger("error", "serverless", `start failed: ${e?.stack ?? e}`);
      return json(500, errorBody("rivetkit", "internal_error", "An internal error occurred"));
    }

    // The stream: ping now and every pingMs; `stopping` once the actor has come and gone.
    const encoder = new TextEncoder();
    let controller;
    let timer;
    let ended = false;
    let ran = false;
    let finished;
    const done = new Promise((r) => { finished = r; });
    const shutdown = () => {
      const stop = registry.shutdown();
      let bound;
      const limit = new Promise((r) => { bound = setTimeout(r, stopTimeoutMs); });
      return Promise.race([stop, limit]).finally(() => clearTimeout(bound)).catch(() => {});
    };
    const end = (stoppingEvent) => {
      if (ended) return;
      ended = true;
      clearTimeout(timer);
      request.signal?.removeEventListener?.("abort", onAbort);
      if (stoppingEvent) {
        try {
          controller.enqueue(encoder.encode(STOPPING));
          controller.close();
        } catch {}
      }
      shutdown().then(finished);
    };
    const onAbort = () => end(false);
    const gone = () => {
      if (registry.closed) return true;
      const hosted = registry.rt.hostedActors();
      if (hosted > 0) {
        ran = true;
        return false;
      }
      // Hosted none: gone if it ran, or if the engine greeted the envoy (the queued start
      // was handled then, and the actor already stopped).
      return ran || registry.connected;
    };
    const tick = () => {
      if (ended) return;
      if (gone()) return end(true);
      try {
        controller.enqueue(encoder.encode(PING));
      } catch {
        return end(false);
      }
      timer = setTimeout(tick, pingMs);
    };
    const stream = new ReadableStream({
      start(c) {
        controller = c;
        c.enqueue(encoder.encode(PING));
        timer = setTimeout(tick, pingMs);
      },
      cancel() {
        end(false);
      },
    });
    request.signal?.addEventListener?.("abort", onAbort);
    ctx?.waitUntil?.(done);
    return new Response(stream, {
      status: 200,
      headers: {
        "content-type": "text/event-stream",
        "cache-control": "no-cache",
        connection: "keep-alive",
        "access-control-allow-origin": "*",
      },
    });
  }

  return {
    async fetch(request, workerEnv, ctx) {
      const env = mergedEnv(options, workerEnv);
      const { pathname } = new URL(request.url);
      const method = request.method.toUpperCase();
      if (method === "OPTIONS") return new Response(null, { status: 204, headers: CORS });
      const notFound = () => text(404, "Not Found (RivetKit)");
      if (!pathname.startsWith(base)) return notFound();
      const rest = pathname.slice(base.length);
      if (rest !== "" && !rest.startsWith("/")) return notFound();
      const get = method === "GET";
      if ((rest === "" || rest === "/") && get) {
        return text(200, "This is a RivetKit server.\n\nLearn more at https://rivetkit.org\n");
      }
      if (rest === "/health" && get) return json(200, { status: "ok", runtime: "rivetkit", version: VERSION });
      if (rest === "/metadata" && get) return json(200, metadata(env));
      if (rest === "/start" && (get || method === "POST")) {
        try {
          return await start(request, env, ctx);
        } catch (e) {
          if (e instanceof Response) return e;
          console.error(`keel serverless: /start failed: ${e?.stack ?? e}`);
          return json(500, errorBody("rivetkit", "internal_error", "An internal error occurred"));
        }
      }
      return notFound();
    },
  };
}
