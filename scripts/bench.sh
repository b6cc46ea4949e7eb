#!/usr/bin/env bash
# Keel's process-level benchmark (docs/benchmarks.md):
#   1. builds the `release` preset targets keel-engine, keel-examples, keel-bench-runtime and
#      keel_bench,
#   2. runs keel_bench (real engine + runtime processes, W1-W7 and the floors), then W1
#      again without the disk (its data on tmpfs, /dev/shm), with blocking clients and with
#      clients that poll (--client-poll-us 300): the issue's tmpfs target, against DO's
#      non-durable run,
#   3. with --anchors, runs the Durable Objects (workerd) and Rivet anchors in the same run
#      (BENCHMARKS.md: the figures that count are ratios measured in one run),
#   4. writes one combined JSON with Keel vs DO and Keel vs Rivet ratios.
# Progress goes to stderr; the combined JSON is written to the output file and printed on
# stdout.
#
#   scripts/bench.sh [--anchors] [--quick] [--w4-large] [--skip-build] [--out FILE]
#                    [--envoy-transport unix|tcp|in-process]
#
# --envoy-transport is keel_bench's: how its native runtimes reach the engine (default: the
# engine's Unix socket; in-process: the engine inside the runtime's process, `--with-engine`).
#
# Environment:
#   KEEL_BENCH_BUILD_DIR  build directory (default build/release, the preset's)
#   KEEL_JOBS             build parallelism (default nproc)
#   KEEL_ANCHORS_DIR      the anchors (default ../shared/anchors, else ./shared/anchors)
#   KEEL_BENCH_WORK       where anchor copies (with their node_modules) and outputs live
#                         (default ~/.cache/keel-bench); the shared anchor directories are
#                         never written to.
#
# Anchor letters (their REPORT.md / results.json) map to BENCHMARKS.md ids as:
#   Durable Objects: a=W1, b=W2, c=W3 (cold start) and W6 (wake after eviction), d=W4,
#                    e=W5, f=W7.
#   Rivet:           a=W1, b=W2, c=W3, d=W4, e=W5, f=W6, g=W7.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

log() { printf '[bench.sh %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

ANCHORS=0
QUICK=0
W4_LARGE=0
SKIP_BUILD=0
OUT=""
TRANSPORT=""
while [ $# -gt 0 ]; do
  case "$1" in
    --anchors) ANCHORS=1 ;;
    --quick) QUICK=1 ;;
    --w4-large) W4_LARGE=1 ;;
    --skip-build) SKIP_BUILD=1 ;;
    --out) OUT="$2"; shift ;;
    --envoy-transport) TRANSPORT="$2"; shift ;;
    -h|--help) sed -n 2,29p "$0"; exit 0 ;;
    *) echo "bench.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done

BUILD_DIR="${KEEL_BENCH_BUILD_DIR:-$ROOT/build/release}"
JOBS="${KEEL_JOBS:-$(nproc)}"
WORK="${KEEL_BENCH_WORK:-$HOME/.cache/keel-bench}"
STAMP="$(date -u +%Y%m%dT%H%M%SZ)"
RUN_DIR="$WORK/runs/$STAMP"
mkdir -p "$RUN_DIR"
[ -n "$OUT" ] || OUT="$RUN_DIR/combined.json"
T0=$(date +%s)
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"

# ---------------------------------------------------------------- 1. build
if [ "$SKIP_BUILD" != "1" ]; then
  log "build: release preset in $BUILD_DIR (keel-engine keel-examples keel-bench-runtime keel_bench, -j$JOBS)"
  cmake --preset release -B "$BUILD_DIR" >/dev/null
  cmake --build "$BUILD_DIR" --target keel-engine keel-examples keel-bench-runtime keel_bench -j "$JOBS" >&2
  log "build: wasm preset (keel.wasm for the JavaScript examples' W1)"
  cmake --preset wasm >/dev/null
  NODE_PATH=/usr/share/nodejs cmake --build --preset wasm --target keel_wasm -j "$JOBS" >&2
fi
BIN="$BUILD_DIR/bin"
[ -x "$BIN/keel_bench" ] || { log "no $BIN/keel_bench (build failed?)"; exit 1; }

# ---------------------------------------------------------------- 2. Keel
KEEL_ARGS=()
[ "$QUICK" = "1" ] && KEEL_ARGS+=(--quick)
[ "$W4_LARGE" = "1" ] && KEEL_ARGS+=(--w4-large)
[ -n "$TRANSPORT" ] && KEEL_ARGS+=(--envoy-transport "$TRANSPORT")
# W1 with JavaScript actors (the wasm runtime on Node) when keel.wasm is built.
[ -f packages/keel-wasm/dist/keel.wasm ] && KEEL_ARGS+=(--js-runtime "$PWD/examples/js/keel-js-examples")
log "keel_bench ${KEEL_ARGS[*]:-} (load average $(cut -d' ' -f1-3 /proc/loadavg))"
KEEL_RC=0
"$BIN/keel_bench" --engine "$BIN/keel-engine" --runtime "$BIN/keel-examples" --sql-runtime "$BIN/keel-bench-runtime" \
  ${KEEL_ARGS[@]+"${KEEL_ARGS[@]}"} \
  >"$RUN_DIR/keel.json" || KEEL_RC=$?
[ "$KEEL_RC" = "0" ] || log "keel_bench exited with $KEEL_RC (its JSON says what failed)"

# W1 without the disk: the engine's RocksDB (and the floors) on tmpfs, as DO's non-durable
# variant keeps its SQLite files on tmpfs. Twice: the usual blocking clients, then clients
# that poll for 300 µs before they block (no wake-up of the client's thread per answer; see
# bench/recv.h). Failures here are reported, not fatal.
W1_ARGS=(--only w1)
[ "$QUICK" = "1" ] && W1_ARGS+=(--quick)
[ -n "$TRANSPORT" ] && W1_ARGS+=(--envoy-transport "$TRANSPORT")
if [ -d /dev/shm ] && [ -w /dev/shm ]; then
  for variant in tmpfs tmpfs-poll; do
    extra=()
    [ "$variant" = "tmpfs-poll" ] && extra=(--client-poll-us 300)
    log "keel_bench ${W1_ARGS[*]} ${extra[*]:-} on tmpfs (load average $(cut -d' ' -f1-3 /proc/loadavg))"
    TMPDIR=/dev/shm "$BIN/keel_bench" --engine "$BIN/keel-engine" --runtime "$BIN/keel-examples" \
      "${W1_ARGS[@]}" ${extra[@]+"${extra[@]}"} >"$RUN_DIR/keel-$variant.json" \
      || log "keel_bench on tmpfs ($variant) failed"
  done
else
  log "no writable /dev/shm: skipping W1 on tmpfs"
fi

# ---------------------------------------------------------------- 3. anchors
anchors_dir() {
  if [ -n "${KEEL_ANCHORS_DIR:-}" ]; then echo "$KEEL_ANCHORS_DIR"; return; fi
  for d in "$ROOT/../shared/anchors" "$ROOT/shared/anchors"; do
    if [ -d "$d" ]; then (cd "$d" && pwd); return; fi
  done
  echo ""
}

# A private, writable copy of an anchor (its node_modules survive between runs).
anchor_copy() {
  local src="$1" name="$2" dst="$WORK/anchors/$2"
  mkdir -p "$dst"
  # Refresh everything but the installed packages and the anchors' own work dirs.
  find "$dst" -mindepth 1 -maxdepth 1 ! -name node_modules ! -name .work ! -name data -exec rm -rf {} +
  (cd "$src" && tar cf - --exclude=./node_modules --exclude=./.work --exclude=./data .) | (cd "$dst" && tar xf -)
  chmod -R u+w "$dst"
  echo "$dst"
}

DO_RC=skipped
RIVET_RC=skipped
if [ "$ANCHORS" = "1" ]; then
  AD="$(anchors_dir)"
  if [ -z "$AD" ]; then
    log "no anchors found (../shared/anchors, ./shared/anchors or KEEL_ANCHORS_DIR); skipping them"
  else
    DO_DIR="$(anchor_copy "$AD/durable-objects" durable-objects)"
    log "Durable Objects anchor in $DO_DIR (about 6-8 min; load average $(cut -d' ' -f1-3 /proc/loadavg))"
    DO_ARGS=()
    [ "$QUICK" = "1" ] && DO_ARGS+=(--quick)
    rm -f "$DO_DIR/results.json"
    DO_RC=0
    (cd "$DO_DIR" && ./run.sh ${DO_ARGS[@]+"${DO_ARGS[@]}"} >"$RUN_DIR/do-summary.json") || DO_RC=$?
    [ -f "$DO_DIR/results.json" ] && cp "$DO_DIR/results.json" "$RUN_DIR/do.json"
    log "Durable Objects anchor: exit $DO_RC"

    RV_DIR="$(anchor_copy "$AD/rivet" rivet)"
    log "Rivet anchor in $RV_DIR (about 10 min; load average $(cut -d' ' -f1-3 /proc/loadavg))"
    RIVET_RC=0
    (cd "$RV_DIR" && BENCH_OUT="$RUN_DIR/rivet.json" BENCH_QUICK="$QUICK" ./run.sh >"$RUN_DIR/rivet-summary.json") \
      || RIVET_RC=$?
    log "Rivet anchor: exit $RIVET_RC"
  fi
fi

# ---------------------------------------------------------------- 4. combine
log "combining into $OUT"
python3 - "$RUN_DIR" "$OUT" "$LOAD_START" "$(cut -d' ' -f1-3 /proc/loadavg)" "$KEEL_RC" "$DO_RC" "$RIVET_RC" \
  "$(( $(date +%s) - T0 ))" "$(anchors_dir)" <<'PY'
import json, os, sys

run_dir, out, load_start, load_end, keel_rc, do_rc, rivet_rc, total_s, anchors_dir = sys.argv[1:]


def load(name):
    p = os.path.join(run_dir, name)
    try:
        with open(p) as f:
            return json.load(f)
    except Exception:
        return None


def get(d, *path):
    for k in path:
        if d is None:
            return None
        if isinstance(k, int):
            d = d[k] if isinstance(d, list) and len(d) > k else None
        else:
            d = d.get(k) if isinstance(d, dict) else None
    return d


keel = load("keel.json")
keel_tmpfs = load("keel-tmpfs.json")
keel_tmpfs_poll = load("keel-tmpfs-poll.json")
do = load("do.json")
rivet = load("rivet.json")


def load_path(p):
    try:
        with open(p) as f:
            return json.load(f)
    except Exception:
        return None


# The anchors' own committed results (their final runs, on a quieter machine).
stored_do = load_path(os.path.join(anchors_dir, "durable-objects", "results.json")) if anchors_dir else None
stored_rivet = load_path(os.path.join(anchors_dir, "rivet", "results.json")) if anchors_dir else None
kw = get(keel, "workloads") or {}
def build(do, rivet):
    """Comparison rows of Keel against one pair of anchor results."""
    do_s = get(do, "summary") or {}
    do_d = get(do_s, "durable_disk") or {}
    rv_s = get(rivet, "summary") or {}


    def rivet_best(key, field, lower_better):
        """The better of Rivet's stock and nodelay columns (its REPORT.md: beat the better)."""
        path = (key,) + (tuple(field) if isinstance(field, (list, tuple)) else (field,))
        vals = [(v, col) for col in ("stock", "nodelay")
                for v in [get(rv_s, col, *path)] if isinstance(v, (int, float))]
        if not vals:
            return None, None
        return (min if lower_better else max)(vals)


    def do_mem_1000():
        for p in get(do_s, "d_memory", "points") or []:
            if p.get("objects") == 1000:
                return p.get("bytes_per_object")
        return None


    def rivet_mem():
        st = get(rv_s, "stock", "d_memory", "steps", 0)
        if not st:
            return None, None
        return (st.get("engine_bytes_per_actor", 0) + st.get("runner_bytes_per_actor", 0)), st.get("actors_alive")


    rows = []


    def row(wid, what, unit, keel_v, do_v, rivet_v, lower_better, rivet_col=None, note=None):
        r = {"id": wid, "metric": what, "unit": unit, "keel": keel_v, "durable_objects": do_v, "rivet": rivet_v}
        if rivet_col:
            r["rivet_column"] = rivet_col

        def better(peer):
            if not isinstance(peer, (int, float)) or not isinstance(keel_v, (int, float)) or keel_v <= 0 or peer <= 0:
                return None
            return round(peer / keel_v if lower_better else keel_v / peer, 2)

        r["keel_vs_do_x_better"] = better(do_v)
        r["keel_vs_rivet_x_better"] = better(rivet_v)
        if note:
            r["note"] = note
        rows.append(r)


    rb, rc = rivet_best("a_seq_http_by_actor_id", "p50_us", True)
    row("W1 HTTP", "p50", "us", get(kw, "w1_http", "p50_us"),
        get(do_d, "a_sequential_one_object", "http_increment", "p50_us"), rb, True, rc,
        "Rivet: stateless action by actor id (as Keel's /gateway/<id>/action)")
    row("W1 HTTP", "calls/s", "1/s", get(kw, "w1_http", "ops_per_s"),
        get(do_d, "a_sequential_one_object", "http_increment", "calls_per_s"),
        rivet_best("a_seq_http_by_actor_id", "per_s", False)[0], False)
    rb, rc = rivet_best("a_seq_ws", "p50_us", True)
    row("W1 WS", "p50", "us", get(kw, "w1_ws", "p50_us"),
        get(do_d, "a_sequential_one_object", "ws_increment", "p50_us"), rb, True, rc)
    row("W1 WS", "calls/s", "1/s", get(kw, "w1_ws", "ops_per_s"),
        get(do_d, "a_sequential_one_object", "ws_increment", "calls_per_s"),
        rivet_best("a_seq_ws", "per_s", False)[0], False)
    rb, rc = rivet_best("b_conc64_ws", "per_s", False)
    row("W2 WS", "calls/s", "1/s", get(kw, "w2_ws", "ops_per_s"),
        get(do_d, "b_concurrent_64_objects", "ws", "ops_per_s"), rb, False, rc)
    rb, rc = rivet_best("b_conc64_ws", "p99_us", True)
    row("W2 WS", "p99", "us", get(kw, "w2_ws", "p99_us"),
        get(do_d, "b_concurrent_64_objects", "ws", "p99_us"), rb, True, rc)
    rb, rc = rivet_best("b_conc64_http", "per_s", False)
    row("W2 HTTP", "calls/s", "1/s", get(kw, "w2_http", "ops_per_s"),
        get(do_d, "b_concurrent_64_objects", "http", "ops_per_s"), rb, False, rc)
    rb, rc = rivet_best("c_cold_start", "p50_us", True)
    row("W3", "p50", "us", get(kw, "w3_cold_start", "p50_us"), get(do_d, "c_cold_start", "p50_us"), rb, True, rc)
    rm, rn = rivet_mem()
    row("W4", "bytes per awake idle actor (engine + runtime)", "B",
        get(kw, "w4_memory", "bytes_per_awake_actor", "total"), do_mem_1000(), rm, True, "stock",
        "DO: 1,000 resident objects; Rivet: %s actors reached (not 1,000)" % rn if rn else None)
    rb, rc = rivet_best("f_wake", "p50_us", True)
    row("W6", "p50", "us", get(kw, "w6_wake", "p50_us"),
        get(do_d, "c_wake_after_eviction", "http_write", "p50_us"), rb, True, rc,
        "DO: HTTP write after eviction; Rivet: first HTTP action after a 1 s idle sleep")
    # W5 = DO's and Rivet's workload e. DO measures it over HTTP (front Worker -> RPC),
    # Rivet over one WebSocket connection: each peer is compared with Keel on its transport.
    # DO has one SQLite (in the object); Rivet's local/remote match Keel's backends.
    w5 = get(kw, "w5_sqlite") or {}
    do_e = get(do_d, "e_sqlite") or {}
    for be in ("local", "remote"):
        kb = get(w5, be)
        if not kb:
            continue
        rkey = "e_sqlite_" + be
        for op, do_op, rv_op in (("insert_one", "insert_single", "insert_one"),
                                 ("point_select", "point_select", "select_point")):
            row("W5 " + be, op + " p50 (HTTP, as DO)", "us", get(kb, op + "_http", "p50_us"),
                get(do_e, do_op, "p50_us"), None, True)
            rb, rc = rivet_best(rkey, (rv_op, "p50_us"), True)
            row("W5 " + be, op + " p50 (WS, as Rivet)", "us", get(kb, op + "_ws", "p50_us"),
                None, rb, True, rc)
        rb, rc = rivet_best(rkey, ("bulk_txn", "rows_per_s"), False)
        row("W5 " + be, "insertMany(10000) rows/s", "1/s", get(kb, "insert_many", "rows_per_s"),
            get(do_e, "insert_batch_10000", "rows_per_s"), rb, False, rc,
            "one action, one transaction, one statement per row")
    g = get(rv_s, "stock", "g_durability") or []
    rivet_lost = g[0].get("lost_increments") if g else None
    do_ok = get(do_s, "f_durability_kill9", "all_ok")
    rows.append({"id": "W7", "metric": "acknowledged writes lost", "unit": "writes",
                 "keel": get(kw, "w7_durability", "acknowledged_writes_lost"),
                 "durable_objects": (0 if do_ok else "failed") if do_ok is not None else None,
                 "rivet": rivet_lost,
                 "note": "Rivet: kill -9 of the runner right after 100 acknowledged WS increments"})
    return rows, do_s, do_d, rv_s


rows, do_s, do_d, rv_s = build(do, rivet)
stored_rows = build(stored_do, stored_rivet)[0] if (stored_do or stored_rivet) else None

floor = get(keel, "ratios", "floor_p50_us")
targets = {}


def t(name, ok, detail):
    if ok is None:
        return
    targets[name] = {"met": bool(ok), "detail": detail}


w1ws = get(kw, "w1_ws", "p50_us")
w1http = get(kw, "w1_http", "p50_us")
do_w1ws = get(do_d, "a_sequential_one_object", "ws_increment", "p50_us")
do_w1http = get(do_d, "a_sequential_one_object", "http_increment", "p50_us")
if w1ws is not None and floor is not None:
    t("W1 WS p50 <= floor + 50 us", w1ws <= floor + 50, "p50 %.1f us, floor %.1f us (+%.1f)" % (w1ws, floor, w1ws - floor))
# The same floor measured as one sequence (echo round trip, then synced commit) right before
# each W1 WebSocket rep, so the disk's drift during the run falls on both alike.
paired = get(keel, "ratios", "paired_floor_p50_us")
if w1ws is not None and paired is not None:
    t("W1 WS p50 <= floor + 50 us (floor paired with each W1 rep)", w1ws <= paired + 50,
      "p50 %.1f us, paired floor %.1f us (+%.1f)" % (w1ws, paired, w1ws - paired))
if w1ws is not None and do_w1ws:
    t("W1 WS p50 below DO's", w1ws < do_w1ws, "%.1f vs %.1f us" % (w1ws, do_w1ws))
if w1http is not None and do_w1http:
    t("W1 HTTP p50 <= 1/2 of DO's", w1http <= do_w1http / 2, "%.1f vs %.1f us (x%.2f)" % (w1http, do_w1http, do_w1http / w1http))
# Without the disk: Keel's W1 with its data on tmpfs against DO's non-durable run.
do_tmpfs_ws = get(do_s, "non_durable_tmpfs", "a_sequential_one_object", "ws_increment", "p50_us")
for label, run in (("blocking client", keel_tmpfs), ("client polling 300 us", keel_tmpfs_poll)):
    k = get(run, "workloads", "w1_ws", "p50_us")
    if k is not None and do_tmpfs_ws:
        t("W1 WS on tmpfs <= 1/4 of DO's tmpfs (%s)" % label, k <= do_tmpfs_ws / 4,
          "%.1f vs DO %.1f us: needs <= %.1f (x%.2f; echo floor %s us)" % (
              k, do_tmpfs_ws, do_tmpfs_ws / 4, do_tmpfs_ws / k,
              get(run, "floors", "ws_rtt", "p50_us")))
w2 = get(kw, "w2_ws", "ops_per_s")
do_w2 = get(do_d, "b_concurrent_64_objects", "ws", "ops_per_s")
if w2 is not None and do_w2:
    t("W2 >= 3x DO calls/s", w2 >= 3 * do_w2, "%.0f vs %.0f calls/s (x%.2f)" % (w2, do_w2, w2 / do_w2))
w3 = get(kw, "w3_cold_start", "p50_us")
if w3 is not None:
    t("W3 p50 <= 2 ms", w3 <= 2000, "%.1f us" % w3)
w4 = get(kw, "w4_memory", "bytes_per_awake_actor", "total")
if w4 is not None:
    t("W4 <= 4 KB per awake idle actor", w4 <= 4000, "%d B" % w4)
w6 = get(kw, "w6_wake", "p50_us")
if w6 is not None:
    after_idle = get(kw, "w6_wake", "awake_after_idle_p50_us")
    idle_sync = get(keel, "floors", "synced_commit_after_idle", "p50_us")
    detail = "%.1f us" % w6
    if after_idle is not None:
        detail += "; a call to an awake actor after the same 20 ms idle: %.1f us" % after_idle
    if idle_sync is not None:
        detail += "; a synced commit after 20 ms idle: %.1f us" % idle_sync
    t("W6 p50 <= 2 ms", w6 <= 2000, detail)
w7 = get(kw, "w7_durability", "acknowledged_writes_lost")
if w7 is not None:
    t("W7 0 lost", w7 == 0 and not get(kw, "w7_durability", "counters_unreadable"), "%d lost" % w7)
# W5 (the issue's targets; DO's figures are its HTTP ones, so Keel's HTTP figures are used).
do_e = get(do_d, "e_sqlite") or {}
for be, frac in (("local", 0.5), ("remote", 1.0)):
    kb = get(kw, "w5_sqlite", be)
    if not kb:
        continue
    for op, do_op in (("insert_one", "insert_single"), ("point_select", "point_select")):
        k = get(kb, op + "_http", "p50_us")
        kws = get(kb, op + "_ws", "p50_us")
        d = get(do_e, do_op, "p50_us")
        if k is not None and d:
            t("W5 %s %s p50 <= %sDO's" % (be, op, "1/2 of " if frac < 1 else ""), k <= frac * d,
              "HTTP %.1f us (WS %s us) vs DO %.1f us: needs <= %.1f" % (k, kws, d, frac * d))
    rps = get(kb, "insert_many", "rows_per_s")
    d = get(do_e, "insert_batch_10000", "rows_per_s")
    if be == "local" and rps is not None and d:
        t("W5 local insertMany >= DO's rows/s", rps >= d, "%.0f vs %.0f rows/s (x%.2f)" % (rps, d, rps / d))
    if be == "remote" and rps is not None:
        t("W5 remote insertMany >= 20,000 rows/s", rps >= 20000, "%.0f rows/s" % rps)
rv = [r["keel_vs_rivet_x_better"] for r in rows if r.get("keel_vs_rivet_x_better") is not None]
if rv:
    t(">= 10x Rivet everywhere", min(rv) >= 10, "worst x%.2f (%s)" % (min(rv), ", ".join(
        "%s %s x%s" % (r["id"], r["metric"], r["keel_vs_rivet_x_better"]) for r in rows
        if r.get("keel_vs_rivet_x_better") is not None)))

combined = {
    "bench": "scripts/bench.sh",
    "run_dir": run_dir,
    "loadavg": {"start": load_start, "end": load_end},
    "total_seconds": int(total_s),
    "exit": {"keel_bench": keel_rc, "durable_objects": do_rc, "rivet": rivet_rc},
    "anchor_mapping": {"durable_objects": "a=W1 b=W2 c=W3(cold)+W6(wake) d=W4 e=W5 f=W7",
                       "rivet": "a=W1 b=W2 c=W3 d=W4 e=W5 f=W6 g=W7"},
    "ratio_meaning": "x_better = peer/keel for latencies and bytes, keel/peer for calls/s; > 1 means Keel is better",
    "comparison": rows,
    "comparison_vs_stored_anchor_results": stored_rows,
    "targets": targets,
    "keel": keel,
    "keel_w1_tmpfs": {"blocking_client": keel_tmpfs, "polling_client": keel_tmpfs_poll},
    "durable_objects": {"meta": get(do, "meta"), "summary": do_s} if do else None,
    "rivet": {"meta": get(rivet, "meta"), "summary": rv_s} if rivet else None,
}
with open(out, "w") as f:
    json.dump(combined, f, indent=2)
print(json.dumps(combined, indent=2))
for r in rows:
    sys.stderr.write("  %-9s %-44s keel=%-10s do=%-10s rivet=%-10s  vsDO=x%s vsRivet=x%s\n" % (
        r["id"], r["metric"], r["keel"], r["durable_objects"], r["rivet"],
        r.get("keel_vs_do_x_better"), r.get("keel_vs_rivet_x_better")))
if stored_rows:
    sys.stderr.write("  vs the anchors' stored results (their REPORT.md runs):\n")
    for r in stored_rows:
        sys.stderr.write("  %-9s %-44s keel=%-10s do=%-10s rivet=%-10s  vsDO=x%s vsRivet=x%s\n" % (
            r["id"], r["metric"], r["keel"], r["durable_objects"], r["rivet"],
            r.get("keel_vs_do_x_better"), r.get("keel_vs_rivet_x_better")))
for k, v in targets.items():
    sys.stderr.write("  target %-36s %s  %s\n" % (k, "MET" if v["met"] else "MISSED", v["detail"]))
PY
log "done in $(( $(date +%s) - T0 )) s; combined JSON: $OUT"
[ "$KEEL_RC" = "0" ]
