#include "base/bytes.h"

namespace keel {
namespace {

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// A scratch buffer that grew past this (one large message) is freed rather than kept.
constexpr size_t kScratchKeptCapacity = 64 * 1024;

struct Scratch {
  Bytes buffer;
  bool busy = false;
};
thread_local Scratch t_scratch;

}  // namespace

namespace internal {

Bytes* AcquireScratch() {
  if (t_scratch.busy) return nullptr;
  t_scratch.busy = true;
  t_scratch.buffer.clear();
  return &t_scratch.buffer;
}

void ReleaseScratch(Bytes* scratch) {
  if (scratch->capacity() > kScratchKeptCapacity) {
    Bytes().swap(*scratch);
  } else {
    scratch->clear();
  }
  t_scratch.busy = false;
}

}  // namespace internal

std::string ToHex(ByteView bytes) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(bytes.size() * 2, '\0');
  for (size_t i = 0; i < bytes.size(); ++i) {
    out[2 * i] = kDigits[bytes[i] >> 4];
    out[2 * i + 1] = kDigits[bytes[i] & 0xf];
  }
  return out;
}

std::optional<Bytes> FromHex(std::string_view hex) {
  if (hex.size() % 2 != 0) return std::nullopt;
  Bytes out(hex.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) {
    int hi = HexValue(hex[2 * i]);
    int lo = HexValue(hex[2 * i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out[i] = static_cast<uint8_t>((hi << 4) | lo);
  }
  return out;
}

}  // namespace keel
