// The acceptance suite's fixture runtime in JavaScript: every js/fixtures/*.mjs module's
// exported actor() definitions (ports of fixtures/*.cc — same names, actions and behaviour)
// served by the Keel wasm runtime in Node, configured like keel-acceptance-fixtures through
// KEEL_ENDPOINT, KEEL_NAMESPACE, KEEL_POOL, KEEL_INSPECTOR_TOKEN, KEEL_SQLITE_BACKEND and
// KEEL_LOG_LEVEL. SIGTERM stops it gracefully. `--list` prints the actor names.
//   node --experimental-websocket tests/acceptance/js/main.mjs
import { readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

import { serve } from "../../../packages/keel-wasm/src/index.js";

const dir = join(dirname(fileURLToPath(import.meta.url)), "fixtures");
const actors = {};
const origin = {};
for (const file of readdirSync(dir).filter((f) => f.endsWith(".mjs")).sort()) {
  const mod = await import(pathToFileURL(join(dir, file)).href);
  for (const [name, def] of Object.entries(mod)) {
    if (!def || !def[Symbol.for("keel.actor")]) continue;
    if (actors[name]) throw new Error(`fixture ${name} is defined in both ${origin[name]} and ${file}`);
    actors[name] = def;
    origin[name] = file;
  }
}

if (process.argv.includes("--list")) {
  for (const name of Object.keys(actors).sort()) console.log(`${name} (${origin[name]})`);
  process.exit(0);
}

await serve(actors, { sqliteBackend: process.env.KEEL_SQLITE_BACKEND ?? "remote" });
