// The workerd worker of test/workerd.test.mjs: the fixtures' actors served serverlessly
// (src/serverless.js). keel.wasm is a wasm module of the workerd config (workerd compiles no
// wasm from bytes), named test/hosts/keel.wasm next to this module. One test-only route,
// GET /__keel/instantiate, reports how long the first loadKeel() took in this isolate.
import wasmModule from "./keel.wasm";
import { loadKeel, serverless } from "../../src/index.js";
import * as actors from "../fixtures/actors.mjs";

const app = serverless(actors, { wasmModule });

let instantiateMs;
async function instantiate() {
  if (instantiateMs === undefined) {
    const t0 = performance.now();
    await loadKeel({ wasmModule });
    instantiateMs = performance.now() - t0;
  }
  return Response.json({ instantiateMs });
}

export default {
  fetch(request, env, ctx) {
    if (new URL(request.url).pathname === "/__keel/instantiate") return instantiate();
    return app.fetch(request, env, ctx);
  },
};
