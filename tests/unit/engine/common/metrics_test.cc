#include "engine/common/metrics.h"

#include <cmath>
#include <limits>
#include <string>
#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace keel::engine {
namespace {

TEST(Metrics, EmptyRegistryRendersNothing) { EXPECT_EQ(MetricsRegistry().Render(), ""); }

TEST(Metrics, CounterRendersHelpTypeAndValue) {
  MetricsRegistry uut;
  Counter& requests = uut.AddCounter("keel_kv_requests_total", "KV requests answered.");
  requests.Inc();
  requests.Inc(41);
  EXPECT_EQ(requests.Value(), 42u);
  EXPECT_EQ(uut.Render(),
            "# HELP keel_kv_requests_total KV requests answered.\n"
            "# TYPE keel_kv_requests_total counter\n"
            "keel_kv_requests_total 42\n");
}

TEST(Metrics, GaugesWithLabelsShareOneFamily) {
  MetricsRegistry uut;
  Gauge& running = uut.AddGauge("keel_actors", "Actors by state.", {{"state", "running"}});
  Gauge& sleeping = uut.AddGauge("keel_actors", "Actors by state.", {{"state", "sleeping"}});
  running.Set(3);
  sleeping.Inc();
  sleeping.Inc();
  sleeping.Dec();
  running.Add(0.5);
  EXPECT_EQ(uut.Render(),
            "# HELP keel_actors Actors by state.\n"
            "# TYPE keel_actors gauge\n"
            "keel_actors{state=\"running\"} 3.5\n"
            "keel_actors{state=\"sleeping\"} 1\n");
}

TEST(Metrics, RegisteringTheSameSeriesAgainReturnsIt) {
  MetricsRegistry uut;
  Counter& a = uut.AddCounter("c_total", "h", {{"k", "v"}});
  Counter& b = uut.AddCounter("c_total", "h", {{"k", "v"}});
  EXPECT_EQ(&a, &b);
  Counter& other = uut.AddCounter("c_total", "h", {{"k", "w"}});
  EXPECT_NE(&a, &other);
}

TEST(Metrics, FamiliesRenderInRegistrationOrder) {
  MetricsRegistry uut;
  uut.AddGauge("zeta", "z");
  uut.AddCounter("alpha_total", "a");
  EXPECT_EQ(uut.Render(),
            "# HELP zeta z\n# TYPE zeta gauge\nzeta 0\n"
            "# HELP alpha_total a\n# TYPE alpha_total counter\nalpha_total 0\n");
}

TEST(Metrics, HistogramRendersCumulativeBucketsSumAndCount) {
  MetricsRegistry uut;
  Histogram& h =
      uut.AddHistogram("keel_storage_commit_seconds", "Commit latency.", {0.001, 0.01, 0.1});
  h.Observe(0.0005);  // le 0.001
  h.Observe(0.001);   // bounds are inclusive: le 0.001
  h.Observe(0.05);    // le 0.1
  h.Observe(2);       // +Inf
  EXPECT_EQ(h.Count(), 4u);
  EXPECT_EQ(uut.Render(),
            "# HELP keel_storage_commit_seconds Commit latency.\n"
            "# TYPE keel_storage_commit_seconds histogram\n"
            "keel_storage_commit_seconds_bucket{le=\"0.001\"} 2\n"
            "keel_storage_commit_seconds_bucket{le=\"0.01\"} 2\n"
            "keel_storage_commit_seconds_bucket{le=\"0.1\"} 3\n"
            "keel_storage_commit_seconds_bucket{le=\"+Inf\"} 4\n"
            "keel_storage_commit_seconds_sum 2.0515\n"
            "keel_storage_commit_seconds_count 4\n");
}

TEST(Metrics, HistogramLabelsComeBeforeLe) {
  MetricsRegistry uut;
  Histogram& h = uut.AddHistogram("lat_seconds", "L.", {1, 2.5}, {{"backend", "rocksdb"}});
  h.Observe(2);
  EXPECT_EQ(uut.Render(),
            "# HELP lat_seconds L.\n"
            "# TYPE lat_seconds histogram\n"
            "lat_seconds_bucket{backend=\"rocksdb\",le=\"1\"} 0\n"
            "lat_seconds_bucket{backend=\"rocksdb\",le=\"2.5\"} 1\n"
            "lat_seconds_bucket{backend=\"rocksdb\",le=\"+Inf\"} 1\n"
            "lat_seconds_sum{backend=\"rocksdb\"} 2\n"
            "lat_seconds_count{backend=\"rocksdb\"} 1\n");
}

TEST(Metrics, HistogramIgnoresNan) {
  Histogram uut({1});
  uut.Observe(std::nan(""));
  uut.Observe(-5);
  EXPECT_EQ(uut.Count(), 1u);
  EXPECT_EQ(uut.BucketCount(0), 1u);
  EXPECT_EQ(uut.Sum(), -5);
}

TEST(Metrics, StorageLatencyBucketsAreIncreasingSeconds) {
  auto bounds = StorageLatencyBuckets();
  ASSERT_FALSE(bounds.empty());
  for (size_t i = 1; i < bounds.size(); ++i) EXPECT_LT(bounds[i - 1], bounds[i]);
  EXPECT_EQ(bounds.front(), 0.0001);
  EXPECT_EQ(bounds.back(), 10);
}

TEST(Metrics, HelpAndLabelValuesAreEscaped) {
  MetricsRegistry uut;
  uut.AddGauge("g", "line one\nback\\slash \"quotes\" stay", {{"ns", "a\"b\\c\nd"}, {"empty", ""}});
  EXPECT_EQ(uut.Render(),
            "# HELP g line one\\nback\\\\slash \"quotes\" stay\n"
            "# TYPE g gauge\n"
            "g{ns=\"a\\\"b\\\\c\\nd\",empty=\"\"} 0\n");
}

TEST(Metrics, GaugeValuesUsePrometheusSpellings) {
  MetricsRegistry uut;
  Gauge& g = uut.AddGauge("g", "h", {{"i", "0"}});
  Gauge& inf = uut.AddGauge("g", "h", {{"i", "1"}});
  Gauge& nan = uut.AddGauge("g", "h", {{"i", "2"}});
  g.Set(-0.25);
  inf.Set(std::numeric_limits<double>::infinity());
  nan.Set(std::nan(""));
  EXPECT_EQ(uut.Render(),
            "# HELP g h\n# TYPE g gauge\n"
            "g{i=\"0\"} -0.25\ng{i=\"1\"} +Inf\ng{i=\"2\"} NaN\n");
}

TEST(Metrics, ConcurrentUpdatesAreNotLost) {
  MetricsRegistry uut;
  Counter& c = uut.AddCounter("c_total", "h");
  Gauge& g = uut.AddGauge("g", "h");
  Histogram& h = uut.AddHistogram("h_seconds", "h", {0.5});
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        c.Inc();
        g.Add(1);
        h.Observe(1);
        if (i % 1000 == 0) (void)uut.Render();
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(c.Value(), 40000u);
  EXPECT_EQ(g.Value(), 40000);
  EXPECT_EQ(h.Count(), 40000u);
  EXPECT_EQ(h.Sum(), 40000);
}

using MetricsDeathTest = ::testing::Test;

TEST(MetricsDeathTest, InvalidNamesAndConflictingRegistrationsAbort) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_DEATH(MetricsRegistry().AddCounter("1bad", "h"), "invalid metric name");
  EXPECT_DEATH(MetricsRegistry().AddCounter("bad-name", "h"), "invalid metric name");
  EXPECT_DEATH(MetricsRegistry().AddGauge("g", "h", {{"__reserved", "x"}}), "invalid label name");
  EXPECT_DEATH(MetricsRegistry().AddGauge("g", "h", {{"a", "x"}, {"a", "y"}}), "duplicate label");
  EXPECT_DEATH(MetricsRegistry().AddHistogram("h", "h", {1}, {{"le", "x"}}), "reserved");
  EXPECT_DEATH(MetricsRegistry().AddHistogram("h", "h", {2, 1}), "strictly increasing");
  EXPECT_DEATH(MetricsRegistry().AddHistogram("h", "h", {}), "at least one");
  EXPECT_DEATH(
      {
        MetricsRegistry r;
        r.AddCounter("m", "h");
        r.AddGauge("m", "h");
      },
      "another type");
  EXPECT_DEATH(
      {
        MetricsRegistry r;
        r.AddGauge("m", "h", {{"a", "1"}});
        r.AddGauge("m", "h", {{"b", "1"}});
      },
      "other label names");
}

}  // namespace
}  // namespace keel::engine
