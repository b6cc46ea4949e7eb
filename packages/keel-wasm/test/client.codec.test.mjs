// Unit tests of the JS client's codecs (cbor.js, json.js, bare.js, wire.js) against the
// bytes the C++ codecs produce (src/value/cbor.cc, src/value/json.cc,
// src/wire/client_messages.cc). The vectors below were printed by a small C++ program
// linked against the dev build's keel_wire/keel_value/keel_protocol libraries (its source
// is at the end of this file); the CBOR edge cases are the RFC 8949 Appendix A vectors of
// tests/unit/value/cbor_test.cc, and the BARE ones follow tests/unit/wire/client_messages_test.cc.
import { test } from "node:test";
import assert from "node:assert/strict";

import * as cbor from "../src/client/cbor.js";
import * as json from "../src/client/json.js";
import * as bare from "../src/client/bare.js";
import * as wire from "../src/client/wire.js";

const hex = (h) => Uint8Array.from(h.match(/../g) ?? [], (b) => parseInt(b, 16));
const toHex = (u8) => Array.from(u8, (b) => b.toString(16).padStart(2, "0")).join("");
const text = (u8) => new TextDecoder().decode(u8);

// C++ output, keyed "<message>.<encoding>" (json as text, cbor/bare as hex).
const CPP = {
  "value.cbor": "ab636269671bffffffffffffffff636e65673b7fffffffffffffff656279746573430001ff6175f76166fb3fd000000000000063657363826724426967496e7461786173781968c3a96c6c6f20e29c9320f09f988020227122205c200a017f616ef66174f561698f0017181818ff19010019ffff1a000100001affffffff1b0000000100000000203738183901001b00200000000000001b002000000000000162666c83fb3ff8000000000000fb8000000000000000fb7e37e43c8800759c",
  "value.json": "{\"big\":[\"$BigInt\",\"18446744073709551615\"],\"neg\":[\"$BigInt\",\"-9223372036854775808\"],\"bytes\":[\"$Uint8Array\",\"AAH/\"],\"u\":[\"$Undefined\"],\"f\":0.25,\"esc\":[\"$$BigInt\",\"x\"],\"s\":\"héllo ✓ 😀 \\\"q\\\" \\\\ \\n\\u0001\\u007f\",\"n\":null,\"t\":true,\"i\":[0,23,24,255,256,65535,65536,4294967295,4294967296,-1,-24,-25,-257,9007199254740992,[\"$BigInt\",\"9007199254740993\"]],\"fl\":[1.5,-0.0,1e+300]}",
  "ActionRequest0.json": "{\"body\":{\"tag\":\"ActionRequest\",\"val\":{\"id\":[\"$BigInt\",\"0\"],\"name\":\"increment\",\"args\":[5]}}}",
  "ActionRequest300.json": "{\"body\":{\"tag\":\"ActionRequest\",\"val\":{\"id\":[\"$BigInt\",\"300\"],\"name\":\"go\",\"args\":[1,\"two\",{\"x\":true}]}}}",
  "SubscribeOn.json": "{\"body\":{\"tag\":\"SubscriptionRequest\",\"val\":{\"eventName\":\"newCount\",\"subscribe\":true}}}",
  "SubscribeOff.json": "{\"body\":{\"tag\":\"SubscriptionRequest\",\"val\":{\"eventName\":\"newCount\",\"subscribe\":false}}}",
  "Init.json": "{\"body\":{\"tag\":\"Init\",\"val\":{\"actorId\":\"a1\",\"connectionId\":\"c1\"}}}",
  "ErrorFull.json": "{\"body\":{\"tag\":\"Error\",\"val\":{\"group\":\"user\",\"code\":\"detailed_error\",\"message\":\"Detailed\",\"metadata\":{\"reason\":\"test\",\"timestamp\":1700000000000},\"actionId\":[\"$BigInt\",\"7\"]}}}",
  "ErrorBare.json": "{\"body\":{\"tag\":\"Error\",\"val\":{\"group\":\"actor\",\"code\":\"x\",\"message\":\"boom\"}}}",
  "ActionResponse.json": "{\"body\":{\"tag\":\"ActionResponse\",\"val\":{\"id\":[\"$BigInt\",\"7\"],\"output\":{\"n\":1}}}}",
  "ActionResponseUndef.json": "{\"body\":{\"tag\":\"ActionResponse\",\"val\":{\"id\":[\"$BigInt\",\"1\"]}}}",
  "Event.json": "{\"body\":{\"tag\":\"Event\",\"val\":{\"name\":\"newCount\",\"args\":[42]}}}",
  "HttpActionRequest.json": "{\"args\":[{\"big\":[\"$BigInt\",\"18446744073709551615\"],\"neg\":[\"$BigInt\",\"-9223372036854775808\"],\"bytes\":[\"$Uint8Array\",\"AAH/\"],\"u\":[\"$Undefined\"],\"f\":0.25,\"esc\":[\"$$BigInt\",\"x\"],\"s\":\"héllo ✓ 😀 \\\"q\\\" \\\\ \\n\\u0001\\u007f\",\"n\":null,\"t\":true,\"i\":[0,23,24,255,256,65535,65536,4294967295,4294967296,-1,-24,-25,-257,9007199254740992,[\"$BigInt\",\"9007199254740993\"]],\"fl\":[1.5,-0.0,1e+300]},\"x\"]}",
  "HttpActionResponse.json": "{\"output\":{\"big\":[\"$BigInt\",\"18446744073709551615\"],\"neg\":[\"$BigInt\",\"-9223372036854775808\"],\"bytes\":[\"$Uint8Array\",\"AAH/\"],\"u\":[\"$Undefined\"],\"f\":0.25,\"esc\":[\"$$BigInt\",\"x\"],\"s\":\"héllo ✓ 😀 \\\"q\\\" \\\\ \\n\\u0001\\u007f\",\"n\":null,\"t\":true,\"i\":[0,23,24,255,256,65535,65536,4294967295,4294967296,-1,-24,-25,-257,9007199254740992,[\"$BigInt\",\"9007199254740993\"]],\"fl\":[1.5,-0.0,1e+300]}}",
  "QueueSendFull.json": "{\"body\":\"hi\",\"name\":\"jobs\",\"wait\":true,\"timeout\":1000}",
  "QueueSendMin.json": "{\"body\":3}",
  "QueueResponseCompleted.json": "{\"status\":\"completed\",\"response\":{\"big\":[\"$BigInt\",\"18446744073709551615\"],\"neg\":[\"$BigInt\",\"-9223372036854775808\"],\"bytes\":[\"$Uint8Array\",\"AAH/\"],\"u\":[\"$Undefined\"],\"f\":0.25,\"esc\":[\"$$BigInt\",\"x\"],\"s\":\"héllo ✓ 😀 \\\"q\\\" \\\\ \\n\\u0001\\u007f\",\"n\":null,\"t\":true,\"i\":[0,23,24,255,256,65535,65536,4294967295,4294967296,-1,-24,-25,-257,9007199254740992,[\"$BigInt\",\"9007199254740993\"]],\"fl\":[1.5,-0.0,1e+300]}}",
  "QueueResponseTimedOut.json": "{\"status\":\"timedOut\"}",
  "HttpError.json": "{\"group\":\"actor\",\"code\":\"action_not_found\",\"message\":\"Action `nope` was not found.\"}",
  "HttpErrorMeta.json": "{\"group\":\"user\",\"code\":\"detailed_error\",\"message\":\"Detailed\",\"metadata\":{\"reason\":\"test\"}}",
  "ActionRequest0.cbor": "a164626f6479a2637461676d416374696f6e526571756573746376616ca362696400646e616d6569696e6372656d656e7464617267738105",
  "ActionRequest300.cbor": "a164626f6479a2637461676d416374696f6e526571756573746376616ca362696419012c646e616d6562676f646172677383016374776fa16178f5",
  "SubscribeOn.cbor": "a164626f6479a26374616773537562736372697074696f6e526571756573746376616ca2696576656e744e616d65686e6577436f756e7469737562736372696265f5",
  "SubscribeOff.cbor": "a164626f6479a26374616773537562736372697074696f6e526571756573746376616ca2696576656e744e616d65686e6577436f756e7469737562736372696265f4",
  "Init.cbor": "a164626f6479a26374616764496e69746376616ca2676163746f7249646261316c636f6e6e656374696f6e4964626331",
  "ErrorFull.cbor": "a164626f6479a263746167654572726f726376616ca56567726f7570647573657264636f64656e64657461696c65645f6572726f72676d6573736167656844657461696c6564686d65746164617461a266726561736f6e64746573746974696d657374616d701b0000018bcfe5680068616374696f6e496407",
  "ErrorBare.cbor": "a164626f6479a263746167654572726f726376616ca46567726f7570656163746f7264636f64656178676d65737361676564626f6f6d68616374696f6e4964f6",
  "ActionResponse.cbor": "a164626f6479a2637461676e416374696f6e526573706f6e73656376616ca262696407666f7574707574a1616e01",
  "ActionResponseUndef.cbor": "a164626f6479a2637461676e416374696f6e526573706f6e73656376616ca262696401666f7574707574f7",
  "Event.cbor": "a164626f6479a263746167654576656e746376616ca2646e616d65686e6577436f756e74646172677381182a",
  "HttpActionRequest.cbor": "a1646172677382ab636269671bffffffffffffffff636e65673b7fffffffffffffff656279746573430001ff6175f76166fb3fd000000000000063657363826724426967496e7461786173781968c3a96c6c6f20e29c9320f09f988020227122205c200a017f616ef66174f561698f0017181818ff19010019ffff1a000100001affffffff1b0000000100000000203738183901001b00200000000000001b002000000000000162666c83fb3ff8000000000000fb8000000000000000fb7e37e43c8800759c6178",
  "HttpActionResponse.cbor": "a1666f7574707574ab636269671bffffffffffffffff636e65673b7fffffffffffffff656279746573430001ff6175f76166fb3fd000000000000063657363826724426967496e7461786173781968c3a96c6c6f20e29c9320f09f988020227122205c200a017f616ef66174f561698f0017181818ff19010019ffff1a000100001affffffff1b0000000100000000203738183901001b00200000000000001b002000000000000162666c83fb3ff8000000000000fb8000000000000000fb7e37e43c8800759c",
  "QueueSendFull.cbor": "a464626f6479626869646e616d65646a6f62736477616974f56774696d656f75741903e8",
  "QueueSendMin.cbor": "a164626f647903",
  "QueueResponseCompleted.cbor": "a26673746174757369636f6d706c6574656468726573706f6e7365ab636269671bffffffffffffffff636e65673b7fffffffffffffff656279746573430001ff6175f76166fb3fd000000000000063657363826724426967496e7461786173781968c3a96c6c6f20e29c9320f09f988020227122205c200a017f616ef66174f561698f0017181818ff19010019ffff1a000100001affffffff1b0000000100000000203738183901001b00200000000000001b002000000000000162666c83fb3ff8000000000000fb8000000000000000fb7e37e43c8800759c",
  "QueueResponseTimedOut.cbor": "a1667374617475736874696d65644f7574",
  "HttpError.cbor": "a36567726f7570656163746f7264636f646570616374696f6e5f6e6f745f666f756e64676d657373616765781c416374696f6e20606e6f70656020776173206e6f7420666f756e642e",
  "HttpErrorMeta.cbor": "a46567726f7570647573657264636f64656e64657461696c65645f6572726f72676d6573736167656844657461696c6564686d65746164617461a166726561736f6e6474657374",
  "ActionRequest0.bare": "0300000009696e6372656d656e74028105",
  "ActionRequest300.bare": "030000ac0202676f0a83016374776fa16178f5",
  "SubscribeOn.bare": "030001086e6577436f756e7401",
  "SubscribeOff.bare": "030001086e6577436f756e7400",
  "Init.bare": "030000026131026331",
  "ErrorFull.bare": "03000104757365720e64657461696c65645f6572726f720844657461696c65640120a266726561736f6e64746573746974696d657374616d701b0000018bcfe568000107",
  "ErrorBare.bare": "030001056163746f72017804626f6f6d0000",
  "ActionResponse.bare": "0300020704a1616e01",
  "ActionResponseUndef.bare": "0300020101f7",
  "Event.bare": "030003086e6577436f756e740381182a",
  "HttpActionRequest.bare": "0300c20182ab636269671bffffffffffffffff636e65673b7fffffffffffffff656279746573430001ff6175f76166fb3fd000000000000063657363826724426967496e7461786173781968c3a96c6c6f20e29c9320f09f988020227122205c200a017f616ef66174f561698f0017181818ff19010019ffff1a000100001affffffff1b0000000100000000203738183901001b00200000000000001b002000000000000162666c83fb3ff8000000000000fb8000000000000000fb7e37e43c8800759c6178",
  "HttpActionResponse.bare": "0300bf01ab636269671bffffffffffffffff636e65673b7fffffffffffffff656279746573430001ff6175f76166fb3fd000000000000063657363826724426967496e7461786173781968c3a96c6c6f20e29c9320f09f988020227122205c200a017f616ef66174f561698f0017181818ff19010019ffff1a000100001affffffff1b0000000100000000203738183901001b00200000000000001b002000000000000162666c83fb3ff8000000000000fb8000000000000000fb7e37e43c8800759c",
  "QueueSendFull.bare": "03000362686901046a6f6273010101e803000000000000",
  "QueueSendMin.bare": "03000103000000",
  "QueueResponseCompleted.bare": "030009636f6d706c6574656401bf01ab636269671bffffffffffffffff636e65673b7fffffffffffffff656279746573430001ff6175f76166fb3fd000000000000063657363826724426967496e7461786173781968c3a96c6c6f20e29c9320f09f988020227122205c200a017f616ef66174f561698f0017181818ff19010019ffff1a000100001affffffff1b0000000100000000203738183901001b00200000000000001b002000000000000162666c83fb3ff8000000000000fb8000000000000000fb7e37e43c8800759c",
  "QueueResponseTimedOut.bare": "03000874696d65644f757400",
  "HttpError.bare": "0300056163746f7210616374696f6e5f6e6f745f666f756e641c416374696f6e20606e6f70656020776173206e6f7420666f756e642e00",
  "HttpErrorMeta.bare": "030004757365720e64657461696c65645f6572726f720844657461696c6564010da166726561736f6e6474657374",
};

const cpp = (key) => (key.endsWith(".json") ? CPP[key] : hex(CPP[key]));
const asText = (x) => (typeof x === "string" ? x : text(x));
// Compares an encoder's output with the C++ bytes: strings for json, hex for the others.
function sameBytes(actual, key) {
  if (key.endsWith(".json")) assert.equal(asText(actual), CPP[key], key);
  else assert.equal(toHex(actual), CPP[key], key);
}

// The C++ test value `rich` as a JS value.
const RICH = {
  big: 18446744073709551615n,
  neg: -9223372036854775808n,
  bytes: new Uint8Array([0, 1, 255]),
  u: undefined,
  f: 0.25,
  esc: ["$BigInt", "x"],
  s: 'h\u00e9llo \u2713 \u{1F600} "q" \\ \n\u0001\u007f',
  n: null,
  t: true,
  i: [0, 23, 24, 255, 256, 65535, 65536, 4294967295, 4294967296, -1, -24, -25, -257, 2 ** 53, 9007199254740993n],
  fl: [1.5, -0, 1e300],
};
const META = { reason: "test", timestamp: 1700000000000 };

const MESSAGES = {
  ActionRequest0: { tag: "ActionRequest", val: { id: 0, name: "increment", args: [5] } },
  ActionRequest300: { tag: "ActionRequest", val: { id: 300, name: "go", args: [1, "two", { x: true }] } },
  SubscribeOn: { tag: "SubscriptionRequest", val: { eventName: "newCount", subscribe: true } },
  SubscribeOff: { tag: "SubscriptionRequest", val: { eventName: "newCount", subscribe: false } },
};
const TO_CLIENT = {
  Init: { tag: "Init", val: { actorId: "a1", connectionId: "c1" } },
  ErrorFull: { tag: "Error", val: { group: "user", code: "detailed_error", message: "Detailed", metadata: META, actionId: 7 } },
  ErrorBare: { tag: "Error", val: { group: "actor", code: "x", message: "boom", metadata: undefined, actionId: undefined } },
  ActionResponse: { tag: "ActionResponse", val: { id: 7, output: { n: 1 } } },
  ActionResponseUndef: { tag: "ActionResponse", val: { id: 1, output: undefined } },
  Event: { tag: "Event", val: { name: "newCount", args: [42] } },
};

test("cbor: a rich value encodes to the C++ bytes and decodes back", () => {
  assert.equal(toHex(cbor.encode(RICH)), CPP["value.cbor"]);
  assert.deepStrictEqual(cbor.decode(hex(CPP["value.cbor"])), RICH);
});

test("json: a rich value renders as the C++ printer does and parses back", () => {
  assert.equal(json.stringify(RICH), CPP["value.json"]);
  assert.deepStrictEqual(json.parse(CPP["value.json"]), RICH);
});

test("cbor: RFC 8949 Appendix A vectors both ways", () => {
  const vectors = [
    ["00", 0], ["01", 1], ["0a", 10], ["17", 23], ["1818", 24], ["1819", 25], ["1864", 100],
    ["1903e8", 1000], ["1a000f4240", 1000000], ["1b000000e8d4a51000", 1000000000000],
    ["1bffffffffffffffff", 18446744073709551615n], ["20", -1], ["29", -10], ["3863", -100],
    ["3903e7", -1000], ["3b7fffffffffffffff", -9223372036854775808n], ["fb3ff199999999999a", 1.1],
    ["fb7e37e43c8800759c", 1.0e300], ["fbc010666666666666", -4.1], ["f4", false], ["f5", true],
    ["f6", null], ["f7", undefined], ["40", new Uint8Array([])], ["4401020304", new Uint8Array([1, 2, 3, 4])],
    ["60", ""], ["6161", "a"], ["6449455446", "IETF"], ["62225c", '"\\'], ["62c3bc", "\u00fc"],
    ["63e6b0b4", "\u6c34"], ["64f0908591", "\u{10151}"], ["80", []], ["83010203", [1, 2, 3]],
    ["8301820203820405", [1, [2, 3], [4, 5]]], ["a0", {}],
    ["a201020304", new Map([[1, 2], [3, 4]])], ["a26161016162820203", { a: 1, b: [2, 3] }],
    ["826161a161626163", ["a", { b: "c" }]],
  ];
  for (const [h, v] of vectors) {
    assert.equal(toHex(cbor.encode(v)), h, `encode ${h}`);
    assert.deepStrictEqual(cbor.decode(hex(h)), v, `decode ${h}`);
  }
  const many = Array.from({ length: 25 }, (_, i) => i + 1);
  assert.equal(toHex(cbor.encode(many)), "98190102030405060708090a0b0c0d0e0f101112131415161718181819");
});

test("cbor: decode-only forms (half/single floats, tags, indefinite lengths)", () => {
  const d = (h) => cbor.decode(hex(h));
  assert.equal(d("f90000"), 0);
  assert.ok(Object.is(d("f98000"), -0));
  assert.equal(d("f93c00"), 1);
  assert.equal(d("f93e00"), 1.5);
  assert.equal(d("f97bff"), 65504);
  assert.equal(d("f90001"), 5.960464477539063e-8);
  assert.equal(d("f9c400"), -4);
  assert.equal(d("f97c00"), Infinity);
  assert.equal(d("f9fc00"), -Infinity);
  assert.ok(Number.isNaN(d("f97e00")));
  assert.equal(d("fa47c35000"), 100000);
  assert.equal(d("fa7f7fffff"), 3.4028234663852886e38);
  assert.ok(Number.isNaN(d("fb7ff8000000000000")));
  // Bignums become BigInt at any size (the C++ decoder keeps > 64-bit ones as bytes).
  assert.equal(d("c249010000000000000000"), 18446744073709551616n);
  assert.equal(d("c2420100"), 256);
  assert.equal(d("c34100"), -1);
  assert.equal(d("c3487fffffffffffffff"), -9223372036854775808n);
  // Other tags are dropped.
  assert.equal(d("c074323031332d30332d32315432303a30343a30305a"), "2013-03-21T20:04:00Z");
  assert.equal(d("c11a514b67b0"), 1363896240);
  assert.deepStrictEqual(d("5f42010243030405ff"), new Uint8Array([1, 2, 3, 4, 5]));
  assert.equal(d("7f657374726561646d696e67ff"), "streaming");
  assert.deepStrictEqual(d("9fff"), []);
  assert.deepStrictEqual(d("9f018202039f0405ffff"), [1, [2, 3], [4, 5]]);
  assert.deepStrictEqual(d("bf61610161629f0203ffff"), { a: 1, b: [2, 3] });
  assert.deepStrictEqual(d("bf6346756ef563416d7421ff"), { Fun: true, Amt: -2 });
  assert.equal(d("1b0000000000000001"), 1);
  // Integers: numbers up to 2^53, bigint beyond (both directions).
  assert.equal(d("1b0020000000000000"), 2 ** 53);
  assert.equal(d("1b0020000000000001"), 2n ** 53n + 1n);
  assert.equal(toHex(cbor.encode(2n ** 53n + 1n)), "1b0020000000000001");
  assert.equal(toHex(cbor.encode(5n)), "05");
  assert.equal(toHex(cbor.encode(2 ** 60)), "fb43b0000000000000");  // inexact: a float
  assert.equal(toHex(cbor.encode(-0)), "fb8000000000000000");
  // An object's __proto__ key stays data.
  const evil = d("a1695f5f70726f746f5f5fa16178f5");
  assert.equal(Object.getPrototypeOf(evil), Object.prototype);
  assert.deepStrictEqual(Object.keys(evil), ["__proto__"]);
});

test("cbor: malformed input is rejected with the C++ decoder's reasons", () => {
  const cases = [
    ["", "truncated input at offset 0"], ["18", "truncated"], ["1900", "truncated"],
    ["1b00000000", "truncated"], ["6261", "length exceeds input at offset 1"],
    ["5b00000000ffffffff", "length exceeds input"], ["9bffffffffffffffff", "array length exceeds input"],
    ["bbffffffffffffffff", "map length exceeds input"], ["8301", "array length exceeds input"],
    ["820118", "truncated input at offset 3"], ["a10102a1", "trailing bytes at offset 3"],
    ["0000", "trailing bytes at offset 1"], ["1c", "reserved additional information"],
    ["3f", "indefinite length on an integer"], ["df00", "indefinite length on a tag"],
    ["ff", "unexpected break"], ["f0", "unsupported simple value"], ["f820", "unsupported simple value"],
    ["62c328", "invalid UTF-8"], ["62c0af", "invalid UTF-8"], ["63eda080", "invalid UTF-8"],
    ["7f6161", "truncated"], ["5f6161ff", "bad chunk"], ["5f5f4101ffff", "nested indefinite"],
    ["9f01", "truncated"], ["bf0102", "truncated"], ["a1ff01", "unexpected break"],
  ];
  for (const [h, fragment] of cases) {
    assert.throws(() => cbor.decode(hex(h)), (e) => e instanceof cbor.CborError && e.message.includes(fragment), h);
  }
  const deep = "81".repeat(65) + "00";
  assert.throws(() => cbor.decode(hex(deep)), /nesting too deep/);
  assert.deepStrictEqual(cbor.decode(hex("81".repeat(64) + "00")).flat(Infinity), [0]);
  assert.throws(() => cbor.decode(hex("c6".repeat(100) + "00")), /nesting too deep/);
  assert.throws(() => cbor.decode(hex("8401020304"), { maxItems: 3 }), /too many items/);
  assert.throws(() => cbor.encode(() => 1), TypeError);
  assert.throws(() => cbor.encode(new Date()), TypeError);
});

test("json: escapes both ways", () => {
  assert.equal(json.stringify([1n, 2n ** 60n, new ArrayBuffer(2), undefined, ["$x", 1], ["$$y", 2], ["$z"]]),
    '[1,["$BigInt","1152921504606846976"],["$ArrayBuffer","AAA="],["$Undefined"],["$$x",1],["$$$y",2],["$z"]]');
  assert.deepStrictEqual(json.parse('[["$$x",1],["$Undefined"],["$ArrayBuffer","AAA="],["$BigInt","-5"],["$z"]]'),
    [["$x", 1], undefined, new Uint8Array(2), -5n, ["$z"]]);
  assert.equal(json.stringify(new Map([[1, "a"], [true, "b"], ["k", new Map([[[1], 2]])]])), '{"1":"a","true":"b","k":{"[1]":2}}');
  assert.equal(json.stringify({ s: "\ud800x" }), '{"s":"\ufffdx"}');  // a lone surrogate
  assert.equal(json.stringify([NaN, Infinity, 0.1, 1e21]), "[null,null,0.1,1e+21]");
  assert.throws(() => json.parse('["$Nope","x"]'), /unknown '\$' escape/);
  assert.throws(() => json.parse('["$BigInt",1]'), /escape payload is not a string/);
  assert.throws(() => json.parse('["$BigInt","1x"]'), /invalid \$BigInt/);
  assert.throws(() => json.parse("{"), json.JsonError);
});

test("wire: client → server messages are byte-identical to the C++ encoder in every encoding", () => {
  for (const enc of wire.ENCODINGS) {
    for (const [name, msg] of Object.entries(MESSAGES)) {
      const key = `${name}.${enc}`;
      sameBytes(wire.encodeToServer(msg, enc), key);
      assert.deepStrictEqual(wire.decodeToServer(cpp(key), enc), msg, key);
    }
  }
});

test("wire: server → client messages from the C++ encoder decode, and re-encode identically", () => {
  for (const enc of wire.ENCODINGS) {
    for (const [name, msg] of Object.entries(TO_CLIENT)) {
      const key = `${name}.${enc}`;
      assert.deepStrictEqual(wire.decodeToClient(cpp(key), enc), msg, key);
      sameBytes(wire.encodeToClient(msg, enc), key);
    }
  }
});

test("wire: HTTP bodies are byte-identical to the C++ encoder in every encoding", () => {
  for (const enc of wire.ENCODINGS) {
    const k = (n) => `${n}.${enc}`;
    sameBytes(wire.encodeHttpActionRequest({ args: [RICH, "x"] }, enc), k("HttpActionRequest"));
    assert.deepStrictEqual(wire.decodeHttpActionRequest(cpp(k("HttpActionRequest")), enc), { args: [RICH, "x"] });
    sameBytes(wire.encodeHttpActionResponse({ output: RICH }, enc), k("HttpActionResponse"));
    assert.deepStrictEqual(wire.decodeHttpActionResponse(cpp(k("HttpActionResponse")), enc), { output: RICH });
    const full = { body: "hi", name: "jobs", wait: true, timeout: 1000 };
    sameBytes(wire.encodeHttpQueueSendRequest(full, enc), k("QueueSendFull"));
    assert.deepStrictEqual(wire.decodeHttpQueueSendRequest(cpp(k("QueueSendFull")), enc), full);
    sameBytes(wire.encodeHttpQueueSendRequest({ body: 3 }, enc), k("QueueSendMin"));
    assert.deepStrictEqual(wire.decodeHttpQueueSendRequest(cpp(k("QueueSendMin")), enc),
      { body: 3, name: undefined, wait: undefined, timeout: undefined });
    sameBytes(wire.encodeHttpQueueSendResponse({ status: "completed", response: RICH }, enc), k("QueueResponseCompleted"));
    assert.deepStrictEqual(wire.decodeHttpQueueSendResponse(cpp(k("QueueResponseCompleted")), enc), { status: "completed", response: RICH });
    sameBytes(wire.encodeHttpQueueSendResponse({ status: "timedOut" }, enc), k("QueueResponseTimedOut"));
    assert.deepStrictEqual(wire.decodeHttpQueueSendResponse(cpp(k("QueueResponseTimedOut")), enc), { status: "timedOut", response: undefined });
    const notFound = { group: "actor", code: "action_not_found", message: "Action `nope` was not found.", metadata: undefined };
    sameBytes(wire.encodeHttpResponseError(notFound, enc), k("HttpError"));
    assert.deepStrictEqual(wire.decodeHttpResponseError(cpp(k("HttpError")), enc), notFound);
    const withMeta = { group: "user", code: "detailed_error", message: "Detailed", metadata: { reason: "test" } };
    sameBytes(wire.encodeHttpResponseError(withMeta, enc), k("HttpErrorMeta"));
    assert.deepStrictEqual(wire.decodeHttpResponseError(cpp(k("HttpErrorMeta")), enc), withMeta);
  }
});

test("wire: json accepts plain-number ids, ignores unknown fields, rejects malformed messages", () => {
  assert.deepStrictEqual(
    wire.decodeToClient('{"body":{"tag":"ActionResponse","val":{"id":5,"output":1,"x":0}}}', "json"),
    { tag: "ActionResponse", val: { id: 5, output: 1 } });
  assert.deepStrictEqual(
    wire.decodeToClient('{"body":{"tag":"ActionResponse","val":{"id":["$BigInt","18446744073709551615"],"output":1}}}', "json").val.id,
    18446744073709551615n);
  const bad = [
    ["", /malformed JSON/], ["[]", /message: expected an object, got array/], ["{}", /missing field 'body'/],
    ['{"body":{"val":{}}}', /body: missing field 'tag'/], ['{"body":{"tag":"Init"}}', /missing field 'val'/],
    ['{"body":{"tag":"Nope","val":{}}}', /unknown ToClient message 'Nope'/],
    ['{"body":{"tag":"ActionResponse","val":{"id":-1}}}', /ActionResponse.id: negative integer/],
    ['{"body":{"tag":"ActionResponse","val":{"id":1.5}}}', /expected non-negative integer, got float/],
    ['{"body":{"tag":"Event","val":{"name":"e","args":{}}}}', /Event.args: expected array, got map/],
    ['{"body":{"tag":"Init","val":{"actorId":1,"connectionId":"c"}}}', /Init.actorId: expected text, got integer/],
  ];
  for (const [t, re] of bad) assert.throws(() => wire.decodeToClient(t, "json"), (e) => e instanceof wire.WireError && re.test(e.message), t);
  assert.throws(() => wire.decodeToClient(hex("80"), "cbor"), /message: expected an object, got array/);
  const good = hex(CPP["Event.cbor"]);
  for (let n = 0; n < good.length; ++n) assert.throws(() => wire.decodeToClient(good.subarray(0, n), "cbor"), wire.WireError, `cbor prefix ${n}`);
  assert.throws(() => wire.decodeToClient(Uint8Array.of(...good, 0), "cbor"), /malformed CBOR: trailing bytes/);
});

test("bare: versions, strictness and truncations", () => {
  // A v1 Init carries a connection token that later versions dropped.
  const v1 = [0x01, 0x00, 0x00];
  for (const s of ["actor", "conn", "token"]) v1.push(s.length, ...new TextEncoder().encode(s));
  assert.deepStrictEqual(wire.decodeToClient(Uint8Array.from(v1), "bare"), { tag: "Init", val: { actorId: "actor", connectionId: "conn" } });
  // v2 framing of an ActionRequest is read; v4 is not.
  const v2 = hex(CPP["ActionRequest0.bare"]);
  v2[0] = 2;
  assert.equal(bare.decodeToServer(v2).val.name, "increment");
  v2[0] = 4;
  assert.throws(() => bare.decodeToServer(v2), /invalid version: 4/);
  // Queue sends exist from v3 on.
  const q = hex(CPP["QueueSendFull.bare"]);
  q[0] = 2;
  assert.throws(() => bare.decodeHttpQueueSendRequest(q), /requires client protocol v3/);
  // Every truncation of every C++ message fails; so do trailing bytes.
  for (const name of Object.keys(TO_CLIENT)) {
    const b = hex(CPP[`${name}.bare`]);
    for (let n = 0; n < b.length; ++n) assert.throws(() => wire.decodeToClient(b.subarray(0, n), "bare"), wire.WireError, `${name} prefix ${n}`);
    assert.throws(() => wire.decodeToClient(Uint8Array.of(...b, 0), "bare"), /trailing bytes/);
  }
  assert.throws(() => bare.decodeToClient(hex("0300048000")), /non-canonical varint|unknown ToClientBody tag/);
  assert.throws(() => bare.decodeToClient(hex("030004")), /unknown ToClientBody tag 4/);
  assert.throws(() => bare.decodeToServer(hex("030001016502")), /bool byte above 1/);
  assert.throws(() => bare.decodeToServer(hex("0300008000016100")), /non-canonical varint/);
  assert.throws(() => bare.decodeHttpResponseError(hex("030001610162016302")), /optional byte above 1/);
  assert.throws(() => bare.decodeHttpResponseError(hex("03000161016202ff0000")), /invalid UTF-8/);
  assert.throws(() => bare.decodeToServer(hex("030000" + "ff".repeat(9) + "02" + "016100")), /varint overflows 64 bits/);
  // Large ids are varints (300 = ac 02) and 64-bit ones survive as bigint.
  const big = wire.encodeToServer({ tag: "ActionRequest", val: { id: 18446744073709551615n, name: "a", args: [] } }, "bare");
  assert.equal(toHex(big), "030000" + "ff".repeat(9) + "01" + "0161" + "0180");
  assert.equal(bare.decodeToServer(big).val.id, 18446744073709551615n);
  // Args that are not a CBOR array are refused.
  const notArray = hex("030003016501a0");  // Event{name "e", args: {}}
  assert.throws(() => wire.decodeToClient(notArray, "bare"), /Event.args: expected array, got map/);
});

/* The generator of CPP (C++20; g++-12 -std=c++20 -fsanitize=address,undefined -fuse-ld=lld
   -Isrc -Ibuild/dev/gen vectors.cc build/dev/src/{wire/libkeel_wire,value/libkeel_value,
   protocol/libkeel_protocol,base/libkeel_base}.a), printing "<key> <hex>" lines:
// Prints the C++ codec's bytes for the JS client's codec tests (hex, one per line).
#include <cstdint>
#include <iostream>
#include <limits>
#include <string>

#include "value/value.h"
#include "wire/client_messages.h"

using namespace keel;
using namespace keel::wire;

static std::string Hex(const Bytes& b) {
  static const char* k = "0123456789abcdef";
  std::string s;
  for (uint8_t c : b) { s += k[c >> 4]; s += k[c & 15]; }
  return s;
}
static const char* Name(Encoding e) { return e == Encoding::kJson ? "json" : e == Encoding::kCbor ? "cbor" : "bare"; }

int main() {
  const Value rich = Value::Object({{"big", std::numeric_limits<uint64_t>::max()},
                                    {"neg", std::numeric_limits<int64_t>::min()},
                                    {"bytes", Bytes{0, 1, 255}},
                                    {"u", Value::MakeUndefined()},
                                    {"f", 0.25},
                                    {"esc", Value::ArrayOf({"$BigInt", "x"})},
                                    {"s", "h\xc3\xa9llo \xe2\x9c\x93 \xf0\x9f\x98\x80 \"q\" \\ \n\x01\x7f"},
                                    {"n", nullptr},
                                    {"t", true},
                                    {"i", Value::ArrayOf({0, 23, 24, 255, 256, 65535, 65536, 4294967295LL, 4294967296LL, -1, -24, -25, -257, 9007199254740992LL, 9007199254740993LL})},
                                    {"fl", Value::ArrayOf({1.5, -0.0, 1e300})}});
  std::cout << "value.cbor " << Hex(EncodeCbor(rich)) << "\n";
  { std::string j = ToJson(rich); std::cout << "value.json " << Hex(Bytes(j.begin(), j.end())) << "\n"; }
  for (Encoding e : {Encoding::kJson, Encoding::kCbor, Encoding::kBare}) {
    auto p = [&](const char* what, const Bytes& b) { std::cout << what << "." << Name(e) << " " << Hex(b) << "\n"; };
    p("ActionRequest0", Encode(ToServer(ActionRequest{0, "increment", Value::ArrayOf({5})}), e));
    p("ActionRequest300", Encode(ToServer(ActionRequest{300, "go", Value::ArrayOf({1, "two", Value::Object({{"x", true}})})}), e));
    p("SubscribeOn", Encode(ToServer(SubscriptionRequest{"newCount", true}), e));
    p("SubscribeOff", Encode(ToServer(SubscriptionRequest{"newCount", false}), e));
    p("Init", Encode(ToClient(Init{"a1", "c1"}), e));
    p("ErrorFull", Encode(ToClient(ErrorMsg{"user", "detailed_error", "Detailed", Value::Object({{"reason", "test"}, {"timestamp", 1700000000000LL}}), uint64_t{7}}), e));
    p("ErrorBare", Encode(ToClient(ErrorMsg{"actor", "x", "boom", std::nullopt, std::nullopt}), e));
    p("ActionResponse", Encode(ToClient(ActionResponse{7, Value::Object({{"n", 1}})}), e));
    p("ActionResponseUndef", Encode(ToClient(ActionResponse{1, Value::MakeUndefined()}), e));
    p("Event", Encode(ToClient(Event{"newCount", Value::ArrayOf({42})}), e));
    p("HttpActionRequest", Encode(HttpActionRequest{Value::ArrayOf({rich, "x"})}, e));
    p("HttpActionResponse", Encode(HttpActionResponse{rich}, e));
    p("QueueSendFull", Encode(HttpQueueSendRequest{Value("hi"), "jobs", true, uint64_t{1000}}, e));
    p("QueueSendMin", Encode(HttpQueueSendRequest{Value(3), std::nullopt, std::nullopt, std::nullopt}, e));
    p("QueueResponseCompleted", Encode(HttpQueueSendResponse{"completed", rich}, e));
    p("QueueResponseTimedOut", Encode(HttpQueueSendResponse{"timedOut", std::nullopt}, e));
    p("HttpError", Encode(HttpResponseError{"actor", "action_not_found", "Action `nope` was not found.", std::nullopt}, e));
    p("HttpErrorMeta", Encode(HttpResponseError{"user", "detailed_error", "Detailed", Value::Object({{"reason", "test"}})}, e));
  }
}
*/
