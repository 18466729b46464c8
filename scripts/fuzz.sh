#!/usr/bin/env bash
# Runs every libFuzzer target in BUILD_DIR (fuzz_*) for SECONDS each, on a
# working copy of its seed corpus (tests/fuzz/corpus/NAME), so the checked-in
# corpus is never modified. Crash inputs land in BUILD_DIR/crashes/NAME/.
# Usage: scripts/fuzz.sh BUILD_DIR SECONDS
# Exits non-zero if any target crashed (the crashing inputs are listed).
set -uo pipefail
BUILD=${1:?usage: fuzz.sh BUILD_DIR SECONDS}
SECS=${2:-60}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
shopt -s nullglob
targets=("$BUILD"/fuzz_*)
if [ ${#targets[@]} -eq 0 ]; then
  echo "fuzz: no fuzz_* binaries in $BUILD" >&2
  exit 2
fi
failed=()
for bin in "${targets[@]}"; do
  [ -x "$bin" ] && [ -f "$bin" ] || continue
  name=$(basename "$bin")
  work="$BUILD/corpus-work/$name"
  crashes="$BUILD/crashes/$name"
  mkdir -p "$work" "$crashes"
  [ -d "tests/fuzz/corpus/$name" ] && cp -n "tests/fuzz/corpus/$name"/* "$work"/ 2>/dev/null
  log="$BUILD/fuzz-$name.log"
  echo "fuzz: $name for ${SECS}s (log: $log)"
  "$bin" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
         -artifact_prefix="$crashes/" "$work" >"$log" 2>&1
  rc=$?
  tail -n 12 "$log" | grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|Done)' || true
  found=("$crashes"/*)
  if [ $rc -ne 0 ] || [ ${#found[@]} -gt 0 ]; then
    echo "fuzz: $name FAILED (exit $rc)" >&2
    grep -E 'ERROR|SUMMARY|==[0-9]+==|deadly signal|Test unit written' "$log" | head -n 20 >&2
    for f in "${found[@]}"; do echo "  crash input: $f" >&2; done
    failed+=("$name")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzz: crashes in: ${failed[*]}" >&2
  exit 1
fi
echo "fuzz: all targets ran ${SECS}s without crashes"
