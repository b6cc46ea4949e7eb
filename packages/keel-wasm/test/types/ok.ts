import { actor, serve, UserError, type ActorContext } from "../../src/index.js";
const counter = actor({
  state: { count: 0 },
  events: ["newCount"],
  db: { async onMigrate(db) { await db.exec("CREATE TABLE IF NOT EXISTS t (x)"); } },
  actions: {
    increment(c, n: number) { c.state.count += n; c.broadcast("newCount", c.state.count); return c.state.count; },
    async recent(c) { return (await c.sql.execute("SELECT 1 AS one")).map((r) => r.one); },
    async kv(c) { c.kv.put("a", "b"); const v: string | null = await c.kv.get("a"); return v; },
    fail() { throw new UserError("no", { code: "x" }); },
  },
  onConnect(c, conn) { conn.send("hi", 1); },
  onWebSocket(c, ws) { ws.addEventListener("message", (e) => ws.send(e.data)); },
});
const r = await serve({ counter }, { endpoint: "http://127.0.0.1:6420", waitForConnection: false });
await r.shutdown();
