#include "runtime/sql.h"

#include <algorithm>
#include <cctype>
#include <limits>
#include <utility>

#include "envoy/envoy_client.h"
#include "runtime/core.h"
#include "sqlite/wire.h"

namespace keel::runtime {
namespace {

namespace latest = protocol::envoy::latest;

[[noreturn]] void Throw(const Error& error) {
  throw ActorError(error.group(), error.code(), error.message());
}

bool IsExecutionLayerCode(std::string_view code) {
  static constexpr std::string_view kCodes[] = {"prepare_failed",    "execution_failed",
                                                "invalid_sql",       "invalid_bind_parameter",
                                                "statement_timeout", "closed",
                                                "sql_too_large",     "too_many_params",
                                                "bind_too_large",    "response_too_large"};
  return std::find(std::begin(kCodes), std::end(kCodes), code) != std::end(kCodes);
}

// Remote SQL (§8.7): requests pipelined on the envoy connection. The engine runs one
// actor's statements in arrival order and the socket keeps that order, so calls need no
// serialisation here.
class RemoteSqlBackend final : public SqlBackend {
 public:
  explicit RemoteSqlBackend(SqlBackendContext context) : c_(std::move(context)) {}

  SqliteBackendKind kind() const override { return SqliteBackendKind::kRemote; }

  Task<sql::QueryResult> Exec(std::string sql) override {
    latest::SqliteExecRequest req;
    req.namespace_id = c_.namespace_name;
    req.actor_id = c_.actor_id;
    req.generation = c_.generation;
    req.sql = std::move(sql);
    Completion<Result<latest::SqliteExecResponse>> done;
    c_.client->SqliteExec(std::move(req), done.Resolver());
    Result<latest::SqliteExecResponse> r = co_await done;
    if (!r.ok()) Throw(r.error());
    if (const auto* err = r->get_if<latest::SqliteErrorResponse>()) {
      Throw(ClassifyRemoteSqlError(err->message));
    }
    co_return sql::FromWire(r->get_if<latest::SqliteExecOk>()->result);
  }

  Task<sql::ExecuteResult> Execute(std::string sql, std::optional<sql::Params> params,
                                   bool write) override {
    if (write) {
      latest::SqliteExecuteWriteRequest req;
      req.namespace_id = c_.namespace_name;
      req.actor_id = c_.actor_id;
      req.generation = c_.generation;
      req.sql = std::move(sql);
      req.params = sql::ToWireParams(params);
      Completion<Result<latest::SqliteExecuteWriteResponse>> done;
      c_.client->SqliteExecuteWrite(std::move(req), done.Resolver());
      Result<latest::SqliteExecuteWriteResponse> r = co_await done;
      if (!r.ok()) Throw(r.error());
      if (const auto* err = r->get_if<latest::SqliteErrorResponse>()) {
        Throw(ClassifyRemoteSqlError(err->message));
      }
      co_return sql::FromWire(r->get_if<latest::SqliteExecuteWriteOk>()->result);
    }
    latest::SqliteExecuteRequest req;
    req.namespace_id = c_.namespace_name;
    req.actor_id = c_.actor_id;
    req.generation = c_.generation;
    req.sql = std::move(sql);
    req.params = sql::ToWireParams(params);
    Completion<Result<latest::SqliteExecuteResponse>> done;
    c_.client->SqliteExecute(std::move(req), done.Resolver());
    Result<latest::SqliteExecuteResponse> r = co_await done;
    if (!r.ok()) Throw(r.error());
    if (const auto* err = r->get_if<latest::SqliteErrorResponse>()) {
      Throw(ClassifyRemoteSqlError(err->message));
    }
    co_return sql::FromWire(r->get_if<latest::SqliteExecuteOk>()->result);
  }

  // The engine's executor lives as long as the actor's generation runs (§8.5): nothing to
  // release here.
  Task<void> Close() override { co_return; }

 private:
  SqlBackendContext c_;
};

}  // namespace

Result<SqliteBackendChoice> ParseSqliteBackendChoice(std::string_view text) {
  std::string lower(text);
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  if (lower == "auto" || lower.empty()) return SqliteBackendChoice::kAuto;
  if (lower == "local") return SqliteBackendChoice::kLocal;
  if (lower == "remote") return SqliteBackendChoice::kRemote;
  return Unexpected{Error{"config", "invalid_sqlite_backend",
                          "SQLite backend must be auto, local or remote, got `" +
                              std::string(text) + "`"}};
}

std::string_view SqliteBackendName(SqliteBackendKind kind) {
  return kind == SqliteBackendKind::kLocal ? "local" : "remote";
}

std::unique_ptr<SqlBackend> MakeRemoteSqlBackend(const SqlBackendContext& context) {
  return std::make_unique<RemoteSqlBackend>(context);
}

Error ClassifyRemoteSqlError(std::string_view text) {
  Error parsed = Error::FromString(text);
  if (parsed.group() == "sqlite") {
    if (parsed.code() == "remote_fence_mismatch" || parsed.code() == "remote_unavailable" ||
        parsed.code() == "commit_too_large" || IsExecutionLayerCode(parsed.code())) {
      return parsed;
    }
  }
  return Error{"sqlite", "remote_execution_failed",
               "Remote SQLite execution failed: " + std::string(text)};
}

// ---- SqlDatabase ----

void SqlDatabase::CheckUsable(std::string_view sql,
                              const std::optional<sql::Params>& params) const {
  if (closed_) throw ActorError("sqlite", "closed", "Database is closed.");
  if (std::optional<Error> e = sql::CheckLimits(sql, params)) Throw(*e);
  if (std::optional<Error> e = sql::CheckUtf8(sql, params)) Throw(*e);
}

Task<sql::QueryResult> SqlDatabase::Exec(std::string sql) {
  CheckUsable(sql, std::nullopt);
  return backend_->Exec(std::move(sql));
}

Task<sql::ExecuteResult> SqlDatabase::Execute(std::string sql, std::optional<sql::Params> params) {
  CheckUsable(sql, params);
  return backend_->Execute(std::move(sql), std::move(params), write_mode());
}

Task<sql::ExecuteResult> SqlDatabase::ExecuteWrite(std::string sql,
                                                   std::optional<sql::Params> params) {
  CheckUsable(sql, params);
  return backend_->Execute(std::move(sql), std::move(params), true);
}

Task<void> SqlDatabase::Close() {
  if (closed_) co_return;
  closed_ = true;
  co_await backend_->Close();
}

// ---- Values ----

Result<sql::Value> ToSqlValue(const Value& value, std::string_view name) {
  auto invalid = [&](std::string_view why) {
    return Unexpected{Error{"sqlite", "invalid_bind_parameter",
                            "Invalid SQLite bind parameter " + std::string(name) + ": " +
                                std::string(why)}};
  };
  switch (value.kind()) {
    case Value::Kind::kUndefined:
    case Value::Kind::kNull:
      return sql::Value{sql::Null{}};
    case Value::Kind::kBool:
      return sql::Value{int64_t{value.as_bool() ? 1 : 0}};
    case Value::Kind::kInt:
      return sql::Value{value.as_int()};
    case Value::Kind::kUint:
      return invalid("integer above 9223372036854775807");
    case Value::Kind::kFloat:
      return sql::Value{value.as_double()};
    case Value::Kind::kText:
      return sql::Value{value.as_text()};
    case Value::Kind::kBytes:
      return sql::Value{sql::Blob{value.as_bytes()}};
    case Value::Kind::kArray:
    case Value::Kind::kMap:
      return invalid("unsupported type " + std::string(KindName(value.kind())));
  }
  return invalid("unsupported type");
}

Value FromSqlValue(const sql::Value& value) {
  struct Visitor {
    Value operator()(const sql::Null&) const { return Value(nullptr); }
    Value operator()(int64_t v) const { return Value(v); }
    Value operator()(double v) const { return Value(v); }
    Value operator()(const std::string& v) const { return Value(v); }
    Value operator()(const sql::Blob& v) const { return Value(v.bytes); }
  };
  return std::visit(Visitor{}, value);
}

Result<sql::Params> ToSqlParams(const Value::Array& args) {
  sql::Params out;
  out.reserve(args.size());
  for (size_t i = 0; i < args.size(); ++i) {
    auto v = ToSqlValue(args[i], "#" + std::to_string(i + 1));
    if (!v.ok()) return Unexpected{v.error()};
    out.push_back(std::move(*v));
  }
  return out;
}

namespace {

// SQLite's identifier characters (tokenize.c IdChar): letters, digits, '_', '$' and every
// byte of a multi-byte UTF-8 sequence. A name starts with one of them after ':', '@', '$'.
bool IsNameChar(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '$' ||
         static_cast<unsigned char>(c) >= 0x80;
}

}  // namespace

Result<sql::Params> BindNamed(std::string_view text, const Value& named) {
  auto invalid = [](std::string why) {
    return Unexpected{
        Error{"sqlite", "invalid_bind_parameter", "Invalid SQLite bind parameter " + why}};
  };
  if (!named.is_map()) return invalid("bindings: named bindings must be an object");
  // SQLite numbers parameters by their full name, prefix included: `:a` and `@a` are two
  // parameters (both take the value of `a`).
  std::vector<std::string> order;
  size_t i = 0;
  const size_t n = text.size();
  while (i < n) {
    const char c = text[i];
    if (c == '\'' || c == '"' || c == '`' || c == '[') {
      const char close = c == '[' ? ']' : c;
      ++i;
      while (i < n) {
        if (text[i] == close) {
          // '' and "" escape the quote inside a literal / identifier.
          if (close != ']' && i + 1 < n && text[i + 1] == close) {
            i += 2;
            continue;
          }
          break;
        }
        ++i;
      }
      ++i;
      continue;
    }
    if (c == '-' && i + 1 < n && text[i + 1] == '-') {
      while (i < n && text[i] != '\n') ++i;
      continue;
    }
    if (c == '/' && i + 1 < n && text[i + 1] == '*') {
      i += 2;
      while (i + 1 < n && !(text[i] == '*' && text[i + 1] == '/')) ++i;
      i += 2;
      continue;
    }
    if (c == '?') return invalid("bindings: `?` placeholders cannot be mixed with named bindings");
    if ((c == ':' || c == '@' || c == '$') && i + 1 < n && IsNameChar(text[i + 1])) {
      size_t j = i + 1;
      while (j < n && IsNameChar(text[j])) ++j;
      std::string name(text.substr(i, j - i));
      if (std::find(order.begin(), order.end(), name) == order.end()) order.push_back(name);
      i = j;
      continue;
    }
    ++i;
  }
  sql::Params out;
  out.reserve(order.size());
  for (const std::string& prefixed : order) {
    const std::string name = prefixed.substr(1);
    const Value* v = named.Find(name);
    if (v == nullptr) return invalid(name + ": missing named binding");
    auto converted = ToSqlValue(*v, name);
    if (!converted.ok()) return Unexpected{converted.error()};
    out.push_back(std::move(*converted));
  }
  return out;
}

Value RowsToObjects(const std::vector<std::string>& columns, const std::vector<sql::Row>& rows) {
  Value::Array out;
  out.reserve(rows.size());
  for (const sql::Row& row : rows) {
    Value obj = Value(Value::Map{});
    for (size_t c = 0; c < row.size() && c < columns.size(); ++c) {
      obj.Set(columns[c], FromSqlValue(row[c]));
    }
    out.push_back(std::move(obj));
  }
  return Value(std::move(out));
}

}  // namespace keel::runtime
