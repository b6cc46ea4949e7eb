#include "cli/proto_command.h"

#include <cctype>
#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

#include "base/bytes.h"
#include "protocol/client/v1_json.h"
#include "protocol/client/v2_json.h"
#include "protocol/client/v3_json.h"
#include "protocol/envoy/v1_json.h"
#include "protocol/envoy/v2_json.h"
#include "protocol/envoy/v3_json.h"
#include "protocol/envoy/v4_json.h"
#include "protocol/envoy/versioned.h"
#include "protocol/persist/v1_json.h"
#include "protocol/persist/v2_json.h"
#include "protocol/persist/v3_json.h"
#include "protocol/persist/v4_json.h"

namespace keel::cli {
namespace {

struct ProtoOptions {
  std::string protocol = "envoy";
  int version = 0;
  std::string type;
  std::string input;
  bool framed = false;
  bool pretty = false;
};

using DecodeFn = Result<std::string> (*)(std::string_view, ByteView, int);
using EncodeFn = Result<Bytes> (*)(std::string_view, std::string_view);

struct Codec {
  DecodeFn decode = nullptr;
  EncodeFn encode = nullptr;
};

// The schema registry for (protocol, version), or nullopt when no such schema exists.
std::optional<Codec> FindCodec(const std::string& protocol, int version) {
  namespace p = keel::protocol;
  if (protocol == "envoy") {
    switch (version) {
      case 1: return Codec{p::envoy::v1::DecodeToJson, p::envoy::v1::EncodeFromJson};
      case 2: return Codec{p::envoy::v2::DecodeToJson, p::envoy::v2::EncodeFromJson};
      case 3: return Codec{p::envoy::v3::DecodeToJson, p::envoy::v3::EncodeFromJson};
      case 4: return Codec{p::envoy::v4::DecodeToJson, p::envoy::v4::EncodeFromJson};
    }
  } else if (protocol == "client") {
    switch (version) {
      case 1: return Codec{p::client::v1::DecodeToJson, p::client::v1::EncodeFromJson};
      case 2: return Codec{p::client::v2::DecodeToJson, p::client::v2::EncodeFromJson};
      case 3: return Codec{p::client::v3::DecodeToJson, p::client::v3::EncodeFromJson};
    }
  } else if (protocol == "persist") {
    switch (version) {
      case 1: return Codec{p::persist::v1::DecodeToJson, p::persist::v1::EncodeFromJson};
      case 2: return Codec{p::persist::v2::DecodeToJson, p::persist::v2::EncodeFromJson};
      case 3: return Codec{p::persist::v3::DecodeToJson, p::persist::v3::EncodeFromJson};
      case 4: return Codec{p::persist::v4::DecodeToJson, p::persist::v4::EncodeFromJson};
    }
  }
  return std::nullopt;
}

int Fail(const Error& e) {
  std::cerr << "keel: " << e.ToString() << "\n";
  return 1;
}

std::string StripHex(const std::string& in) {
  std::string out;
  std::string_view s = in;
  if (s.size() >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X')) s.remove_prefix(2);
  for (char c : s) {
    if (!std::isspace(static_cast<unsigned char>(c))) out.push_back(c);
  }
  return out;
}

int RunDecode(const ProtoOptions& o) {
  auto bytes = FromHex(StripHex(o.input));
  if (!bytes) return Fail(Error("cli", "invalid_hex", "input is not an even-length hex string"));
  ByteView body(*bytes);
  int version = o.version;
  if (o.framed) {
    if (body.size() < 2) {
      return Fail(Error("protocol", "decode_failed", "framed input shorter than 2 bytes"));
    }
    int prefixed = body[0] | (body[1] << 8);
    if (version != 0 && version != prefixed) {
      return Fail(Error("cli", "version_mismatch",
                        "--version " + std::to_string(version) + " but the prefix says v" +
                            std::to_string(prefixed)));
    }
    version = prefixed;
    body = body.subspan(2);
  }
  auto codec = FindCodec(o.protocol, version);
  if (!codec) {
    return Fail(Error("protocol", "unsupported_version",
                      "no " + o.protocol + " schema at version " + std::to_string(version)));
  }
  auto json = codec->decode(o.type, body, o.pretty ? 2 : -1);
  if (!json.has_value()) return Fail(json.error());
  std::cout << *json << "\n";
  return 0;
}

int RunEncode(const ProtoOptions& o) {
  auto codec = FindCodec(o.protocol, o.version);
  if (!codec) {
    return Fail(Error("protocol", "unsupported_version",
                      "no " + o.protocol + " schema at version " + std::to_string(o.version)));
  }
  auto bytes = codec->encode(o.type, o.input);
  if (!bytes.has_value()) return Fail(bytes.error());
  Bytes out;
  if (o.framed) protocol::envoy::AppendVersionPrefix(static_cast<uint16_t>(o.version), out);
  out.insert(out.end(), bytes->begin(), bytes->end());
  std::cout << ToHex(out) << "\n";
  return 0;
}

void AddCommon(CLI::App* cmd, ProtoOptions& o, bool decode) {
  cmd->add_option("--protocol", o.protocol, "Schema family: envoy, client or persist")
      ->check(CLI::IsMember({"envoy", "client", "persist"}))
      ->capture_default_str();
  auto* version = cmd->add_option("--version", o.version, "Schema version (1-4)");
  if (!decode) version->required();
  cmd->add_option("--type", o.type, "Type name as in the schema, e.g. ToRivet")->required();
  cmd->add_flag("--framed", o.framed, "Input/output carries the 2-byte little-endian version prefix");
}

}  // namespace

void AddProtoCommand(CLI::App& app) {
  auto* proto = app.add_subcommand("proto", "Decode and encode protocol messages (debugging)");
  proto->require_subcommand(1);
  auto opts = std::make_shared<ProtoOptions>();

  auto* decode = proto->add_subcommand("decode", "Print HEX bytes as JSON (conformance-vector form)");
  AddCommon(decode, *opts, /*decode=*/true);
  decode->add_flag("--pretty", opts->pretty, "Indent the JSON");
  decode->add_option("HEX", opts->input, "Encoded bytes as hex")->required();
  decode->callback([opts] {
    if (!opts->framed && opts->version == 0) {
      throw CLI::ValidationError("--version", "required unless --framed");
    }
    int rc = RunDecode(*opts);
    if (rc != 0) throw CLI::RuntimeError(rc);
  });

  auto* encode = proto->add_subcommand("encode", "Print the hex encoding of a JSON value");
  AddCommon(encode, *opts, /*decode=*/false);
  encode->add_option("JSON", opts->input, "The value in conformance-vector JSON form")->required();
  encode->callback([opts] {
    int rc = RunEncode(*opts);
    if (rc != 0) throw CLI::RuntimeError(rc);
  });
}

}  // namespace keel::cli
