// Child processes for the host tests (Deno, workerd): spawned with their output captured,
// waited on by polling their output for a line (bounded), and stopped by their own PID.
import { spawn } from "node:child_process";
import { createServer } from "node:net";
import { existsSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const packageDir = resolve(dirname(fileURLToPath(import.meta.url)), "../..");

// A binary of the package's devDependencies (npm ci --prefix packages/keel-wasm), or null.
export function devBinary(name) {
  const path = join(packageDir, "node_modules/.bin", name);
  return existsSync(path) ? path : null;
}

// A free loopback TCP port (bound, read, closed; the caller binds it next).
export function freePort() {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.once("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => resolvePort(port));
    });
  });
}

// Spawns `cmd args` and returns a handle: `output()` (stdout + stderr so far), `waitFor(re,
// ms)` resolving with the first match in the output (rejecting when the process exits
// first or `ms` pass), `exited` (a promise of {code, signal}) and `stop()` (SIGTERM to this
// PID, SIGKILL after `killAfterMs`).
export function spawnProcess(cmd, args, { env = {}, cwd, killAfterMs = 5000 } = {}) {
  const child = spawn(cmd, args, { cwd, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] });
  let out = "";
  const listeners = new Set();
  const onData = (chunk) => {
    out += chunk.toString();
    for (const l of listeners) l();
  };
  child.stdout.on("data", onData);
  child.stderr.on("data", onData);
  const exited = new Promise((done) => {
    child.once("exit", (code, signal) => {
      for (const l of listeners) l();
      done({ code, signal });
    });
  });
  const handle = {
    child,
    pid: child.pid,
    startedAt: performance.now(),
    exited,
    output: () => out,
    waitFor(re, ms, what = cmd) {
      return new Promise((resolveMatch, reject) => {
        const check = () => {
          const m = out.match(re);
          if (m) return finish(null, m);
          if (child.exitCode !== null || child.signalCode !== null) {
            return finish(new Error(`${what} exited (${child.exitCode ?? child.signalCode}) before printing ${re}:\n${out}`));
          }
        };
        const timer = setTimeout(() => finish(new Error(`${what}: no ${re} within ${ms} ms:\n${out}`)), ms);
        function finish(err, m) {
          clearTimeout(timer);
          listeners.delete(check);
          if (err) reject(err);
          else resolveMatch(m);
        }
        listeners.add(check);
        check();
      });
    },
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return exited;
      const kill = setTimeout(() => child.kill("SIGKILL"), killAfterMs);
      child.kill("SIGTERM");
      const r = await exited;
      clearTimeout(kill);
      return r;
    },
  };
  return handle;
}
