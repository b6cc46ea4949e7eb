// A growable byte buffer: what the BARE and CBOR writers append to.
export class ByteBuffer {
  constructor(initial = 128) {
    this.buf = new Uint8Array(initial);
    this.len = 0;
  }
  // Makes room for `n` more bytes (doubling).
  ensure(n) {
    if (this.len + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.len + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.len));
    this.buf = next;
  }
  append(bytes) {
    this.ensure(bytes.length);
    this.buf.set(bytes, this.len);
    this.len += bytes.length;
  }
  // A copy of what was written.
  result() {
    return this.buf.slice(0, this.len);
  }
}
