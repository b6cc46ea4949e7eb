#include "base/output_batch.h"

#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace keel {
namespace {

TEST(OutputBatch, FlushesRunWhenTheOutermostBatchEndsInOrder) {
  std::vector<std::string> log;
  EXPECT_FALSE(OutputBatch::Open());
  {
    OutputBatch outer;
    EXPECT_TRUE(OutputBatch::Open());
    OutputBatch::AtEnd([&] { log.push_back("a"); });
    {
      OutputBatch inner;
      OutputBatch::AtEnd([&] { log.push_back("b"); });
    }
    EXPECT_TRUE(log.empty()) << "an inner batch flushed";
    EXPECT_TRUE(OutputBatch::Open());
  }
  EXPECT_EQ(log, (std::vector<std::string>{"a", "b"}));
  EXPECT_FALSE(OutputBatch::Open());
  {
    OutputBatch again;  // nothing left over from the last batch
  }
  EXPECT_EQ(log.size(), 2u);
}

TEST(OutputBatch, AFlushRegisteredByAFlushRunsInTheSameEnd) {
  std::vector<int> log;
  {
    OutputBatch batch;
    OutputBatch::AtEnd([&] {
      EXPECT_TRUE(OutputBatch::Open()) << "a flush's own writes would be held by no one";
      log.push_back(1);
      OutputBatch::AtEnd([&] { log.push_back(2); });
    });
  }
  EXPECT_EQ(log, (std::vector<int>{1, 2}));
  EXPECT_FALSE(OutputBatch::Open());
}

#ifndef __EMSCRIPTEN__  // the wasm build has no threads
TEST(OutputBatch, IsPerThread) {
  OutputBatch batch;
  bool open_elsewhere = true;
  std::thread([&] { open_elsewhere = OutputBatch::Open(); }).join();
  EXPECT_FALSE(open_elsewhere);
}
#endif

TEST(OutputBatchExecutor, EachTaskRunsInItsOwnBatch) {
  auto manual = std::make_unique<ManualExecutor>();
  ManualExecutor& inner = *manual;
  OutputBatchExecutor ex(std::move(manual));
  std::vector<std::string> log;
  ex.Post([&] {
    EXPECT_TRUE(OutputBatch::Open());
    OutputBatch::AtEnd([&] { log.push_back("flush 1"); });
    log.push_back("task 1");
  });
  ex.Post([&] {
    OutputBatch::AtEnd([&] { log.push_back("flush 2"); });
    log.push_back("task 2");
  });
  EXPECT_TRUE(log.empty()) << "Post ran a task synchronously";
  inner.RunAll();
  EXPECT_EQ(log, (std::vector<std::string>{"task 1", "flush 1", "task 2", "flush 2"}));
  EXPECT_FALSE(OutputBatch::Open());
}

}  // namespace
}  // namespace keel
