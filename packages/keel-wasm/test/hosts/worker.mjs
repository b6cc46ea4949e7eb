// The workerd worker of test/workerd.test.mjs: the fixtures' actors served serverlessly
// (src/serverless.js), plus one test-only route, GET /__keel/instantiate, reporting how long
// the isolate's first loadKeel() took.
//
// workerd compiles no wasm from bytes, so the wasm comes in as a module import. That import
// lives in the worker's entry module, which workerd.test.mjs writes into the generated
// config (Node's test runner loads every .mjs under test/, and Node cannot import a .wasm):
//
//   import wasmModule from "./keel.wasm";          // dist/keel.wasm, a `wasm` module
//   import { worker } from "./worker.mjs";
//   export default worker(wasmModule);
//
// A worker of your own is the same without the test route:
//   export default serverless(actors, { wasmModule });
import { loadKeel, serverless } from "../../src/index.js";
import * as actors from "../fixtures/actors.mjs";

export function worker(wasmModule) {
  const app = serverless(actors, { wasmModule });
  let instantiateMs;
  return {
    async fetch(request, env, ctx) {
      if (new URL(request.url).pathname === "/__keel/instantiate") {
        if (instantiateMs === undefined) {
          const t0 = performance.now();
          await loadKeel({ wasmModule });
          instantiateMs = performance.now() - t0;
        }
        return Response.json({ instantiateMs });
      }
      return app.fetch(request, env, ctx);
    },
  };
}
