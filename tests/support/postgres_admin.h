// A plain libpq connection to a test's PostgreSQL server, for what the code under test must
// not do itself: ending its sessions, changing rows behind its back, reading pg_locks.
// Needs libpq (link ${keel_libpq}).
#pragma once

#include <libpq-fe.h>

#include <chrono>
#include <string>
#include <thread>

namespace keel::testing {

// One connection; not thread-safe.
class AdminConnection {
 public:
  explicit AdminConnection(const std::string& conninfo) : conn_(PQconnectdb(conninfo.c_str())) {}
  ~AdminConnection() { PQfinish(conn_); }
  AdminConnection(const AdminConnection&) = delete;
  AdminConnection& operator=(const AdminConnection&) = delete;
  bool ok() const { return PQstatus(conn_) == CONNECTION_OK; }
  // The first column of the first row ("" for a command), or "<error: ...>".
  std::string Query(const std::string& sql) {
    PGresult* result = PQexec(conn_, sql.c_str());
    std::string out;
    if (PQresultStatus(result) == PGRES_TUPLES_OK || PQresultStatus(result) == PGRES_COMMAND_OK) {
      out = PQntuples(result) > 0 ? PQgetvalue(result, 0, 0) : "";
    } else {
      out = std::string("<error: ") + PQerrorMessage(conn_) + ">";
    }
    PQclear(result);
    return out;
  }
  // Terminates the client sessions matching `where` (other than this one) and waits until
  // they are gone, so their sockets have been closed. Returns how many it terminated.
  int Terminate(const std::string& where) {
    std::string sessions =
        "FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> "
        "pg_backend_pid() AND (" +
        where + ")";
    std::string killed = Query("SELECT count(pg_terminate_backend(pid)) " + sessions);
    for (int i = 0; i < 500 && Query("SELECT count(*) " + sessions) != "0"; ++i) {
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return killed.starts_with("<") ? -1 : std::stoi(killed);
  }

 private:
  PGconn* conn_;
};

}  // namespace keel::testing
