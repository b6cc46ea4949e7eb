// Misuses the declarations must reject (types.test.mjs expects each line's error).
import { actor, serve } from "../../src/index.js";
const a = actor({
  state: { count: 0 },
  actions: {
    wrongKv(c) { c.kv.put(1, 2); },                 // keys and values are strings or bytes
    wrongState(c) { c.state.count = "many"; },       // state is typed from `state`
  },
  onWake: 42,                                        // hooks are functions
});
await serve({ a }, { protocolVersion: 5 });         // versions 2-4
