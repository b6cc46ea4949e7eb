// A small Prometheus registry for keel-engine's /metrics endpoint: counters, gauges and
// fixed-bucket histograms, each optionally with a fixed label set, rendered in the text
// exposition format (version 0.0.4). No third-party library.
//
// Thread-safety: everything is thread-safe. Registration and Render take a mutex;
// Counter::Inc, Gauge::Set/Add and Histogram::Observe are lock-free relaxed atomics, so
// hold on to the returned reference and update it on the hot path. Series live as long
// as the registry; references stay valid until it is destroyed.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace keel::engine {

// Label name → value, fixed when the series is registered, rendered in this order.
using MetricLabels = std::vector<std::pair<std::string, std::string>>;

// A monotonically increasing count.
class Counter {
 public:
  void Inc(uint64_t n = 1) { value_.fetch_add(n, std::memory_order_relaxed); }
  uint64_t Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<uint64_t> value_{0};
};

// A value that goes up and down.
class Gauge {
 public:
  void Set(double value) { value_.store(value, std::memory_order_relaxed); }
  void Add(double delta) { value_.fetch_add(delta, std::memory_order_relaxed); }
  void Inc() { Add(1); }
  void Dec() { Add(-1); }
  double Value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0};
};

// Observations counted into fixed buckets (upper bounds, inclusive), plus sum and count.
class Histogram {
 public:
  // REQUIRES: `upper_bounds` non-empty, finite, strictly increasing (aborts otherwise).
  explicit Histogram(std::vector<double> upper_bounds);

  // Counts `value` in the first bucket whose bound is >= value (or +Inf). NaN is ignored.
  void Observe(double value);

  const std::vector<double>& upper_bounds() const { return upper_bounds_; }
  // Non-cumulative count of bucket `i`; i == upper_bounds().size() is the +Inf bucket.
  uint64_t BucketCount(size_t i) const { return buckets_[i].load(std::memory_order_relaxed); }
  double Sum() const { return sum_.load(std::memory_order_relaxed); }
  uint64_t Count() const;

 private:
  std::vector<double> upper_bounds_;
  std::unique_ptr<std::atomic<uint64_t>[]> buckets_;  // upper_bounds_.size() + 1
  std::atomic<double> sum_{0};
};

// Bounds in seconds for storage commit latency: 100 µs to 10 s.
std::vector<double> StorageLatencyBuckets();

class MetricsRegistry {
 public:
  MetricsRegistry();
  ~MetricsRegistry();
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  // Registers a series, or returns the one already registered under the same name and
  // labels. All series of one name share one type, help text (and, for histograms,
  // bounds). Names and label names are chosen by code, not input: an invalid name
  // ([a-zA-Z_:][a-zA-Z0-9_:]* for metrics, [a-zA-Z_][a-zA-Z0-9_]* not starting with "__"
  // for labels, "le" reserved for histograms), a duplicate label name, or a conflict
  // with an earlier registration is a programming bug and aborts. Label values may be
  // any text; they are escaped when rendered.
  Counter& AddCounter(std::string_view name, std::string_view help, MetricLabels labels = {});
  Gauge& AddGauge(std::string_view name, std::string_view help, MetricLabels labels = {});
  Histogram& AddHistogram(std::string_view name, std::string_view help,
                          std::vector<double> upper_bounds, MetricLabels labels = {});

  // The text exposition format: per metric name, in registration order, `# HELP` and
  // `# TYPE` lines, then one sample line per series in registration order (histograms:
  // cumulative `_bucket{le=...}` lines ending with le="+Inf", then `_sum` and `_count`).
  // Each series is read atomically per value, not as a whole: a histogram's `_count`
  // always equals its +Inf bucket, but `_sum` may include an observation the buckets
  // do not yet show.
  std::string Render() const;

 private:
  struct Family;
  enum class Type { kCounter, kGauge, kHistogram };
  void* AddSeries(Type type, std::string_view name, std::string_view help, MetricLabels labels,
                  const std::vector<double>* upper_bounds);

  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Family>> families_;
};

}  // namespace keel::engine
