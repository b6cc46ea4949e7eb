// OutputBatch: gathers what one thread writes to its connections while a batch is open, so
// each connection gets one write (one syscall, one wake-up of its reader) at the end instead
// of one per message.
//
// A task that answers several requests — the continuations of one group commit, the
// runtime's handling of one inbound frame (a KV write, the answer behind it, its ack) —
// opens a batch around its work. A connection that is written to while a batch is open on
// the writing thread registers a flush (AtEnd) and holds the bytes; when the outermost
// batch of that thread ends, the flushes run in registration order. Batches nest; only the
// outermost one flushes. Open a batch only around work that does not block: the held bytes
// wait for its end.
//
// Sans-I/O: this only keeps thread-local bookkeeping; the writing is the connection's
// (keel::net). Thread-safety: per thread by construction.
#pragma once

#include <functional>
#include <memory>

#include "base/executor.h"

namespace keel {

class OutputBatch {
 public:
  OutputBatch();
  ~OutputBatch();  // runs the registered flushes when it is the outermost batch
  OutputBatch(const OutputBatch&) = delete;
  OutputBatch& operator=(const OutputBatch&) = delete;

  // Whether a batch is open on the calling thread.
  static bool Open();
  // Runs `flush` when the calling thread's outermost batch ends (after the flushes
  // registered before it). REQUIRES: Open().
  static void AtEnd(std::function<void()> flush);
};

// An executor whose tasks each run inside an OutputBatch: what a task writes to a connection
// leaves in one piece when the task returns.
class OutputBatchExecutor final : public Executor {
 public:
  explicit OutputBatchExecutor(std::unique_ptr<Executor> inner) : inner_(std::move(inner)) {}
  void Post(std::function<void()> fn) override { inner_->Post(InBatch(std::move(fn))); }
  void Handoff(std::function<void()> fn) override { inner_->Handoff(InBatch(std::move(fn))); }

 private:
  static std::function<void()> InBatch(std::function<void()> fn) {
    return [fn = std::move(fn)] {
      OutputBatch batch;
      fn();
    };
  }

  std::unique_ptr<Executor> inner_;
};

}  // namespace keel
