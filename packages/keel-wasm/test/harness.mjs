// Test fixtures shared by the package's tests: a keel-engine process on a free loopback
// port (from the native build), and native runtime processes. Everything started here is
// stopped by the returned handle's stop() (by its own PID only).
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
export const repoRoot = resolve(here, "../../..");
// Native binaries (keel-engine, keel-examples): KEEL_BIN_DIR or the dev preset's output.
export const binDir = process.env.KEEL_BIN_DIR ?? join(repoRoot, "build/dev/bin");

// Resolves with the first stdout line matching `re` (its match), rejects when the process
// exits first or `ms` pass.
function waitForLine(child, re, ms, what) {
  return new Promise((resolveLine, reject) => {
    let buf = "";
    const timer = setTimeout(() => reject(new Error(`${what}: no "${re}" line within ${ms} ms`)), ms);
    const onData = (chunk) => {
      buf += chunk.toString();
      const m = buf.match(re);
      if (m) {
        clearTimeout(timer);
        child.stdout.off("data", onData);
        child.stdout.resume();
        resolveLine(m);
      }
    };
    child.stdout.on("data", onData);
    child.once("exit", (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`${what} exited (${code ?? signal}) before it was ready`));
    });
  });
}

function stopper(child, cleanup = () => {}) {
  return () =>
    new Promise((done) => {
      if (child.exitCode !== null || child.signalCode !== null) {
        cleanup();
        return done();
      }
      const kill = setTimeout(() => child.kill("SIGKILL"), 10000);
      child.once("exit", () => {
        clearTimeout(kill);
        cleanup();
        done();
      });
      child.kill("SIGTERM");
    });
}

// Starts keel-engine on 127.0.0.1, port 0. Options: storage ("memory" | "rocksdb"),
// token (the `default` namespace's token), extraArgs, env. Returns
// { endpoint, port, process, stop() }.
export async function startEngine({ storage = "memory", token, extraArgs = [], env = {} } = {}) {
  const dataDir = mkdtempSync(join(tmpdir(), "keel-js-engine-"));
  const args = ["--host", "127.0.0.1", "--port", "0", "--storage", storage, "--data-dir", dataDir,
                "--log-level", process.env.KEEL_TEST_LOG_LEVEL ?? "warn"];
  if (token) args.push("--namespace-token", `default=${token}`);
  args.push(...extraArgs);
  const child = spawn(join(binDir, "keel-engine"), args, {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, ...env },
  });
  const m = await waitForLine(child, /listening on ([0-9.]+):(\d+)/, 20000, "keel-engine");
  const port = Number(m[2]);
  return {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    process: child,
    stop: stopper(child, () => rmSync(dataDir, { recursive: true, force: true })),
  };
}

// Starts a native runtime binary (default keel-examples) as an envoy of `engine`.
// Resolves once the engine lists the envoy in its pool (a get-or-create then succeeds).
export async function startNativeRuntime(engine, { binary = "keel-examples", token, env = {}, args = [] } = {}) {
  const child = spawn(join(binDir, binary), args, {
    stdio: ["ignore", "pipe", "inherit"],
    env: { ...process.env, KEEL_ENDPOINT: engine.endpoint, KEEL_LOG_LEVEL: "warn",
           ...(token ? { KEEL_TOKEN: token } : {}), ...env },
  });
  child.stdout.resume();
  await waitForEnvoy(engine, { token });
  return { process: child, stop: stopper(child) };
}

// Waits until the engine reports at least `count` connected envoys (GET /envoys; envoys
// that left or are stopping stay listed for a while, with stop_ts).
export async function waitForEnvoy(engine, { token, count = 1, ms = 20000 } = {}) {
  const deadline = Date.now() + ms;
  const headers = token ? { authorization: `Bearer ${token}` } : {};
  for (;;) {
    try {
      const r = await fetch(`${engine.endpoint}/envoys?namespace=default`, { headers });
      if (r.ok) {
        const body = await r.json();
        const list = (body.envoys ?? body.runners ?? []).filter((e) => e.stop_ts == null);
        if (list.length >= count) return list;
      }
    } catch {}
    if (Date.now() > deadline) throw new Error(`no envoy connected within ${ms} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
