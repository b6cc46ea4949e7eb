#include "engine/core/preload.h"

#include <nlohmann/json.hpp>

namespace keel::engine {
namespace {

using json = nlohmann::json;

// A JSON array of byte values; nullopt unless every element is an integer in 0..255.
std::optional<Bytes> ParseKeyBytes(const json& j) {
  if (!j.is_array() || j.empty() || j.size() > 2048) return std::nullopt;
  Bytes out;
  out.reserve(j.size());
  for (const json& b : j) {
    if (!b.is_number_unsigned() || b.get<uint64_t>() > 255) return std::nullopt;
    out.push_back(static_cast<uint8_t>(b.get<uint64_t>()));
  }
  return out;
}

}  // namespace

std::optional<storage::PreloadPlan> ParsePreloadPlan(std::string_view metadata_json) {
  const json doc = json::parse(metadata_json, nullptr, /*allow_exceptions=*/false);
  if (!doc.is_object()) return std::nullopt;
  const auto it = doc.find("preload");
  if (it == doc.end() || !it->is_object()) return std::nullopt;
  storage::PreloadPlan plan;
  if (const auto keys = it->find("keys"); keys != it->end()) {
    if (!keys->is_array() || keys->size() > kMaxPreloadKeys) return std::nullopt;
    for (const json& k : *keys) {
      std::optional<Bytes> key = ParseKeyBytes(k);
      if (!key.has_value()) return std::nullopt;
      plan.keys.push_back(std::move(*key));
    }
  }
  if (const auto prefixes = it->find("prefixes"); prefixes != it->end()) {
    if (!prefixes->is_array() || prefixes->size() > kMaxPreloadPrefixes) return std::nullopt;
    for (const json& p : *prefixes) {
      if (!p.is_object()) return std::nullopt;
      storage::PreloadPlan::Prefix prefix;
      const auto bytes = p.find("prefix");
      const auto max = p.find("maxBytes");
      if (bytes == p.end() || max == p.end() || !max->is_number_unsigned()) return std::nullopt;
      std::optional<Bytes> key = ParseKeyBytes(*bytes);
      if (!key.has_value()) return std::nullopt;
      prefix.prefix = std::move(*key);
      prefix.max_bytes = max->get<uint64_t>();
      if (const auto partial = p.find("partial"); partial != p.end()) {
        if (!partial->is_boolean()) return std::nullopt;
        prefix.partial = partial->get<bool>();
      }
      plan.prefixes.push_back(std::move(prefix));
    }
  }
  if (plan.keys.empty() && plan.prefixes.empty()) return std::nullopt;
  return plan;
}

}  // namespace keel::engine
