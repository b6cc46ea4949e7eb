#include "wire/client_messages.h"

#include <utility>
#include <vector>

#include "protocol/client/versioned.h"

namespace keel::wire {
namespace {

namespace pc = ::keel::protocol::client;
namespace v3 = ::keel::protocol::client::v3;

// The envelope around a value: {"body": {"tag", "val"}} adds up to three levels.
constexpr size_t kEnvelopeDepth = 3;

Error Invalid(std::string message) { return Error("wire", "invalid_message", std::move(message)); }

// ---- writing json/cbor ----

// One field of a json/cbor object. Both encodings are written from the same list so they
// cannot drift apart.
struct OutField {
  std::string_view key;
  std::optional<Value> value;  // nullopt: absent
  bool is_id = false;          // json: ["$BigInt","<n>"]
  bool null_in_cbor = false;   // absent: explicit null in cbor (omitted in json)
};
using OutFields = std::vector<OutField>;

OutField Text(std::string_view key, const std::string& s) { return {key, Value(s)}; }
OutField Id(std::string_view key, uint64_t id) {
  return {key, Value(static_cast<unsigned long long>(id)), true};
}
OutField Val(std::string_view key, const Value& v) { return {key, v}; }
OutField OptVal(std::string_view key, const std::optional<Value>& v) { return {key, v}; }

void AppendJsonObject(const OutFields& fields, std::string& out) {
  out += '{';
  bool first = true;
  for (const OutField& f : fields) {
    // Like JSON.stringify, drop undefined properties; readers take a missing value field
    // as undefined.
    if (!f.value.has_value() || f.value->is_undefined()) continue;
    if (!first) out += ',';
    first = false;
    AppendJson(Value(f.key), out);
    out += ':';
    if (f.is_id) {
      // Ids are JavaScript bigints on the TypeScript side, whatever their size.
      out += "[\"$BigInt\",\"";
      out += std::to_string(f.value->as_uint());
      out += "\"]";
    } else {
      AppendJson(*f.value, out);
    }
  }
  out += '}';
}

Value CborObject(const OutFields& fields) {
  Value::Map map;
  for (const OutField& f : fields) {
    if (f.value.has_value()) {
      map.emplace_back(Value(f.key), *f.value);
    } else if (f.null_in_cbor) {
      map.emplace_back(Value(f.key), Value(nullptr));
    }
  }
  return Value(std::move(map));
}

Bytes TextBytes(const std::string& s) { return Bytes(s.begin(), s.end()); }

Bytes EncodeObject(const OutFields& fields, Encoding encoding) {
  if (encoding == Encoding::kJson) {
    std::string out;
    AppendJsonObject(fields, out);
    return TextBytes(out);
  }
  return EncodeCbor(CborObject(fields));
}

Bytes EncodeEnvelope(std::string_view tag, const OutFields& fields, Encoding encoding) {
  if (encoding == Encoding::kJson) {
    std::string out = "{\"body\":{\"tag\":";
    AppendJson(Value(tag), out);
    out += ",\"val\":";
    AppendJsonObject(fields, out);
    out += "}}";
    return TextBytes(out);
  }
  return EncodeCbor(
      Value::Object({{"body", Value::Object({{"tag", Value(tag)}, {"val", CborObject(fields)}})}}));
}

// ---- reading json/cbor ----

Result<Value> ParseDocument(ByteView in, Encoding encoding, const CborLimits& limits) {
  CborLimits outer = limits;
  outer.max_depth += kEnvelopeDepth;
  if (encoding == Encoding::kJson) {
    auto v = ParseJson(AsString(in), outer.max_depth);
    if (!v) return Invalid("malformed JSON: " + v.error().message());
    return v;
  }
  auto v = DecodeCbor(in, outer);
  if (!v) return Invalid("malformed CBOR: " + v.error().message());
  return v;
}

// Reads the fields of one json/cbor object; `where` names it in errors ("ActionRequest").
class InFields {
 public:
  InFields(const Value& map, std::string where) : map_(map), where_(std::move(where)) {}

  static Result<InFields> Of(const Value& v, std::string where) {
    if (!v.is_map()) {
      return Invalid(where + ": expected an object, got " + std::string(KindName(v.kind())));
    }
    return InFields(v, std::move(where));
  }

  Result<std::string> Text(std::string_view key) const {
    const Value* v = map_.Find(key);
    if (v == nullptr || v->is_undefined()) return Missing(key);
    if (!v->is_text()) return Mismatch(key, "text", *v);
    return v->as_text();
  }

  Result<std::optional<std::string>> OptText(std::string_view key) const {
    const Value* v = Present(key);
    if (v == nullptr) return std::optional<std::string>();
    if (!v->is_text()) return Mismatch(key, "text", *v);
    return std::optional<std::string>(v->as_text());
  }

  Result<bool> Bool(std::string_view key) const {
    const Value* v = map_.Find(key);
    if (v == nullptr || v->is_undefined()) return Missing(key);
    if (!v->is_bool()) return Mismatch(key, "bool", *v);
    return v->as_bool();
  }

  Result<std::optional<bool>> OptBool(std::string_view key) const {
    const Value* v = Present(key);
    if (v == nullptr) return std::optional<bool>();
    if (!v->is_bool()) return Mismatch(key, "bool", *v);
    return std::optional<bool>(v->as_bool());
  }

  // A non-negative integer ($BigInt in JSON has already become one).
  Result<uint64_t> Uint(std::string_view key) const {
    const Value* v = map_.Find(key);
    if (v == nullptr || v->is_undefined()) return Missing(key);
    return UintOf(key, *v);
  }

  Result<std::optional<uint64_t>> OptUint(std::string_view key) const {
    const Value* v = Present(key);
    if (v == nullptr) return std::optional<uint64_t>();
    KEEL_ASSIGN_OR_RETURN(uint64_t u, UintOf(key, *v));
    return std::optional<uint64_t>(u);
  }

  // Any value; absent reads as undefined (JSON.stringify drops undefined properties, so
  // an action that returned undefined arrives without `output`).
  Value Any(std::string_view key) const {
    const Value* v = map_.Find(key);
    return v == nullptr ? Value::MakeUndefined() : *v;
  }

  Result<std::optional<Value>> OptAny(std::string_view key) const {
    const Value* v = Present(key);
    if (v == nullptr) return std::optional<Value>();
    return std::optional<Value>(*v);
  }

  Result<Value> Array(std::string_view key) const {
    const Value* v = map_.Find(key);
    if (v == nullptr || v->is_undefined()) return Missing(key);
    if (!v->is_array()) return Mismatch(key, "array", *v);
    return *v;
  }

 private:
  // nullptr when absent, null or undefined.
  const Value* Present(std::string_view key) const {
    const Value* v = map_.Find(key);
    if (v == nullptr || v->is_null() || v->is_undefined()) return nullptr;
    return v;
  }

  Result<uint64_t> UintOf(std::string_view key, const Value& v) const {
    if (!v.is_integer()) return Mismatch(key, "non-negative integer", v);
    if (v.kind() == Value::Kind::kInt && v.as_int() < 0) {
      return Invalid(where_ + "." + std::string(key) + ": negative integer");
    }
    return v.as_uint();
  }

  Error Missing(std::string_view key) const {
    return Invalid(where_ + ": missing field '" + std::string(key) + "'");
  }

  Error Mismatch(std::string_view key, std::string_view expected, const Value& got) const {
    return Invalid(where_ + "." + std::string(key) + ": expected " + std::string(expected) +
                   ", got " + std::string(KindName(got.kind())));
  }

  const Value& map_;
  std::string where_;
};

// Splits {"body": {"tag": T, "val": V}} into (T, V).
Result<std::pair<std::string, Value>> OpenEnvelope(const Value& doc) {
  if (!doc.is_map()) {
    return Invalid("message: expected an object, got " + std::string(KindName(doc.kind())));
  }
  const Value* body = doc.Find("body");
  if (body == nullptr) return Invalid("message: missing field 'body'");
  KEEL_ASSIGN_OR_RETURN(InFields b, InFields::Of(*body, "body"));
  KEEL_ASSIGN_OR_RETURN(std::string tag, b.Text("tag"));
  const Value* val = body->Find("val");
  if (val == nullptr) return Invalid("body: missing field 'val'");
  return std::pair<std::string, Value>(std::move(tag), *val);
}

// ---- bare ----

Bytes Cbor(const Value& v) { return EncodeCbor(v); }
std::optional<Bytes> OptCbor(const std::optional<Value>& v) {
  if (!v.has_value()) return std::nullopt;
  return EncodeCbor(*v);
}

Result<Value> FromCbor(const Bytes& bytes, std::string_view where, const CborLimits& limits) {
  auto v = DecodeCbor(bytes, limits);
  if (!v) return Invalid(std::string(where) + ": " + v.error().message());
  return v;
}

Result<std::optional<Value>> FromOptCbor(const std::optional<Bytes>& bytes, std::string_view where,
                                         const CborLimits& limits) {
  if (!bytes.has_value()) return std::optional<Value>();
  KEEL_ASSIGN_OR_RETURN(Value v, FromCbor(*bytes, where, limits));
  return std::optional<Value>(std::move(v));
}

Result<Value> ArrayFromCbor(const Bytes& bytes, std::string_view where, const CborLimits& limits) {
  KEEL_ASSIGN_OR_RETURN(Value v, FromCbor(bytes, where, limits));
  if (!v.is_array()) {
    return Invalid(std::string(where) + ": expected array, got " + std::string(KindName(v.kind())));
  }
  return v;
}

Bytes Framed(Result<Bytes, protocol::ConversionError> r) {
  // The latest version holds every message, so conversion cannot fail.
  return std::move(r).value();
}

template <class T>
Result<T> Unframed(Result<T> r) {
  if (!r) return Invalid("malformed BARE: " + r.error().ToString());
  return r;
}

// ---- per-message field lists ----

OutFields FieldsOf(const Init& m) {
  return {Text("actorId", m.actor_id), Text("connectionId", m.connection_id)};
}
OutFields FieldsOf(const ErrorMsg& m) {
  OutField action_id{"actionId", std::nullopt, true, true};
  if (m.action_id) action_id.value = Value(static_cast<unsigned long long>(*m.action_id));
  return {Text("group", m.group), Text("code", m.code), Text("message", m.message),
          OptVal("metadata", m.metadata), action_id};
}
OutFields FieldsOf(const ActionResponse& m) { return {Id("id", m.id), Val("output", m.output)}; }
OutFields FieldsOf(const Event& m) { return {Text("name", m.name), Val("args", m.args)}; }
OutFields FieldsOf(const ActionRequest& m) {
  return {Id("id", m.id), Text("name", m.name), Val("args", m.args)};
}
OutFields FieldsOf(const SubscriptionRequest& m) {
  return {Text("eventName", m.event_name), Val("subscribe", Value(m.subscribe))};
}

std::string_view TagOf(const Init&) { return "Init"; }
std::string_view TagOf(const ErrorMsg&) { return "Error"; }
std::string_view TagOf(const ActionResponse&) { return "ActionResponse"; }
std::string_view TagOf(const Event&) { return "Event"; }
std::string_view TagOf(const ActionRequest&) { return "ActionRequest"; }
std::string_view TagOf(const SubscriptionRequest&) { return "SubscriptionRequest"; }

v3::ToClient ToBare(const ToClient& msg) {
  v3::ToClient out;
  std::visit(
      [&](const auto& m) {
        using M = std::decay_t<decltype(m)>;
        if constexpr (std::is_same_v<M, Init>) {
          out.body = v3::Init{m.actor_id, m.connection_id};
        } else if constexpr (std::is_same_v<M, ErrorMsg>) {
          out.body = v3::Error{m.group, m.code, m.message, OptCbor(m.metadata), m.action_id};
        } else if constexpr (std::is_same_v<M, ActionResponse>) {
          out.body = v3::ActionResponse{m.id, Cbor(m.output)};
        } else {
          out.body = v3::Event{m.name, Cbor(m.args)};
        }
      },
      msg);
  return out;
}

v3::ToServer ToBare(const ToServer& msg) {
  v3::ToServer out;
  if (const auto* a = std::get_if<ActionRequest>(&msg)) {
    out.body = v3::ActionRequest{a->id, a->name, Cbor(a->args)};
  } else {
    const auto& s = std::get<SubscriptionRequest>(msg);
    out.body = v3::SubscriptionRequest{s.event_name, s.subscribe};
  }
  return out;
}

}  // namespace

std::optional<Encoding> ParseEncoding(std::string_view name) {
  if (name == "json") return Encoding::kJson;
  if (name == "cbor") return Encoding::kCbor;
  if (name == "bare") return Encoding::kBare;
  return std::nullopt;
}

std::string_view EncodingName(Encoding encoding) {
  switch (encoding) {
    case Encoding::kJson:
      return "json";
    case Encoding::kCbor:
      return "cbor";
    case Encoding::kBare:
      return "bare";
  }
  return "json";
}

std::string_view ContentType(Encoding encoding) {
  return encoding == Encoding::kJson ? "application/json" : "application/octet-stream";
}

bool UsesTextFrames(Encoding encoding) { return encoding == Encoding::kJson; }

// ---- WebSocket messages ----

Bytes Encode(const ToClient& msg, Encoding encoding) {
  if (encoding == Encoding::kBare) return Framed(pc::EncodeToClient(ToBare(msg)));
  return std::visit([&](const auto& m) { return EncodeEnvelope(TagOf(m), FieldsOf(m), encoding); },
                    msg);
}

Bytes Encode(const ToServer& msg, Encoding encoding) {
  if (encoding == Encoding::kBare) return Framed(pc::EncodeToServer(ToBare(msg)));
  return std::visit([&](const auto& m) { return EncodeEnvelope(TagOf(m), FieldsOf(m), encoding); },
                    msg);
}

Result<ToClient> DecodeToClient(ByteView in, Encoding encoding, const CborLimits& limits) {
  if (encoding == Encoding::kBare) {
    KEEL_ASSIGN_OR_RETURN(v3::ToClient msg, Unframed(pc::DecodeToClient(in)));
    if (const auto* m = msg.body.get_if<v3::Init>()) {
      return ToClient(Init{m->actor_id, m->connection_id});
    }
    if (const auto* m = msg.body.get_if<v3::Error>()) {
      KEEL_ASSIGN_OR_RETURN(auto metadata, FromOptCbor(m->metadata, "Error.metadata", limits));
      return ToClient(ErrorMsg{m->group, m->code, m->message, std::move(metadata), m->action_id});
    }
    if (const auto* m = msg.body.get_if<v3::ActionResponse>()) {
      KEEL_ASSIGN_OR_RETURN(Value output, FromCbor(m->output, "ActionResponse.output", limits));
      return ToClient(ActionResponse{m->id, std::move(output)});
    }
    const auto& m = std::get<v3::Event>(msg.body.value);
    KEEL_ASSIGN_OR_RETURN(Value args, ArrayFromCbor(m.args, "Event.args", limits));
    return ToClient(Event{m.name, std::move(args)});
  }

  KEEL_ASSIGN_OR_RETURN(Value doc, ParseDocument(in, encoding, limits));
  KEEL_ASSIGN_OR_RETURN(auto envelope, OpenEnvelope(doc));
  const auto& [tag, val] = envelope;
  KEEL_ASSIGN_OR_RETURN(InFields f, InFields::Of(val, tag));
  if (tag == "Init") {
    KEEL_ASSIGN_OR_RETURN(std::string actor_id, f.Text("actorId"));
    KEEL_ASSIGN_OR_RETURN(std::string connection_id, f.Text("connectionId"));
    return ToClient(Init{std::move(actor_id), std::move(connection_id)});
  }
  if (tag == "Error") {
    ErrorMsg m;
    KEEL_ASSIGN_OR_RETURN(m.group, f.Text("group"));
    KEEL_ASSIGN_OR_RETURN(m.code, f.Text("code"));
    KEEL_ASSIGN_OR_RETURN(m.message, f.Text("message"));
    KEEL_ASSIGN_OR_RETURN(m.metadata, f.OptAny("metadata"));
    KEEL_ASSIGN_OR_RETURN(m.action_id, f.OptUint("actionId"));
    return ToClient(std::move(m));
  }
  if (tag == "ActionResponse") {
    KEEL_ASSIGN_OR_RETURN(uint64_t id, f.Uint("id"));
    return ToClient(ActionResponse{id, f.Any("output")});
  }
  if (tag == "Event") {
    KEEL_ASSIGN_OR_RETURN(std::string name, f.Text("name"));
    KEEL_ASSIGN_OR_RETURN(Value args, f.Array("args"));
    return ToClient(Event{std::move(name), std::move(args)});
  }
  return Invalid("body.tag: unknown ToClient message '" + tag + "'");
}

Result<ToServer> DecodeToServer(ByteView in, Encoding encoding, const CborLimits& limits) {
  if (encoding == Encoding::kBare) {
    KEEL_ASSIGN_OR_RETURN(v3::ToServer msg, Unframed(pc::DecodeToServer(in)));
    if (const auto* m = msg.body.get_if<v3::ActionRequest>()) {
      KEEL_ASSIGN_OR_RETURN(Value args, ArrayFromCbor(m->args, "ActionRequest.args", limits));
      return ToServer(ActionRequest{m->id, m->name, std::move(args)});
    }
    const auto& m = std::get<v3::SubscriptionRequest>(msg.body.value);
    return ToServer(SubscriptionRequest{m.event_name, m.subscribe});
  }

  KEEL_ASSIGN_OR_RETURN(Value doc, ParseDocument(in, encoding, limits));
  KEEL_ASSIGN_OR_RETURN(auto envelope, OpenEnvelope(doc));
  const auto& [tag, val] = envelope;
  KEEL_ASSIGN_OR_RETURN(InFields f, InFields::Of(val, tag));
  if (tag == "ActionRequest") {
    ActionRequest m;
    KEEL_ASSIGN_OR_RETURN(m.id, f.Uint("id"));
    KEEL_ASSIGN_OR_RETURN(m.name, f.Text("name"));
    KEEL_ASSIGN_OR_RETURN(m.args, f.Array("args"));
    return ToServer(std::move(m));
  }
  if (tag == "SubscriptionRequest") {
    SubscriptionRequest m;
    KEEL_ASSIGN_OR_RETURN(m.event_name, f.Text("eventName"));
    KEEL_ASSIGN_OR_RETURN(m.subscribe, f.Bool("subscribe"));
    return ToServer(std::move(m));
  }
  return Invalid("body.tag: unknown ToServer message '" + tag + "'");
}

// ---- HTTP bodies ----

Bytes Encode(const HttpActionRequest& msg, Encoding encoding) {
  if (encoding == Encoding::kBare) {
    return Framed(pc::EncodeHttpActionRequest(v3::HttpActionRequest{Cbor(msg.args)}));
  }
  return EncodeObject({Val("args", msg.args)}, encoding);
}

Bytes Encode(const HttpActionResponse& msg, Encoding encoding) {
  if (encoding == Encoding::kBare) {
    return Framed(pc::EncodeHttpActionResponse(v3::HttpActionResponse{Cbor(msg.output)}));
  }
  return EncodeObject({Val("output", msg.output)}, encoding);
}

Bytes Encode(const HttpQueueSendRequest& msg, Encoding encoding) {
  if (encoding == Encoding::kBare) {
    return Framed(pc::EncodeHttpQueueSendRequest(
        v3::HttpQueueSendRequest{Cbor(msg.body), msg.name, msg.wait, msg.timeout}));
  }
  OutFields fields{Val("body", msg.body)};
  if (msg.name) fields.push_back(Text("name", *msg.name));
  if (msg.wait) fields.push_back(Val("wait", Value(*msg.wait)));
  // A plain number: the TypeScript client sends milliseconds as a JS number.
  if (msg.timeout) {
    fields.push_back(Val("timeout", Value(static_cast<unsigned long long>(*msg.timeout))));
  }
  return EncodeObject(fields, encoding);
}

Bytes Encode(const HttpQueueSendResponse& msg, Encoding encoding) {
  if (encoding == Encoding::kBare) {
    return Framed(pc::EncodeHttpQueueSendResponse(
        v3::HttpQueueSendResponse{msg.status, OptCbor(msg.response)}));
  }
  return EncodeObject({Text("status", msg.status), OptVal("response", msg.response)}, encoding);
}

Bytes Encode(const HttpResponseError& msg, Encoding encoding) {
  if (encoding == Encoding::kBare) {
    return Framed(pc::EncodeHttpResponseError(
        v3::HttpResponseError{msg.group, msg.code, msg.message, OptCbor(msg.metadata)}));
  }
  return EncodeObject({Text("group", msg.group), Text("code", msg.code),
                       Text("message", msg.message), OptVal("metadata", msg.metadata)},
                      encoding);
}

Result<HttpActionRequest> DecodeHttpActionRequest(ByteView in, Encoding encoding,
                                                  const CborLimits& limits) {
  if (encoding == Encoding::kBare) {
    KEEL_ASSIGN_OR_RETURN(auto msg, Unframed(pc::DecodeHttpActionRequest(in)));
    KEEL_ASSIGN_OR_RETURN(Value args, ArrayFromCbor(msg.args, "HttpActionRequest.args", limits));
    return HttpActionRequest{std::move(args)};
  }
  KEEL_ASSIGN_OR_RETURN(Value doc, ParseDocument(in, encoding, limits));
  KEEL_ASSIGN_OR_RETURN(InFields f, InFields::Of(doc, "HttpActionRequest"));
  KEEL_ASSIGN_OR_RETURN(Value args, f.Array("args"));
  return HttpActionRequest{std::move(args)};
}

Result<HttpActionResponse> DecodeHttpActionResponse(ByteView in, Encoding encoding,
                                                    const CborLimits& limits) {
  if (encoding == Encoding::kBare) {
    KEEL_ASSIGN_OR_RETURN(auto msg, Unframed(pc::DecodeHttpActionResponse(in)));
    KEEL_ASSIGN_OR_RETURN(Value output, FromCbor(msg.output, "HttpActionResponse.output", limits));
    return HttpActionResponse{std::move(output)};
  }
  KEEL_ASSIGN_OR_RETURN(Value doc, ParseDocument(in, encoding, limits));
  KEEL_ASSIGN_OR_RETURN(InFields f, InFields::Of(doc, "HttpActionResponse"));
  return HttpActionResponse{f.Any("output")};
}

Result<HttpQueueSendRequest> DecodeHttpQueueSendRequest(ByteView in, Encoding encoding,
                                                        const CborLimits& limits) {
  if (encoding == Encoding::kBare) {
    KEEL_ASSIGN_OR_RETURN(auto msg, Unframed(pc::DecodeHttpQueueSendRequest(in)));
    KEEL_ASSIGN_OR_RETURN(Value body, FromCbor(msg.body, "HttpQueueSendRequest.body", limits));
    return HttpQueueSendRequest{std::move(body), msg.name, msg.wait, msg.timeout};
  }
  KEEL_ASSIGN_OR_RETURN(Value doc, ParseDocument(in, encoding, limits));
  KEEL_ASSIGN_OR_RETURN(InFields f, InFields::Of(doc, "HttpQueueSendRequest"));
  HttpQueueSendRequest m;
  m.body = f.Any("body");
  KEEL_ASSIGN_OR_RETURN(m.name, f.OptText("name"));
  KEEL_ASSIGN_OR_RETURN(m.wait, f.OptBool("wait"));
  KEEL_ASSIGN_OR_RETURN(m.timeout, f.OptUint("timeout"));
  return m;
}

Result<HttpQueueSendResponse> DecodeHttpQueueSendResponse(ByteView in, Encoding encoding,
                                                          const CborLimits& limits) {
  if (encoding == Encoding::kBare) {
    KEEL_ASSIGN_OR_RETURN(auto msg, Unframed(pc::DecodeHttpQueueSendResponse(in)));
    KEEL_ASSIGN_OR_RETURN(auto response,
                          FromOptCbor(msg.response, "HttpQueueSendResponse.response", limits));
    return HttpQueueSendResponse{msg.status, std::move(response)};
  }
  KEEL_ASSIGN_OR_RETURN(Value doc, ParseDocument(in, encoding, limits));
  KEEL_ASSIGN_OR_RETURN(InFields f, InFields::Of(doc, "HttpQueueSendResponse"));
  HttpQueueSendResponse m;
  KEEL_ASSIGN_OR_RETURN(m.status, f.Text("status"));
  KEEL_ASSIGN_OR_RETURN(m.response, f.OptAny("response"));
  return m;
}

Result<HttpResponseError> DecodeHttpResponseError(ByteView in, Encoding encoding,
                                                  const CborLimits& limits) {
  if (encoding == Encoding::kBare) {
    KEEL_ASSIGN_OR_RETURN(auto msg, Unframed(pc::DecodeHttpResponseError(in)));
    KEEL_ASSIGN_OR_RETURN(auto metadata,
                          FromOptCbor(msg.metadata, "HttpResponseError.metadata", limits));
    return HttpResponseError{msg.group, msg.code, msg.message, std::move(metadata)};
  }
  KEEL_ASSIGN_OR_RETURN(Value doc, ParseDocument(in, encoding, limits));
  KEEL_ASSIGN_OR_RETURN(InFields f, InFields::Of(doc, "HttpResponseError"));
  HttpResponseError m;
  KEEL_ASSIGN_OR_RETURN(m.group, f.Text("group"));
  KEEL_ASSIGN_OR_RETURN(m.code, f.Text("code"));
  KEEL_ASSIGN_OR_RETURN(m.message, f.Text("message"));
  KEEL_ASSIGN_OR_RETURN(m.metadata, f.OptAny("metadata"));
  return m;
}

}  // namespace keel::wire
