#!/usr/bin/env bash
# event-pusher benchmarks, end to end, each beside its raw baseline.
#
#   scripts/bench.sh            full set   (~6 min on 2 cores, once built)
#   scripts/bench.sh --quick    short runs (~2 min)
#
# Builds what it needs in release mode (the sidecar binary, the bench
# binaries and the criterion bench), then runs:
#   - the chain bench (criterion, in-process, one core)  -> rate chain N
#   - the script filter bench (the example script against the declarative
#     filters doing the same, one core)                  -> ratio script/declarative X
#   - e2e ingest / http / rabbit / memory / latency / mixed / lowrate /
#     webhooks / scaleout / cluster                       -> ratio <case> X
#     (scaleout is the source over a bare lapin consumer of the same
#     partitions; it also prints `rate scaleout K N` and
#     `rate scaleout-batch K N`: events/s through K sidecars, one call per
#     message and `publish --batch`; cluster is [cluster] on vs off, and
#     also prints `ratio cluster-push X` and `latency cluster p99 MS`; it
#     needs PostgreSQL on 127.0.0.1:5432. The soak case is not in the
#     default set: BENCH_CASES=soak, 10 minutes, or BENCH_E2E_ARGS="--duration 2m")
# and ends with one line per case:
#   ratio ingest X / ratio http X / ratio rabbit X / ratio memory X / ratio mixed X /
#   ratio lowrate X / ratio webhooks X / ratio scaleout X / rate scaleout K N /
#   rate scaleout-batch K N / soak ... (when run) / rate chain N /
#   ratio script/declarative X (and the script's time per event)
#   ratio gateway-100 X / ratio gateway-1000 X / latency gateway p99 MS
# (delivery and ingest cases alternate sidecar and raw rounds and keep the
# best of each, so other load on a shared machine hurts both alike).
#
# Environment:
#   BENCH_FEATURES   cargo feature flags for the sidecar binary
#                    (default: the default features; e.g. "--no-default-features"
#                    builds it without rabbit/sns, and the rabbit case says n/a)
#   BENCH_CASES      e2e cases, comma-separated (default: all)
#   BENCH_E2E_ARGS   more arguments for the e2e binary (see `e2e --help`)
#   BENCH_SKIP_BUILD set to 1 to use the binaries already built
#   BENCH_PROFILE    cargo profile (default: release, what users run;
#                    "profiling" is release with debug info, for perf)
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=""
for arg in "$@"; do
  case "$arg" in
    --quick) QUICK="--quick" ;;
    -h|--help) sed -n '2,38p' "$0"; exit 0 ;;
    *) echo "unknown argument: $arg (use --quick)" >&2; exit 2 ;;
  esac
done

TARGET="${CARGO_TARGET_DIR:-target}"
PROFILE="${BENCH_PROFILE:-release}"
OUT="$TARGET/bench-out"
mkdir -p "$OUT" "$TARGET/bench-tmp"
LOG="$OUT/bench-$(date +%Y%m%d-%H%M%S)${QUICK:+-quick}.txt"
start=$(date +%s)

if [[ "${BENCH_SKIP_BUILD:-0}" != 1 ]]; then
  echo "== building ($PROFILE)"
  # shellcheck disable=SC2086
  cargo build --profile "$PROFILE" -p event-pusher ${BENCH_FEATURES:-} --bin event-pusher
  cargo build --profile "$PROFILE" -p event-pusher-bench --bins
  cargo bench -p event-pusher-bench --bench chain --no-run
  cargo bench -p event-pusher-filters --bench script --no-run
fi
built=$(date +%s)

{
  echo "event-pusher benchmarks $(date -u +%Y-%m-%dT%H:%M:%SZ) ${QUICK:-full}"
  echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
  echo "load before start: $(cut -d' ' -f1-3 /proc/loadavg)"
} | tee "$LOG"

echo "== chain (criterion, one core)" | tee -a "$LOG"
if [[ -n "$QUICK" ]]; then
  CRIT_ARGS=(--warm-up-time 1 --measurement-time 2)
else
  CRIT_ARGS=(--warm-up-time 2 --measurement-time 5)
fi
# Pin to one core so "one core" means one core.
PIN=()
command -v taskset >/dev/null && PIN=(taskset -c 0)
"${PIN[@]}" cargo bench -q -p event-pusher-bench --bench chain -- "${CRIT_ARGS[@]}" 2>&1 | tee -a "$LOG"

echo "== script filter (criterion, one core)" | tee -a "$LOG"
"${PIN[@]}" cargo bench -q -p event-pusher-filters --bench script -- "${CRIT_ARGS[@]}" 2>&1 | tee -a "$LOG"

echo "== end to end" | tee -a "$LOG"
# shellcheck disable=SC2086
"$TARGET/$PROFILE/e2e" --sidecar "$TARGET/$PROFILE/event-pusher" --tmp "$TARGET/bench-tmp" $QUICK \
  ${BENCH_CASES:+--cases "$BENCH_CASES"} ${BENCH_E2E_ARGS:-} 2>&1 | tee -a "$LOG"

echo "== gateway (fan-out beside a bare tokio-tungstenite server; 202 -> dispatch latency; compression)" | tee -a "$LOG"
if [[ -n "$QUICK" ]]; then
  GATEWAY_ARGS=(--events 1000 --duration 3s)
else
  GATEWAY_ARGS=(--events 5000 --duration 10s)
fi
"$TARGET/$PROFILE/gateway" --sidecar "$TARGET/$PROFILE/event-pusher" --tmp "$TARGET/bench-tmp" \
  "${GATEWAY_ARGS[@]}" 2>&1 | tee -a "$LOG"

end=$(date +%s)
{
  echo
  echo "== results ($(( end - built ))s running, $(( built - start ))s building; log: $LOG)"
  echo "load before start: $(grep -m1 '^load before start: ' "$LOG" | cut -d' ' -f4-)"
  # Every e2e case's figures (ratio, rate, latency, cpu lines), once each.
  grep -E '^(ratio|rate|latency|cpu) [a-z0-9-]+ ' "$LOG" | grep -vE '^ratio (script|gateway)|^(rate|latency) (chain|ingest-path|gateway)' | awk '!seen[$1" "$2]++' || true
  grep -E '^soak ' "$LOG" || true
  grep -E '^ratio gateway-[0-9]+ |^latency gateway ' "$LOG" || echo "gateway n/a"
  grep -E '^compression gateway ' "$LOG" || true
  grep -E '^rate chain ' "$LOG" | tail -1 || echo "rate chain n/a"
  grep -E '^rate ingest-path ' "$LOG" | tail -1 || echo "rate ingest-path n/a"
  grep -E '^per event: declarative ' "$LOG" | tail -1 || true
  grep -E '^ratio script/declarative ' "$LOG" | tail -1 || echo "ratio script/declarative n/a"
} | tee "$OUT/last-summary.txt" | tee -a "$LOG"
