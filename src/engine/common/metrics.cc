#include "engine/common/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <system_error>

namespace keel::engine {
namespace {

[[noreturn]] void MetricsBug(const std::string& what) {
  std::fprintf(stderr, "keel: metrics registration bug: %s\n", what.c_str());
  std::abort();
}

bool IsMetricName(std::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
    bool digit = c >= '0' && c <= '9';
    if (!(alpha || (i > 0 && digit))) return false;
  }
  return true;
}

bool IsLabelName(std::string_view name) {
  if (name.empty() || name.starts_with("__")) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
    bool digit = c >= '0' && c <= '9';
    if (!(alpha || (i > 0 && digit))) return false;
  }
  return true;
}

// HELP text escaping: backslash and newline.
std::string EscapeHelp(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

// Label value escaping: backslash, double quote and newline.
std::string EscapeLabelValue(std::string_view text) {
  std::string out;
  for (char c : text) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

// Shortest text that reads back as the same double; Prometheus spellings for Inf/NaN.
std::string FormatDouble(double value) {
  if (std::isnan(value)) return "NaN";
  if (std::isinf(value)) return value > 0 ? "+Inf" : "-Inf";
  char buf[64];
  auto [ptr, ec] = std::to_chars(buf, buf + sizeof(buf), value);
  if (ec != std::errc()) return "NaN";
  return std::string(buf, ptr);
}

// `{a="x",b="y"}` (with `extra` appended last), or "" with no labels at all.
std::string FormatLabels(const MetricLabels& labels, std::string_view extra_name = {},
                         std::string_view extra_value = {}) {
  if (labels.empty() && extra_name.empty()) return "";
  std::string out = "{";
  bool first = true;
  for (const auto& [name, value] : labels) {
    if (!first) out += ',';
    first = false;
    out += name + "=\"" + EscapeLabelValue(value) + "\"";
  }
  if (!extra_name.empty()) {
    if (!first) out += ',';
    out += std::string(extra_name) + "=\"" + EscapeLabelValue(extra_value) + "\"";
  }
  out += '}';
  return out;
}

void CheckBounds(const std::vector<double>& bounds) {
  if (bounds.empty()) MetricsBug("histogram needs at least one bucket bound");
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (!std::isfinite(bounds[i])) MetricsBug("histogram bucket bounds must be finite");
    if (i > 0 && !(bounds[i - 1] < bounds[i])) {
      MetricsBug("histogram bucket bounds must be strictly increasing");
    }
  }
}

}  // namespace

Histogram::Histogram(std::vector<double> upper_bounds)
    : upper_bounds_(std::move(upper_bounds)),
      buckets_(new std::atomic<uint64_t>[upper_bounds_.size() + 1]) {
  CheckBounds(upper_bounds_);
  for (size_t i = 0; i <= upper_bounds_.size(); ++i) buckets_[i].store(0);
}

void Histogram::Observe(double value) {
  if (std::isnan(value)) return;
  size_t i = static_cast<size_t>(
      std::lower_bound(upper_bounds_.begin(), upper_bounds_.end(), value) - upper_bounds_.begin());
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(value, std::memory_order_relaxed);
}

uint64_t Histogram::Count() const {
  uint64_t total = 0;
  for (size_t i = 0; i <= upper_bounds_.size(); ++i) total += BucketCount(i);
  return total;
}

std::vector<double> StorageLatencyBuckets() {
  return {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
          0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};
}

struct MetricsRegistry::Family {
  struct Series {
    MetricLabels labels;
    std::unique_ptr<Counter> counter;
    std::unique_ptr<Gauge> gauge;
    std::unique_ptr<Histogram> histogram;
  };
  std::string name;
  std::string help;
  Type type;
  std::vector<double> upper_bounds;  // histograms only
  std::vector<Series> series;
};

MetricsRegistry::MetricsRegistry() = default;
MetricsRegistry::~MetricsRegistry() = default;

void* MetricsRegistry::AddSeries(Type type, std::string_view name, std::string_view help,
                                 MetricLabels labels, const std::vector<double>* upper_bounds) {
  std::string n(name);
  if (!IsMetricName(name)) MetricsBug("invalid metric name '" + n + "'");
  for (size_t i = 0; i < labels.size(); ++i) {
    const std::string& label = labels[i].first;
    if (!IsLabelName(label)) MetricsBug(n + ": invalid label name '" + label + "'");
    if (type == Type::kHistogram && label == "le") MetricsBug(n + ": label 'le' is reserved");
    for (size_t j = 0; j < i; ++j) {
      if (labels[j].first == label) MetricsBug(n + ": duplicate label name '" + label + "'");
    }
  }
  if (upper_bounds != nullptr) CheckBounds(*upper_bounds);

  std::lock_guard<std::mutex> lock(mu_);
  Family* family = nullptr;
  for (auto& f : families_) {
    if (f->name == name) family = f.get();
  }
  if (family == nullptr) {
    families_.push_back(std::make_unique<Family>());
    family = families_.back().get();
    family->name = n;
    family->help = std::string(help);
    family->type = type;
    if (upper_bounds != nullptr) family->upper_bounds = *upper_bounds;
  } else {
    if (family->type != type) MetricsBug(n + ": registered again with another type");
    if (family->help != help) MetricsBug(n + ": registered again with another help text");
    if (upper_bounds != nullptr && family->upper_bounds != *upper_bounds) {
      MetricsBug(n + ": registered again with other bucket bounds");
    }
    // Label names must match the family's (set by the first series) in the same order.
    const MetricLabels& first = family->series.front().labels;
    bool same_names = first.size() == labels.size();
    for (size_t i = 0; same_names && i < labels.size(); ++i) {
      same_names = first[i].first == labels[i].first;
    }
    if (!same_names) MetricsBug(n + ": registered again with other label names");
    for (auto& s : family->series) {
      if (s.labels == labels) {
        if (s.counter) return s.counter.get();
        if (s.gauge) return s.gauge.get();
        return s.histogram.get();
      }
    }
  }
  Family::Series series;
  series.labels = std::move(labels);
  void* out = nullptr;
  switch (type) {
    case Type::kCounter:
      series.counter = std::make_unique<Counter>();
      out = series.counter.get();
      break;
    case Type::kGauge:
      series.gauge = std::make_unique<Gauge>();
      out = series.gauge.get();
      break;
    case Type::kHistogram:
      series.histogram = std::make_unique<Histogram>(family->upper_bounds);
      out = series.histogram.get();
      break;
  }
  family->series.push_back(std::move(series));
  return out;
}

Counter& MetricsRegistry::AddCounter(std::string_view name, std::string_view help,
                                     MetricLabels labels) {
  return *static_cast<Counter*>(AddSeries(Type::kCounter, name, help, std::move(labels), nullptr));
}

Gauge& MetricsRegistry::AddGauge(std::string_view name, std::string_view help,
                                 MetricLabels labels) {
  return *static_cast<Gauge*>(AddSeries(Type::kGauge, name, help, std::move(labels), nullptr));
}

Histogram& MetricsRegistry::AddHistogram(std::string_view name, std::string_view help,
                                         std::vector<double> upper_bounds, MetricLabels labels) {
  return *static_cast<Histogram*>(
      AddSeries(Type::kHistogram, name, help, std::move(labels), &upper_bounds));
}

std::string MetricsRegistry::Render() const {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  for (const auto& family : families_) {
    const char* type = family->type == Type::kCounter ? "counter"
                       : family->type == Type::kGauge ? "gauge"
                                                      : "histogram";
    out += "# HELP " + family->name + " " + EscapeHelp(family->help) + "\n";
    out += "# TYPE " + family->name + " " + type + "\n";
    for (const auto& s : family->series) {
      if (s.counter) {
        out +=
            family->name + FormatLabels(s.labels) + " " + std::to_string(s.counter->Value()) + "\n";
      } else if (s.gauge) {
        out += family->name + FormatLabels(s.labels) + " " + FormatDouble(s.gauge->Value()) + "\n";
      } else {
        const Histogram& h = *s.histogram;
        uint64_t cumulative = 0;
        for (size_t i = 0; i <= h.upper_bounds().size(); ++i) {
          cumulative += h.BucketCount(i);
          std::string le = i < h.upper_bounds().size() ? FormatDouble(h.upper_bounds()[i]) : "+Inf";
          out += family->name + "_bucket" + FormatLabels(s.labels, "le", le) + " " +
                 std::to_string(cumulative) + "\n";
        }
        out += family->name + "_sum" + FormatLabels(s.labels) + " " + FormatDouble(h.Sum()) + "\n";
        out += family->name + "_count" + FormatLabels(s.labels) + " " + std::to_string(cumulative) +
               "\n";
      }
    }
  }
  return out;
}

}  // namespace keel::engine
