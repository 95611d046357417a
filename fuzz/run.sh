#!/usr/bin/env bash
# run.sh — runs the libFuzzer targets one after another (`make fuzz` calls it).
#
#   fuzz/run.sh [TARGET...] [-- LIBFUZZER_ARGS...]      TARGET: http_parse infer_json ... (default: all)
#
# Environment: FUZZ_BUILD (build/fuzz), FUZZ_OUT (where corpora, crashes and logs go: FUZZ_BUILD), FUZZ_SECONDS (60 per target; 0 = no time limit, e.g. with
# -runs=N among the libFuzzer arguments), FUZZ_NICE ("nice -n 19": share the machine politely).
# fuzz/corpus/<t> (seeds and regressions) is read, never written: new corpus entries go to
# $FUZZ_OUT/corpus/<t>, crashing inputs to $FUZZ_OUT/artifacts/<t>/, the full log to
# $FUZZ_OUT/logs/<t>.log. Prints one summary line per target; exits 1 if any target crashed.
set -uo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
build=${FUZZ_BUILD:-build/fuzz}
out=${FUZZ_OUT:-$build}
seconds=${FUZZ_SECONDS:-60}
nice_cmd=${FUZZ_NICE-nice -n 19}
all=(http_parse infer_json binary_split shm_register model_config pbtxt image_decode pipeline)
targets=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do targets+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ ${#targets[@]} -gt 0 ] || targets=("${all[@]}")

max_len() {
    case "$1" in
    shm_register) echo 2048 ;;
    http_parse | model_config | pbtxt) echo 8192 ;;
    image_decode) echo 32768 ;;
    *) echo 16384 ;;
    esac
}

export LSAN_OPTIONS="suppressions=$here/tests/lsan.supp:print_suppressions=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
[ -x /usr/lib/llvm-14/bin/llvm-symbolizer ] && export ASAN_SYMBOLIZER_PATH=/usr/lib/llvm-14/bin/llvm-symbolizer
export OSV_TEST_MODELS="${OSV_TEST_MODELS:-$here/var/models}"
status=0
summary=()
for t in "${targets[@]}"; do
    bin="$build/fuzz/fuzz_$t"
    [ -x "$bin" ] || { echo "run.sh: $bin not built (make fuzz builds it)" >&2; exit 2; }
    mkdir -p "$out/corpus/$t" "$out/artifacts/$t" "$out/logs"
    log="$out/logs/$t.log"
    args=(-max_len="$(max_len "$t")" -timeout=30 -print_final_stats=1 -artifact_prefix="$out/artifacts/$t/")
    [ -s "$here/fuzz/dict/$t.dict" ] && args=(-dict="$here/fuzz/dict/$t.dict" "${args[@]}")
    [ "$seconds" = 0 ] || args+=(-max_total_time="$seconds")
    echo "== fuzz_$t ${args[*]} $*"
    # shellcheck disable=SC2086
    $nice_cmd "$bin" "${args[@]}" "$@" "$out/corpus/$t" "$here/fuzz/corpus/$t" >"$log" 2>&1
    rc=$?
    runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
    eps=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
    secs=$(sed -n 's/^Done [0-9]* runs in \([0-9]*\) second.*/\1/p' "$log" | tail -1)
    last=$(grep -E '^#[0-9]+' "$log" | tail -1)
    cov=$(sed -n 's/.* cov: \([0-9]*\) ft: \([0-9]*\) corp: \([0-9]*\/[0-9]*[a-zA-Z]*\).*/cov \1 ft \2 corpus \3/p' <<<"$last")
    line="fuzz_$t: rc $rc, ${runs:-?} runs in ${secs:-?} s (${eps:-?} exec/s), ${cov:-?}"
    [ $rc = 0 ] || { line="$line — CRASH, see $log and $out/artifacts/$t/"; status=1; }
    echo "$line"
    summary+=("$line")
done
echo
printf '%s\n' "${summary[@]}"
exit $status
