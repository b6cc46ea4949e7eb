// The hand-written TypeScript declarations (src/index.d.ts) type real actor code and reject
// misuse: `deno check` (the package's devDependency) on types/ok.ts and types/bad.ts.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { test } from "node:test";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const deno = join(here, "../node_modules/.bin/deno");

function check(file) {
  const r = spawnSync(deno, ["check", "--no-config", "--quiet", join(here, "types", file)], {
    encoding: "utf8", cwd: "/tmp", env: { ...process.env, NO_COLOR: "1", DENO_NO_UPDATE_CHECK: "1" }, timeout: 60000,
  });
  return { status: r.status, out: `${r.stdout}${r.stderr}` };
}

test("declarations: typical actor code type-checks", { skip: !existsSync(deno) && "deno is not installed (npm ci in packages/keel-wasm)" }, () => {
  const r = check("ok.ts");
  assert.equal(r.status, 0, r.out);
});

test("declarations: misuse is rejected", { skip: !existsSync(deno) && "deno is not installed (npm ci in packages/keel-wasm)" }, () => {
  const r = check("bad.ts");
  assert.notEqual(r.status, 0);
  for (const line of [6, 7, 9, 11]) assert.match(r.out, new RegExp(`bad\\.ts:${line}:`), `no error reported on line ${line}:\n${r.out}`);
});
