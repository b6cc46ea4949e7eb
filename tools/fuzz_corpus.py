#!/usr/bin/env python3
"""Writes seed corpora for the libFuzzer targets in tests/fuzz (used by scripts/fuzz.sh).

  to_rivet_fuzz/  version byte (v - 2) + the bytes of every ToRivet golden vector, v2..v4
                  (v1 ToRivet is a strict prefix of v2, so v1 vectors are seeded as v2)
  to_envoy_fuzz/  version byte (v - 1) + the bytes of every ToEnvoy golden vector, v1..v4
  client_fuzz/    message-type byte + 2-byte LE version + a hand-encoded client message

Each seed is named by the SHA-1 of its content, so re-running is idempotent and the
corpus directories can double as libFuzzer's working corpora. Standard library only.
"""

import argparse
import hashlib
import json
import pathlib
import struct
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent


def write_seed(directory: pathlib.Path, seed: bytes) -> bool:
    path = directory / hashlib.sha1(seed).hexdigest()
    if path.exists():
        return False
    path.write_bytes(seed)
    return True


def golden_seeds(golden: pathlib.Path):
    """Yields (target, seed bytes) for every top-level ToRivet/ToEnvoy golden vector."""
    for vector_file in sorted(golden.glob("v*/vectors.jsonl")):
        for line in vector_file.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            vector = json.loads(line)
            version, payload = vector["version"], bytes.fromhex(vector["hex"])
            if vector["type"] == "ToRivet":
                yield "to_rivet_fuzz", bytes([max(version, 2) - 2]) + payload
            elif vector["type"] == "ToEnvoy":
                yield "to_envoy_fuzz", bytes([version - 1]) + payload


# --- A minimal BARE encoder for the client protocol (schemas/client/v*.bare). ---------

def uint(v: int) -> bytes:
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def data(b: bytes) -> bytes:
    return uint(len(b)) + b


def string(s: str) -> bytes:
    return data(s.encode("utf-8"))


def optional(encoded) -> bytes:
    return b"\x00" if encoded is None else b"\x01" + encoded


def boolean(b: bool) -> bytes:
    return b"\x01" if b else b"\x00"


# Message-type selector: the order of the switch in tests/fuzz/client_fuzz.cc.
TO_SERVER, TO_CLIENT, ACTION_REQ, ACTION_RESP, RESPONSE_ERROR, RESOLVE_RESP, QUEUE_REQ, QUEUE_RESP = range(8)

CBOR_ARGS = bytes.fromhex("8101")  # CBOR [1]
CBOR_OUTPUT = bytes.fromhex("a1626f6b f5".replace(" ", ""))  # CBOR {"ok": true}


def client_seeds():
    """Yields seed bytes: selector, version (u16 LE), body."""
    messages = []
    for version in (1, 2, 3):
        messages += [
            (TO_SERVER, version, uint(0) + uint(1) + string("increment") + data(CBOR_ARGS)),
            (TO_SERVER, version, uint(1) + string("counterChanged") + boolean(True)),
            (TO_CLIENT, version, uint(2) + uint(1) + data(CBOR_OUTPUT)),
            (TO_CLIENT, version, uint(3) + string("counterChanged") + data(CBOR_ARGS)),
            (TO_CLIENT, version, uint(1) + string("actor") + string("not_found") +
             string("Actor not found") + optional(data(CBOR_OUTPUT)) + optional(uint(7))),
            (ACTION_REQ, version, data(CBOR_ARGS)),
            (ACTION_RESP, version, data(CBOR_OUTPUT)),
            (RESPONSE_ERROR, version, string("actor") + string("aborted") + string("boom") +
             optional(None)),
            (RESOLVE_RESP, version, string("0123456789abcdef")),
        ]
    # Init: v1 also carries connectionToken.
    messages.append((TO_CLIENT, 1, uint(0) + string("actor-1") + string("conn-1") + string("tok")))
    messages.append((TO_CLIENT, 2, uint(0) + string("actor-1") + string("conn-1")))
    messages.append((TO_CLIENT, 3, uint(0) + string("actor-1") + string("conn-1")))
    # Queue sends exist from v3 on.
    messages.append((QUEUE_REQ, 3, data(CBOR_ARGS) + optional(string("jobs")) +
                     optional(boolean(True)) + optional(struct.pack("<Q", 30000))))
    messages.append((QUEUE_REQ, 3, data(b"") + optional(None) + optional(None) + optional(None)))
    messages.append((QUEUE_RESP, 3, string("completed") + optional(data(CBOR_OUTPUT))))
    messages.append((QUEUE_RESP, 3, string("timedOut") + optional(None)))
    for selector, version, body in messages:
        yield bytes([selector]) + struct.pack("<H", version) + body


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--golden", type=pathlib.Path, default=ROOT / "tests/golden/envoy",
                        help="envoy golden vectors directory (default: %(default)s)")
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "build/fuzz/corpus",
                        help="corpus root; one subdirectory per target (default: %(default)s)")
    args = parser.parse_args()

    seeds = list(golden_seeds(args.golden))
    seeds += [("client_fuzz", seed) for seed in client_seeds()]
    if not any(target == "to_rivet_fuzz" for target, _ in seeds):
        print(f"fuzz_corpus: no golden vectors under {args.golden}", file=sys.stderr)
        return 1

    counts = {}
    for target, seed in seeds:
        directory = args.out / target
        directory.mkdir(parents=True, exist_ok=True)
        written = write_seed(directory, seed)
        total, new = counts.get(target, (0, 0))
        counts[target] = (total + 1, new + int(written))
    for target, (total, new) in sorted(counts.items()):
        print(f"fuzz_corpus: {target}: {total} seeds ({new} new) in {args.out / target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
