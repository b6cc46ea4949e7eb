// The JS client against scripted stand-ins for the engine, for answers a real engine does
// not give on demand: a connection message from the actor that does not decode, and a
// paged REST listing. No engine is needed; the stand-ins run on node:http (loopback, port
// 0), the WebSocket one a minimal RFC 6455 server, enough for unfragmented frames under
// 64 KiB.
//
//   node --experimental-websocket --test packages/keel-wasm/test/client.standin.test.mjs
import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { createHash } from "node:crypto";

import { createClient } from "../src/client/index.js";
import * as wire from "../src/client/wire.js";

const ENCODINGS = ["json", "cbor", "bare"];
const T = { timeout: 30000 };

// One server frame (unmasked, FIN set).
function frame(opcode, payload) {
  const body = Buffer.from(payload);
  const head = body.length < 126 ? Buffer.from([0x80 | opcode, body.length]) : Buffer.from([0x80 | opcode, 126, body.length >> 8, body.length & 0xff]);
  return Buffer.concat([head, body]);
}

// Splits complete client frames (masked) off `buf`; returns [frames, rest].
function takeFrames(buf) {
  const frames = [];
  for (;;) {
    if (buf.length < 2) break;
    const opcode = buf[0] & 0x0f;
    let len = buf[1] & 0x7f;
    let at = 2;
    if (len === 126) {
      if (buf.length < 4) break;
      len = buf.readUInt16BE(2);
      at = 4;
    } else if (len === 127) {
      throw new Error("frames over 64 KiB are not handled by this stand-in");
    }
    if (buf.length < at + 4 + len) break;
    const mask = buf.subarray(at, at + 4);
    const payload = Buffer.from(buf.subarray(at + 4, at + 4 + len));
    for (let i = 0; i < payload.length; i++) payload[i] ^= mask[i % 4];
    frames.push({ opcode, payload });
    buf = buf.subarray(at + 4 + len);
  }
  return [frames, buf];
}

// Accepts every upgrade and sends Init; answers each action with 42, except on the first
// socket, where the answer is bytes that do not decode in `encoding`, or what
// `garble(socket)` writes instead. Records each socket's close frame as "code reason".
async function garblingEndpoint(encoding, garble = null) {
  const binary = encoding !== "json";
  const closes = [];
  const upgraded = [];
  let sockets = 0;
  const server = http.createServer((req, res) => res.writeHead(404).end());
  server.on("upgrade", (req, socket) => {
    const number = ++sockets;
    upgraded.push(socket);
    const accept = createHash("sha1").update(req.headers["sec-websocket-key"] + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest("base64");
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${accept}\r\nSec-WebSocket-Protocol: rivet\r\n\r\n`);
    const send = (msg) => socket.write(frame(binary ? 2 : 1, wire.encodeToClient(msg, encoding)));
    send({ tag: "Init", val: { actorId: "a1", connectionId: `c${number}` } });
    let pending = Buffer.alloc(0);
    socket.on("data", (chunk) => {
      let frames;
      [frames, pending] = takeFrames(Buffer.concat([pending, chunk]));
      for (const f of frames) {
        if (f.opcode === 8) {
          const code = f.payload.length >= 2 ? f.payload.readUInt16BE(0) : 1005;
          closes.push(`${code} ${f.payload.subarray(2).toString()}`);
          socket.end(frame(8, f.payload.subarray(0, 2)));
          continue;
        }
        const msg = wire.decodeToServer(f.payload, encoding);
        if (msg.tag !== "ActionRequest") continue;
        if (number === 1 && garble) {
          garble(socket);
        } else if (number === 1) {
          // JSON travels in text frames, which must be UTF-8: valid text, not JSON.
          socket.write(frame(binary ? 2 : 1, binary ? Buffer.from([0xff, 0x7b, 0x01]) : '{"i": [1, 2'));
        } else {
          send({ tag: "ActionResponse", val: { id: msg.val.id, output: 42 } });
        }
      }
    });
    socket.on("error", () => {});
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return {
    endpoint: `http://127.0.0.1:${server.address().port}`,
    closes,
    sockets: () => sockets,
    stop: () => {
      server.closeAllConnections?.();
      // Upgraded sockets are the stand-in's own (closeAllConnections does not see them): one
      // a client failed without a closing handshake may still be half open.
      for (const socket of upgraded) socket.destroy();
      return new Promise((resolve) => server.close(resolve));
    },
  };
}

async function until(pred, what, ms = 10000) {
  const deadline = Date.now() + ms;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

for (const encoding of ENCODINGS) {
  // As the C++ client (docs/client.md): the action waiting on the garbled socket fails at
  // once with client.bad_response (not after its timeout), onError hears it, the socket is
  // closed (1000 client.bad_response: the WebSocket API allows no 1002 from a client), and
  // the connection reconnects and serves the next action.
  test(`[${encoding}] an undecodable message drops the connection, which reconnects`, T, async () => {
    const endpoint = await garblingEndpoint(encoding);
    const client = createClient({ endpoint: endpoint.endpoint, encoding });
    const conn = client.getForId("counter", "a1").connect();
    const errors = [];
    conn.onError((e) => errors.push(`${e.group}.${e.code}`));
    try {
      await assert.rejects(conn.action("getCount"), (e) => {
        assert.equal(`${e.group}.${e.code}`, "client.bad_response");
        assert.match(e.message, new RegExp(`does not decode as ${encoding}`));
        return true;
      });
      await until(() => endpoint.closes.length > 0, "the garbled socket's close");
      assert.equal(endpoint.closes[0], "1000 client.bad_response");
      assert.deepEqual(errors, ["client.bad_response"]);
      assert.equal(await conn.action("getCount"), 42);
      assert.equal(endpoint.sockets(), 2);
      assert.equal(conn.connectionId, "c2");
    } finally {
      await conn.dispose();
      await endpoint.stop();
    }
  });
}

// A frame that breaks the WebSocket protocol, or a close frame saying the engine could not
// take this side's frames: as the C++ client, client.protocol_error with the RFC 6455 code
// in its metadata (not client.connection_lost with Node's 1006), to the waiting action and
// onError; the connection reconnects and serves the next action. Any other close without a
// `group.code` reason stays client.connection_lost.
const closeFrame = (code, reason) => {
  const payload = Buffer.alloc(2 + Buffer.byteLength(reason));
  payload.writeUInt16BE(code, 0);
  payload.write(reason, 2);
  return frame(8, payload);
};
for (const [what, garble, expected, closeCode] of [
  ["a text frame that is not UTF-8", (s) => s.write(frame(1, Buffer.from([0x7b, 0xff, 0xfe, 0x7d]))), "client.protocol_error", 1007],
  ["a frame with a reserved opcode", (s) => s.write(frame(3, Buffer.alloc(0))), "client.protocol_error", 1002],
  ["a close with 1002", (s) => s.write(closeFrame(1002, "from the stand-in")), "client.protocol_error", 1002],
  ["a close with 1009", (s) => s.write(closeFrame(1009, "from the stand-in")), "client.protocol_error", 1009],
  ["a close with 1011", (s) => s.write(closeFrame(1011, "from the stand-in")), "client.connection_lost", null],
]) {
  test(`${what} from the engine is ${expected}, and the connection reconnects`, T, async () => {
    const endpoint = await garblingEndpoint("bare", garble);
    const client = createClient({ endpoint: endpoint.endpoint, encoding: "bare" });
    const conn = client.getForId("counter", "a1").connect();
    const errors = [];
    conn.onError((e) => errors.push(`${e.group}.${e.code}`));
    try {
      await assert.rejects(conn.action("getCount"), (e) => {
        assert.equal(`${e.group}.${e.code}`, expected, e.message);
        if (closeCode !== null) assert.deepEqual(e.metadata, { close_code: closeCode });
        return true;
      });
      assert.deepEqual(errors, closeCode === null ? [] : ["client.protocol_error"]);
      assert.equal(await conn.action("getCount"), 42);
      assert.equal(endpoint.sockets(), 2);
    } finally {
      await conn.dispose();
      await endpoint.stop();
    }
  });
}

// GET /actors/names is paged (limit, cursor): listActorNames follows the cursor to the end
// and asks for the largest page; a page without its names object is a bad response.
test("listActorNames follows the cursor", T, async () => {
  const targets = [];
  const server = http.createServer((req, res) => {
    targets.push(req.url);
    const body = req.url.includes("cursor=p2")
      ? { names: { c: { metadata: {} } }, pagination: { cursor: null } }
      : req.url.includes("namespace=other")
        ? { pagination: { cursor: null } }
        : { names: { a: { metadata: {} }, b: { metadata: {} } }, pagination: { cursor: "p2" } };
    res.writeHead(200, { "content-type": "application/json" }).end(JSON.stringify(body));
  });
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  try {
    const endpoint = `http://127.0.0.1:${server.address().port}`;
    assert.deepEqual(await createClient({ endpoint }).listActorNames(), ["a", "b", "c"]);
    assert.equal(targets.length, 2);
    assert.match(targets[0], /limit=1000/);
    assert.match(targets[1], /cursor=p2/);
    await assert.rejects(createClient({ endpoint, namespace: "other" }).listActorNames(), (e) => {
      assert.equal(`${e.group}.${e.code}`, "client.bad_response");
      return true;
    });
  } finally {
    server.closeAllConnections?.();
    await new Promise((resolve) => server.close(resolve));
  }
});
