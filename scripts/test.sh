#!/usr/bin/env bash
# `make test`: build, then run every test layer and print one summary line.
#   1. cmocka unit tests (ctest)                 build/
#   2. fuzz corpora replayed through each target build/fuzz_*
#   3. unit tests + corpora again under ASan+UBSan build-san/
#   4. pytest integration tests against the real binary
#   5. the same (minus the slow ones) against the sanitizer binary
# Exits non-zero if anything failed or if a layer ran no test at all.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=/usr/bin/python3
passed=0; failed=0; failures=()

step() { # name, command...
    local name=$1; shift
    echo "=== $name"
    if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); failures+=("$name"); fi
}

count_ctest() { # build dir: adds every cmocka test case to the totals
    local dir=$1 log rc np nf
    log=$(mktemp)
    # A test binary that hangs fails after 300 s; one that fails is run once
    # more (a timing-sensitive test on a loaded machine) and must then pass.
    (cd "$dir" && ctest -V --timeout 300 --repeat until-pass:2) > "$log" 2>&1
    rc=$?
    grep -E '^[0-9]+: \[ +(OK|FAILED|PASSED) +\]|tests passed|tests failed' "$log" | grep -vE '\[ +OK +\]' || true
    grep -E '^[0-9]+: \[ +FAILED +\]|Failed|\*\*\*' "$log" | head -40 || true
    np=$(grep -Eo '\[ +PASSED +\] [0-9]+ test' "$log" | grep -Eo '[0-9]+' | awk '{s+=$1} END {print s+0}')
    nf=$(grep -Eo '\[ +FAILED +\] [0-9]+ test' "$log" | grep -Eo '[0-9]+' | awk '{s+=$1} END {print s+0}')
    rm -f "$log"
    np=${np:-0}; nf=${nf:-0}
    if [ "$rc" -eq 0 ]; then
        if [ "$nf" -ne 0 ]; then  # failed once, passed when run again: say so, count the pass
            echo "note: $nf case(s) failed on a first run and passed on the second (flaky; see the log above)"
        fi
        nf=0
    elif [ "$nf" -eq 0 ]; then
        nf=1   # a crash, a timeout, or a test binary that did not report
    fi
    if [ "$np" -eq 0 ] && [ "$nf" -eq 0 ]; then
        echo "no unit tests ran in $dir"; failed=$((failed + 1)); failures+=("unit($dir): none ran"); return
    fi
    echo "unit tests ($dir): $np passed, $nf failed"
    passed=$((passed + np)); failed=$((failed + nf))
    [ "$nf" -eq 0 ] || failures+=("unit tests in $dir")
}

replay() { # build dir
    local dir=$1 any=0
    for corpus in tests/fuzz/corpus/*/; do
        local name; name=$(basename "$corpus")
        [ -x "$dir/$name" ] || { echo "missing fuzz target $dir/$name"; failed=$((failed + 1)); failures+=("fuzz $name: no target"); continue; }
        any=1
        step "fuzz replay $name ($dir)" "$dir/$name" "$corpus"
    done
    [ $any -eq 1 ] || { failed=$((failed + 1)); failures+=("no fuzz corpora"); }
}

echo "=== build"
make --no-print-directory build || { echo "0 passed, 1 failed"; exit 1; }
count_ctest build
replay build

echo "=== sanitizer build (ASan+UBSan)"
if make --no-print-directory SANITIZE=1 build; then
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    count_ctest build-san
    replay build-san
    unset ASAN_OPTIONS UBSAN_OPTIONS
else
    failed=$((failed + 1)); failures+=("sanitizer build")
fi

echo "=== integration tests (pytest)"
junit=$(mktemp --suffix=.xml)
$PY -m pytest -q -p no:cacheprovider --junitxml="$junit" tests/integration
rc=$?
read -r ip if_ is_ < <($PY - "$junit" <<'PYEOF'
import sys, xml.etree.ElementTree as ET
try:
    r = ET.parse(sys.argv[1]).getroot()
    s = r if r.tag == "testsuite" else r.find("testsuite")
    t, f, e, sk = (int(s.get(k, 0)) for k in ("tests", "failures", "errors", "skipped"))
    print(t - f - e - sk, f + e, sk)
except Exception:
    print(0, 0, 0)
PYEOF
)
rm -f "$junit"
passed=$((passed + ip)); failed=$((failed + if_))
if [ "$rc" -eq 5 ] || [ "$ip" -eq 0 ]; then
    echo "pytest collected no tests: that is a failure"; failed=$((failed + 1)); failures+=("pytest: no tests")
elif [ "$rc" -ne 0 ] && [ "$if_" -eq 0 ]; then
    failed=$((failed + 1)); failures+=("pytest exit $rc")
fi

echo "=== integration tests against the ASan+UBSan binary (not the slow ones)"
if [ -x build-san/meshgate ]; then
    if MESHGATE="$PWD/build-san/meshgate" $PY -m pytest -q -p no:cacheprovider -m "not slow" tests/integration; then
        passed=$((passed + 1))
    else
        failed=$((failed + 1)); failures+=("integration under ASan+UBSan")
    fi
fi

echo
[ ${#failures[@]} -eq 0 ] || printf 'FAILED: %s\n' "${failures[@]}"
echo "summary: $passed passed, $failed failed, ${is_:-0} skipped"
[ "$failed" -eq 0 ]
