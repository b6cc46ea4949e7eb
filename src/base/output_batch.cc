#include "base/output_batch.h"

#include <utility>
#include <vector>

namespace keel {

namespace {

struct ThreadBatch {
  int depth = 0;
  std::vector<std::function<void()>> flushes;
};

thread_local ThreadBatch t_batch;

}  // namespace

OutputBatch::OutputBatch() { ++t_batch.depth; }

OutputBatch::~OutputBatch() {
  if (t_batch.depth > 1) {
    --t_batch.depth;
    return;
  }
  // Still open while the flushes run, so what a flush writes is not held again; a flush
  // registered meanwhile runs in this same loop.
  for (size_t i = 0; i < t_batch.flushes.size(); ++i) {
    auto flush = std::move(t_batch.flushes[i]);
    flush();
  }
  t_batch.flushes.clear();
  t_batch.depth = 0;
}

bool OutputBatch::Open() { return t_batch.depth > 0; }

void OutputBatch::AtEnd(std::function<void()> flush) { t_batch.flushes.push_back(std::move(flush)); }

}  // namespace keel
