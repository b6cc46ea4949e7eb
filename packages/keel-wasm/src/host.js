// The host side of the wasm runtime: loading keel.wasm in each JavaScript host, and the
// small host object the C++ core calls for time, timers, the WebSocket, calls into actor
// code and value/promise plumbing. No protocol logic lives here: the envoy protocol, the
// client protocol, persistence and scheduling are all in the C++ core (src/wasm/).

import { ActorWebSocket, toRequest } from "./context.js";
import { ActorError } from "./errors.js";

let modulePromise = null;

// Detects the host: "workerd" (Cloudflare Workers), "deno", "node" or "web".
export function detectHost() {
  if (typeof navigator !== "undefined" && navigator.userAgent === "Cloudflare-Workers") return "workerd";
  if (typeof Deno !== "undefined") return "deno";
  if (typeof process !== "undefined" && process.versions?.node) return "node";
  return "web";
}

async function compileWasm(host) {
  const url = new URL("../dist/keel.wasm", import.meta.url);
  if (host === "deno") return new WebAssembly.Module(await Deno.readFile(url));
  if (host === "node") {
    const { readFile } = await import("node:fs/promises");
    return new WebAssembly.Module(await readFile(url));
  }
  return WebAssembly.compileStreaming(fetch(url));
}

// Loads and instantiates the module once per JS realm. `wasmModule`: an already compiled
// WebAssembly.Module (required in workerd, where code generation from bytes is disallowed:
// `import wasmModule from "keel-wasm/dist/keel.wasm"`).
export function loadKeel({ wasmModule } = {}) {
  if (modulePromise) return modulePromise;
  modulePromise = (async () => {
    const module = wasmModule ?? (await compileWasm(detectHost()));
    const { default: createKeel } = await import("../dist/keel.mjs");
    return createKeel({
      locateFile: (p) => p,
      instantiateWasm(imports, receive) {
        const instance = new WebAssembly.Instance(module, imports);
        receive(instance, module);
        return instance.exports;
      },
    });
  })();
  modulePromise.catch(() => {
    modulePromise = null;
  });
  return modulePromise;
}

const LEVELS = ["trace", "debug", "info", "warn", "error"];

// Text for anything thrown, for logs and messages; never throws (a value may have no
// prototype, or a toString/stack getter that throws). `withStack`: an Error's stack.
export function describe(e, withStack = false) {
  try {
    if (e instanceof Error) {
      const head = `${e.name}: ${e.message}`;
      return withStack && typeof e.stack === "string" ? e.stack : head;
    }
    if (typeof e === "string") return e;
    return String(e);
  } catch {
    try {
      return Object.prototype.toString.call(e);
    } catch {
      return "(a value that cannot be printed)";
    }
  }
}
const thrown = (e) => ({ __keelThrown: e });

// The object the C++ side keeps (src/wasm/keel_wasm.cc lists what it calls). `owner`
// provides `rt` (the WasmRuntime), `makeContext(info)`, `WebSocket` and `logger`.
export function makeHost(M, owner) {
  const timers = new Map();
  const sockets = new Map();
  const perf = globalThis.performance;
  const t0 = Date.now();
  const host = {
    now: () => (perf ? perf.now() : Date.now() - t0),
    wallNow: () => Date.now(),
    setTimer(id, ms) {
      timers.set(id, setTimeout(() => {
        timers.delete(id);
        if (!owner.closed) owner.rt.timerFired(id);
      }, ms));
    },
    clearTimer(id) {
      const t = timers.get(id);
      if (t !== undefined) {
        clearTimeout(t);
        timers.delete(id);
      }
    },
    clearAllTimers() {
      for (const t of timers.values()) clearTimeout(t);
      timers.clear();
    },

    wsOpen(sock, url, protocols) {
      const WS = owner.WebSocket;
      let ws;
      let closed = false;
      const closeOnce = (code, reason) => {
        if (closed) return;
        closed = true;
        sockets.delete(sock);
        if (!owner.closed) owner.rt.wsClosed(sock, code, reason);
      };
      try {
        ws = new WS(url, protocols);
      } catch (e) {
        queueMicrotask(() => closeOnce(1006, String(e?.message ?? e)));
        return;
      }
      ws.binaryType = "arraybuffer";
      sockets.set(sock, ws);
      ws.onopen = () => {
        if (!owner.closed) owner.rt.wsOpened(sock);
      };
      ws.onmessage = (e) => {
        if (owner.closed || typeof e.data === "string") return;  // the envoy protocol is binary only
        owner.rt.wsMessage(sock, e.data);
      };
      ws.onerror = () => {};
      ws.onclose = (e) => closeOnce(e.code || 1006, String(e.reason ?? ""));
    },
    wsSend(sock, bytes) {
      const ws = sockets.get(sock);
      try {
        if (ws && ws.readyState === 1) ws.send(bytes);
      } catch {}  // the socket is closing: its close event follows
    },
    wsClose(sock, code, reason) {
      const ws = sockets.get(sock);
      if (!ws) return;
      try {
        ws.close(code, reason);
      } catch {
        ws.close();
      }
    },

    invoke(fn, info, args) {
      try {
        return fn(owner.makeContext(info), ...args);
      } catch (e) {
        return { __keelThrown: e };
      }
    },
    // onRequest: the handler gets a Fetch API Request and returns a Response (or a promise
    // of one); the core gets {status, headers, body}.
    invokeRequest(fn, info, [raw]) {
      try {
        const request = toRequest(raw, raw.body);
        return Promise.resolve(fn(owner.makeContext(info), request)).then(async (res) => {
          if (!(res instanceof Response)) {
            throw new ActorError("actor", "invalid_response", "onRequest must return a Response");
          }
          return {
            status: res.status,
            headers: [...res.headers],
            body: new Uint8Array(await res.arrayBuffer()),
          };
        });
      } catch (e) {
        return { __keelThrown: e };
      }
    },

    // onWebSocket: the socket object actor code gets, and its events from the core.
    makeSocket(info) {
      const ws = new ActorWebSocket(owner.rt, info.id, info.request);
      sockets.set(`raw:${info.id}`, ws);
      return ws;
    },
    rawEvent(id, type, payload, binary, index) {
      const ws = sockets.get(`raw:${id}`);
      if (!ws) return undefined;
      if (type === "close") sockets.delete(`raw:${id}`);
      try {
        return ws._dispatch(type, type === "message" ? { data: payload, binary, rivetMessageIndex: index } : payload);
      } catch (e) {
        return { __keelThrown: e };
      }
    },

    log(level, component, message) {
      try {
        owner.logger(LEVELS[level] ?? "info", component, message);
      } catch (e) {
        try {
          console.error(`keel: the logger threw (${describe(e)}); the message: ${component}: ${message}`);
        } catch {}
      }
    },

    // Nothing below throws into the C++ core (a JS exception unwinding through its frames
    // aborts the module): user code that may run here (getters, Proxy traps, toString) is
    // caught and reported as {__keelThrown: e}, or as kind 12.
    //
    // 0 undefined, 1 null, 2 bool, 3 integral number, 4 other number, 5 bigint, 6 string,
    // 7 bytes, 8 array, 9 Map, 10 object, 11 unsupported (function, symbol), 12 unreadable.
    kindOf(v) {
      try {
        return kindOf(v);
      } catch {
        return 12;
      }
    },
    // Items of an array, [key, value] pairs of a Map, or of an object's own enumerable
    // properties (undefined-valued ones left out, as JSON does).
    arrayItems(v) {
      try {
        return Array.prototype.slice.call(v);
      } catch (e) {
        return thrown(e);
      }
    },
    mapEntries(m) {
      try {
        return Array.from(m);
      } catch (e) {
        return thrown(e);
      }
    },
    objectEntries(v) {
      try {
        const out = [];
        for (const k of Object.keys(v)) {
          const item = v[k];
          if (item !== undefined) out.push([k, item]);
        }
        return out;
      } catch (e) {
        return thrown(e);
      }
    },
    defineOwn(o, k, v) {
      Object.defineProperty(o, k, { value: v, writable: true, enumerable: true, configurable: true });
    },
    describe: (e) => describe(e),
    toU8(v) {
      if (v instanceof Uint8Array) return v;
      if (v instanceof ArrayBuffer) return new Uint8Array(v);
      if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
      if (typeof v === "string") return new TextEncoder().encode(v);
      return null;  // the core raises actor.invalid_value
    },
    deferred() {
      const d = {};
      d.promise = new Promise((resolve, reject) => {
        d.resolve = resolve;
        d.reject = reject;
      });
      return d;
    },
    rejected: (e) => Promise.reject(e),
    bridgeThen(p, id) {
      Promise.resolve(p).then(
        (v) => M.bridgeSettle(id, true, v),
        (e) => M.bridgeSettle(id, false, e),
      );
    },
    isThenable(v) {
      try {
        return v !== null && (typeof v === "object" || typeof v === "function") && typeof v.then === "function";
      } catch {
        return false;
      }
    },
    isThrown(v) {
      try {
        return v !== null && typeof v === "object" && Object.prototype.hasOwnProperty.call(v, "__keelThrown");
      } catch {
        return false;
      }
    },
    makeError: (group, code, message, metadata, isPublic) =>
      new ActorError(group, code, message, { metadata, public: isPublic }),
    // {group, code, message, metadata, public} of a structured error, else {message, stack}:
    // the one-line summary ("Error: boom", or the thrown value as text), which is all that
    // may leave the runtime (a failed start's stop reason), and the full text (an Error's
    // stack) for the runtime's log.
    errorInfo(e) {
      try {
        if (e !== null && typeof e === "object" && typeof e.group === "string" && typeof e.code === "string") {
          return { group: e.group, code: e.code, message: describe(e.message ?? ""), metadata: e.metadata,
                   public: e.public !== false };
        }
      } catch {}
      return { message: describe(e), stack: describe(e, true) };
    },
  };
  return host;
}

// See host.kindOf.
function kindOf(v) {
  switch (typeof v) {
    case "undefined": return 0;
    case "boolean": return 2;
    case "number": return Number.isInteger(v) && Math.abs(v) <= 2 ** 53 ? 3 : 4;
    case "bigint": return 5;
    case "string": return 6;
    case "object":
      if (v === null) return 1;
      if (v instanceof Uint8Array || v instanceof ArrayBuffer || ArrayBuffer.isView(v)) return 7;
      if (Array.isArray(v)) return 8;
      if (v instanceof Map) return 9;
      return 10;
    default: return 11;
  }
}
