#include "engine/gateway/cbor_check.h"

#include <cstdint>
#include <string>
#include <string_view>

#include "base/utf8.h"

namespace keel::engine::gateway {
namespace {

Error Invalid(std::string_view why) { return Error("cbor", "invalid", std::string(why)); }

class Checker {
 public:
  explicit Checker(ByteView data) : data_(data) {}

  Status Item(size_t depth) {
    if (depth > kMaxCborDepth) return Invalid("nesting too deep");
    KEEL_ASSIGN_OR_RETURN(Head head, ReadHead());
    if (head.major == 7 && head.indefinite) return Invalid("unexpected break");
    return Body(head, depth);
  }

 private:
  struct Head {
    uint8_t major = 0;
    uint8_t info = 0;
    bool indefinite = false;
    uint64_t arg = 0;
  };

  Result<Head> ReadHead() {
    if (pos_ >= data_.size()) return Invalid("truncated");
    uint8_t initial = data_[pos_++];
    Head head;
    head.major = initial >> 5;
    head.info = initial & 0x1F;
    if (head.info < 24) {
      head.arg = head.info;
      return head;
    }
    if (head.info == 31) {
      if (head.major == 0 || head.major == 1 || head.major == 6) {
        return Invalid("indefinite length on a type without one");
      }
      head.indefinite = true;
      return head;
    }
    if (head.info > 27) return Invalid("reserved additional information");
    size_t n = size_t{1} << (head.info - 24);
    if (data_.size() - pos_ < n) return Invalid("truncated");
    for (size_t k = 0; k < n; ++k) head.arg = (head.arg << 8) | data_[pos_++];
    return head;
  }

  // True and consumes the byte when the next byte is a break (0xFF).
  bool TakeBreak() {
    if (pos_ < data_.size() && data_[pos_] == 0xFF) {
      ++pos_;
      return true;
    }
    return false;
  }

  Status StringBody(uint64_t len, bool text) {
    if (len > data_.size() - pos_) return Invalid("truncated");
    ByteView chunk = data_.subspan(pos_, static_cast<size_t>(len));
    if (text && !IsValidUtf8(AsString(chunk))) return Invalid("text string is not UTF-8");
    pos_ += static_cast<size_t>(len);
    return OkStatus();
  }

  Status Body(const Head& head, size_t depth) {
    switch (head.major) {
      case 0:
      case 1:
        return OkStatus();
      case 2:
      case 3: {
        bool text = head.major == 3;
        if (!head.indefinite) return StringBody(head.arg, text);
        while (!TakeBreak()) {
          KEEL_ASSIGN_OR_RETURN(Head chunk, ReadHead());
          if (chunk.major != head.major || chunk.indefinite) {
            return Invalid("bad chunk in indefinite-length string");
          }
          KEEL_RETURN_IF_ERROR(StringBody(chunk.arg, text));
        }
        return OkStatus();
      }
      case 4:
      case 5: {
        uint64_t per_entry = head.major == 5 ? 2 : 1;
        if (head.indefinite) {
          while (!TakeBreak()) {
            for (uint64_t k = 0; k < per_entry; ++k) KEEL_RETURN_IF_ERROR(Item(depth + 1));
          }
          return OkStatus();
        }
        // Every item takes at least one byte, so a count past the remaining bytes is
        // truncated input; this also bounds the loop.
        uint64_t remaining = data_.size() - pos_;
        if (head.arg > remaining || head.arg * per_entry > remaining) {
          return Invalid("truncated");
        }
        for (uint64_t k = 0; k < head.arg * per_entry; ++k) {
          KEEL_RETURN_IF_ERROR(Item(depth + 1));
        }
        return OkStatus();
      }
      case 6:
        return Item(depth + 1);
      default:  // 7: simple values and floats; the argument was read with the head.
        if (head.info == 24 && head.arg < 32) return Invalid("invalid two-byte simple value");
        return OkStatus();
    }
  }

  ByteView data_;
  size_t pos_ = 0;
};

}  // namespace

Status CheckCborItem(ByteView data) { return Checker(data).Item(0); }

}  // namespace keel::engine::gateway
