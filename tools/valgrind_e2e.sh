#!/usr/bin/env bash
# valgrind_e2e.sh — the end-to-end server suite with every ortserve server process under valgrind
# memcheck (docs/RELIABILITY.md, "valgrind"). `make memcheck` runs it.
#
#   tools/valgrind_e2e.sh [-j N] [TEST...]      TEST: e2e file names without .py (default: the list below)
#
# Each server the tests start runs as
#   valgrind --tool=memcheck --leak-check=full --errors-for-leak-kinds=definite --error-exitcode=99 ...
# (tests/e2e/server.py prefixes OSV_SERVER_WRAPPER), so a memory error or a definite leak makes that
# server exit 99 and its test fail; tools/valgrind.supp suppresses only loader and ONNX Runtime
# internals. Waits are scaled (OSV_TEST_TIME_SCALE) and the default request deadline is lifted
# (ORTSERVE_DEADLINE_MS=0; tests of deadlines set their own) because everything runs ~20-50x slower.
# At the end: the tests' results, then every valgrind log's error count and definitely-lost bytes.
# Exit status 0 only when every log has 0 errors and 0 bytes definitely lost.
set -uo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
build=${BUILD:-$here/build/release}
jobs=1
if [ "${1:-}" = "-j" ]; then
    jobs=$2
    shift 2
fi
tests=("$@")
# Not in the default list: test_server_lifecycle and test_obs_metrics calibrate slow.onnx runs against
# deadlines of 100 ms to 1.5 s on the host's speed (at least 20000 loop iterations, minutes each under
# valgrind), so they fail on timing there, not on memory; test_server_overload covers the drain, a
# canceled run and the 503s under valgrind instead. Pass them by name to run them anyway.
if [ ${#tests[@]} -eq 0 ]; then
    tests=(test_server_smoke test_server_endpoints test_server_datatypes test_server_onnx_nodes test_server_shm
           test_server_malformed test_server_http test_server_bodies test_server_load test_server_overload
           test_server_access test_obs_access_log test_imaging_errors)
fi
command -v valgrind >/dev/null || { echo "valgrind_e2e: valgrind is not installed (apt-get install valgrind)" >&2; exit 2; }
[ -x "$build/ortserve" ] || { echo "valgrind_e2e: no $build/ortserve (make build)" >&2; exit 2; }

out=$(mktemp -d "${TMPDIR:-/tmp}/osv-valgrind-XXXXXX")
export OSV_SERVER_WRAPPER="valgrind --tool=memcheck --error-exitcode=99 --leak-check=full \
--show-leak-kinds=definite --errors-for-leak-kinds=definite --num-callers=40 --track-fds=no \
--suppressions=$here/tools/valgrind.supp --log-file=$out/vg.%p.log"
export OSV_TEST_TIME_SCALE=${OSV_TEST_TIME_SCALE:-20}
export ORTSERVE_DEADLINE_MS=0
export OSV_TEST_MODELS=$here/var/models OSV_REAL_MODELS=$here/third_party/models OSV_SOURCE_DIR=$here
export OSV_BINARY_DIR=$build

echo "valgrind_e2e: ${#tests[@]} test files, $jobs at a time; logs in $out"
printf '%s\n' "${tests[@]}" | xargs -P "$jobs" -I{} sh -c \
    '/usr/bin/python3 "$0/tests/e2e/{}.py" >"$1/{}.out" 2>&1; echo "$? {}" >>"$1/results"' "$here" "$out"

echo
echo "== tests"
failed=0
while read -r rc name; do
    if [ "$rc" = 0 ]; then echo "  ok    $name"; else echo "  FAIL  $name (see $out/$name.out)"; failed=$((failed + 1)); fi
done <"$out/results"

echo "== valgrind (one log per server process)"
logs=0 errors=0 lost=0 unfinished=0
for f in "$out"/vg.*.log; do
    [ -e "$f" ] || continue
    logs=$((logs + 1))
    e=$(sed -n 's/.*ERROR SUMMARY: \([0-9,]*\) errors.*/\1/p' "$f" | tr -d , | tail -1)
    l=$(sed -n 's/.*definitely lost: \([0-9,]*\) bytes.*/\1/p' "$f" | tr -d , | tail -1)
    if [ -z "$e" ]; then # killed before valgrind could summarise (a test gave up on it)
        echo "  $f: no summary (killed)"
        unfinished=$((unfinished + 1))
        continue
    fi
    errors=$((errors + e))
    lost=$((lost + ${l:-0}))
    if [ "$e" != 0 ] || [ "${l:-0}" != 0 ]; then echo "  $f: $e errors, ${l:-0} bytes definitely lost"; fi
done
echo "  $logs server processes: $errors errors, $lost bytes definitely lost, $unfinished killed before the end"
echo "  tests: $((${#tests[@]} - failed)) of ${#tests[@]} files passed"
[ "$logs" -gt 0 ] && [ "$errors" = 0 ] && [ "$lost" = 0 ] && [ "$unfinished" = 0 ]
