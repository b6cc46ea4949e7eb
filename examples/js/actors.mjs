// The example actors, written in JavaScript for the Keel wasm runtime (packages/keel-wasm).
// Same names, actions and events as the C++ examples (examples/counter, examples/todos), so
// the same clients, CLI lines and benchmarks work against either runtime.
import { actor, UserError } from "../../packages/keel-wasm/src/index.js";

// One durable integer per key.
export const counter = actor({
  state: { count: 0 },
  events: ["newCount"],
  actions: {
    increment(c, n) {
      c.state.count += n;
      c.broadcast("newCount", c.state.count);
      return c.state.count;  // durable before the caller sees it
    },
    getCount: (c) => c.state.count,
  },
});

// A chat room: connection params {nickname}; events `message` and `joined`.
export const chat = actor({
  state: { messages: [] },
  events: ["message", "joined"],
  createConnState(c, params) {
    const nick = params?.nickname;
    if (typeof nick === "string" && nick.length > 32) {
      throw new UserError("nickname is longer than 32 characters", { code: "invalid_nickname" });
    }
    return typeof nick === "string" ? nick : "anonymous";
  },
  onConnect(c, conn) {
    c.broadcast("joined", conn.state);
  },
  actions: {
    send(c, text) {
      if (!text) throw new UserError("empty message", { code: "empty_message" });
      const from = typeof c.conn?.state === "string" ? c.conn.state : "anonymous";
      const m = { from, text, at: Date.now() };
      const log = c.state.messages;
      log.push(m);
      if (log.length > 100) log.shift();
      c.broadcast("message", m);
      return log.length;
    },
    history: (c) => c.state.messages,
  },
});

// Durable reminders: remind(text, delayMs) schedules `fire`, which moves the reminder from
// `pending` to `fired` and broadcasts `reminder`; requests queued in `inbox` wait for drain().
export const scheduler = actor({
  state: { pending: [], fired: [] },
  events: ["reminder"],
  queues: ["inbox"],
  actions: {
    remind(c, text, delayMs) {
      if (delayMs < 0) throw new UserError("delay must not be negative", { code: "invalid_delay" });
      const r = { id: "", text, due: Date.now() + delayMs };
      r.id = c.schedule.after(delayMs, "fire", r.text, r.due);
      c.state.pending.push(r);
      return r.id;
    },
    fire(c, text, due) {
      const i = c.state.pending.findIndex((r) => r.text === text && r.due === due);
      if (i >= 0) c.state.fired.push(...c.state.pending.splice(i, 1));
      c.broadcast("reminder", text);
    },
    // Queued requests ({text, delay_ms} in the `inbox` queue) become reminders.
    async drain(c) {
      const messages = await c.queue.nextBatch({ names: ["inbox"], count: 100, timeout: 0 });
      let scheduled = 0;
      for (const { body } of messages) {
        if (typeof body?.text !== "string" || !Number.isInteger(body?.delay_ms) || body.delay_ms < 0) continue;
        const r = { id: "", text: body.text, due: Date.now() + body.delay_ms };
        r.id = c.schedule.after(body.delay_ms, "fire", r.text, r.due);
        c.state.pending.push(r);
        scheduled += 1;
      }
      return scheduled;
    },
    pending: (c) => c.state.pending,
    fired: (c) => c.state.fired,
  },
});

// A to-do list in the actor's SQLite database (remote: executed by keel-engine).
export const todos = actor({
  db: {
    async onMigrate(db) {
      await db.exec(
        "CREATE TABLE IF NOT EXISTS todos (" +
          "  id INTEGER PRIMARY KEY AUTOINCREMENT," +
          "  text TEXT NOT NULL," +
          "  created_at INTEGER NOT NULL)",
      );
    },
  },
  events: ["added"],
  actions: {
    async add(c, text) {
      if (!text) throw new UserError("a to-do needs some text", { code: "empty_text" });
      const r = await c.sql.run("INSERT INTO todos (text, created_at) VALUES (?, ?)", [text, Date.now()]);
      c.broadcast("added", r.lastInsertRowId, text);
      return r.lastInsertRowId;
    },
    list: (c) => c.sql.execute("SELECT id, text, created_at FROM todos ORDER BY id"),
    async count(c) {
      const { rows } = await c.sql.query("SELECT COUNT(*) FROM todos");
      return rows[0][0];
    },
    async clear(c) {
      return (await c.sql.run("DELETE FROM todos")).changes;
    },
    backend: (c) => c.sql.backend,
  },
});
