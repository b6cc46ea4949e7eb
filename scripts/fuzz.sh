#!/usr/bin/env bash
# Builds the libFuzzer targets (preset `fuzz`), seeds their corpora from the golden
# vectors (tools/fuzz_corpus.py) and runs each target for FUZZ_SECONDS.
#
#   FUZZ_SECONDS=30   time budget per target
#   FUZZ_JOBS=2       build parallelism
#   FUZZ_TARGETS=...  space-separated subset (default: all four)
#
# Corpora grow in build/fuzz/corpus/<target>/ across runs; crash artifacts go to
# build/fuzz/artifacts/. Exits non-zero if a build step fails or any target finds a crash
# (a trap on a violated property, a sanitizer report, a timeout or an OOM).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

seconds=${FUZZ_SECONDS:-30}
jobs=${FUZZ_JOBS:-2}
read -r -a targets <<<"${FUZZ_TARGETS:-to_rivet_fuzz to_envoy_fuzz client_fuzz value_fuzz}"
build_dir=build/fuzz
corpus_root=$build_dir/corpus
artifacts=$build_dir/artifacts
logs=$build_dir/logs

say() { printf '[fuzz] %s\n' "$*"; }

# Runs a build step quietly; shows its log only when it fails.
step() {
  local name=$1 log=$logs/$1.log
  shift
  say "$name..."
  if ! "$@" >"$log" 2>&1; then
    tail -n 40 "$log"
    say "$name failed (full log: $log)"
    exit 1
  fi
}

# The last libFuzzer status line ("#N  pulse|NEW|REDUCE|DONE  cov: ... exec/s: ...").
status_line() { grep -aE '^#[0-9]+[[:space:]]' "$1" 2>/dev/null | tail -n 1 || true; }
field() { sed -nE "s|.*[[:space:]]$1:?[[:space:]]+([0-9]+).*|\\1|p" <<<"$2"; }
stat() { sed -nE "s/^stat::$1:[[:space:]]*([0-9]+).*/\\1/p" "$2" | tail -n 1; }

mkdir -p "$logs" "$artifacts"
step configure cmake --preset fuzz
# Only the fuzz targets (and what they link): the rest of the tree is not fuzzed.
step build cmake --build --preset fuzz -j "$jobs" --target fuzzers
step corpus python3 tools/fuzz_corpus.py --out "$corpus_root"
sed 's/^/[fuzz]   /' "$logs/corpus.log"

# UBSan only reports by default; make it fatal so libFuzzer records the input.
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-halt_on_error=1:print_stacktrace=1}
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0:detect_leaks=1}

failed=()
summary=()
for target in "${targets[@]}"; do
  binary=$build_dir/fuzz/$target
  corpus=$corpus_root/$target
  log=$logs/$target.log
  [[ -x $binary ]] || { say "$target: missing $binary"; exit 1; }
  mkdir -p "$corpus"  # targets without golden vectors start from an empty corpus
  say "$target: running ${seconds}s on $(find "$corpus" -type f | wc -l) corpus inputs (log: $log)"
  start=$SECONDS
  set +e
  "$binary" "$corpus" -max_total_time="$seconds" -rss_limit_mb=2048 -max_len=65536 \
    -timeout=10 -print_final_stats=1 -artifact_prefix="$artifacts/$target-" >"$log" 2>&1 &
  pid=$!
  # Progress roughly every 10 s from the latest status line.
  while kill -0 "$pid" 2>/dev/null; do
    for _ in 1 2 3 4 5 6 7 8 9 10; do
      sleep 1
      kill -0 "$pid" 2>/dev/null || break
    done
    if kill -0 "$pid" 2>/dev/null; then
      line=$(status_line "$log")
      [[ -n $line ]] && say "  $target +$((SECONDS - start))s: execs $(sed -nE 's/^#([0-9]+).*/\1/p' <<<"$line") cov $(field cov "$line") exec/s $(field exec/s "$line")"
    fi
  done
  wait "$pid"
  rc=$?
  set -e

  line=$(status_line "$log")
  execs=$(stat number_of_executed_units "$log")
  rate=$(stat average_exec_per_sec "$log")
  rss=$(stat peak_rss_mb "$log")
  cov=$(field cov "$line")
  ft=$(field ft "$line")
  corp=$(sed -nE 's/.*corp: ([0-9]+\/[0-9a-zA-Z]+).*/\1/p' <<<"$line")
  elapsed=$((SECONDS - start))
  if [[ $rc -ne 0 ]]; then
    failed+=("$target")
    say "$target: FAILED (exit $rc) after ${elapsed}s"
    grep -aE 'property violated|ERROR: (libFuzzer|AddressSanitizer|UndefinedBehaviorSanitizer)|runtime error:|SUMMARY:|Test unit written to|artifact_prefix' "$log" | head -n 12 | sed 's/^/[fuzz]   /'
    summary+=("$(printf '%-14s FAILED (exit %s), see %s' "$target" "$rc" "$log")")
  else
    say "$target: ok in ${elapsed}s: ${execs:-?} execs, ${rate:-?} exec/s, cov ${cov:-?}, ft ${ft:-?}, corpus ${corp:-?}, peak rss ${rss:-?} MB"
    say "  last status: ${line:-none}"
    summary+=("$(printf '%-14s %10s execs %8s exec/s  cov %6s  ft %6s  %4ss' "$target" "${execs:-?}" "${rate:-?}" "${cov:-?}" "${ft:-?}" "$elapsed")")
  fi
done

say "summary (FUZZ_SECONDS=$seconds):"
for row in "${summary[@]}"; do say "  $row"; done
if [[ ${#failed[@]} -gt 0 ]]; then
  say "crashes found in: ${failed[*]} (artifacts in $artifacts/)"
  say "reproduce one with: $build_dir/fuzz/<target> $artifacts/<target>-crash-<sha1>"
  exit 1
fi
say "no crashes"
