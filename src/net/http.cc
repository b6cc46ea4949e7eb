#include "net/http.h"

#include <charconv>

namespace keel::net {

namespace {
char Lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c; }
}  // namespace

bool IsValidHeaderField(std::string_view name, std::string_view value) {
  if (name.empty()) return false;
  for (char c : name) {
    const bool alnum = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (!alnum && std::string_view("!#$%&'*+-.^_`|~").find(c) == std::string_view::npos) {
      return false;
    }
  }
  for (char c : value) {
    if (c == '\r' || c == '\n' || c == '\0') return false;
  }
  return true;
}

std::string_view FindHeader(const Headers& headers, std::string_view name) {
  for (const auto& [key, value] : headers) {
    if (EqualsIgnoreCase(key, name)) return value;
  }
  return {};
}

bool HasHeader(const Headers& headers, std::string_view name) {
  for (const auto& [key, value] : headers) {
    if (EqualsIgnoreCase(key, name)) return true;
  }
  return false;
}

Result<Url> ParseUrl(std::string_view url) {
  auto bad = [&](std::string_view why) {
    return Error("net", "invalid_argument", std::string(why) + ": " + std::string(url));
  };
  Url out;
  const size_t scheme_end = url.find("://");
  if (scheme_end == std::string_view::npos) return bad("URL without scheme");
  for (char c : url.substr(0, scheme_end)) out.scheme.push_back(Lower(c));
  bool unix_socket = false;
  if (out.scheme == "http+unix" || out.scheme == "ws+unix") {
    unix_socket = true;
    out.scheme.resize(out.scheme.size() - 5);
  }
  if (out.scheme != "http" && out.scheme != "ws") return bad("unsupported URL scheme");
  std::string_view rest = url.substr(scheme_end + 3);
  const size_t path_start = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, path_start);
  std::string_view target =
      path_start == std::string_view::npos ? std::string_view() : rest.substr(path_start);
  if (const size_t hash = target.find('#'); hash != std::string_view::npos) {
    target = target.substr(0, hash);
  }
  auto set_target = [&] {
    if (target.empty()) {
      out.target = "/";
    } else if (target.front() == '?') {
      out.target = "/" + std::string(target);
    } else {
      out.target = std::string(target);
    }
  };
  if (unix_socket) {
    // The authority is the socket's path, percent-encoded.
    for (size_t i = 0; i < authority.size(); ++i) {
      if (authority[i] != '%') {
        out.unix_path.push_back(authority[i]);
        continue;
      }
      unsigned value = 0;
      if (i + 2 >= authority.size()) return bad("bad percent-escape");
      auto [end, ec] =
          std::from_chars(authority.data() + i + 1, authority.data() + i + 3, value, 16);
      if (ec != std::errc() || end != authority.data() + i + 3) return bad("bad percent-escape");
      out.unix_path.push_back(static_cast<char>(value));
      i += 2;
    }
    if (out.unix_path.empty()) return bad("URL without socket path");
    if (out.unix_path.find('\0') != std::string::npos) return bad("NUL in socket path");
    out.host = "localhost";
    out.port = 80;
    set_target();
    return out;
  }
  if (authority.find('@') != std::string_view::npos) return bad("user info in URL");
  std::string_view host = authority;
  std::string_view port;
  if (!authority.empty() && authority.front() == '[') {
    const size_t close = authority.find(']');
    if (close == std::string_view::npos) return bad("unterminated IPv6 literal");
    host = authority.substr(1, close - 1);
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return bad("garbage after IPv6 literal");
      port = after.substr(1);
    }
  } else if (const size_t colon = authority.rfind(':'); colon != std::string_view::npos) {
    host = authority.substr(0, colon);
    port = authority.substr(colon + 1);
  }
  if (host.empty()) return bad("URL without host");
  out.host = std::string(host);
  out.port = 80;
  if (!port.empty()) {
    unsigned value = 0;
    auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
    if (ec != std::errc() || end != port.data() + port.size() || value == 0 || value > 65535) {
      return bad("bad port");
    }
    out.port = static_cast<uint16_t>(value);
  }
  set_target();
  return out;
}

std::string UnixUrlAuthority(std::string_view path) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (char c : path) {
    const auto u = static_cast<unsigned char>(c);
    const bool plain = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                       c == '.' || c == '_' || c == '~' || c == '-';
    if (plain) {
      out.push_back(c);
    } else {
      out.push_back('%');
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 15]);
    }
  }
  return out;
}

}  // namespace keel::net
