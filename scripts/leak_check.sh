#!/usr/bin/env bash
# Rust leak check: every test binary of metrics_core (unit tests, tests/*.rs,
# tests/leaks.rs for lifecycle churn) run under a leak detector.
#
#   scripts/leak_check.sh            # LeakSanitizer if a nightly toolchain is installed, else valgrind
#   LEAK_MODE=valgrind scripts/leak_check.sh
#   LEAK_SKIP="monitor tdigest_accuracy" scripts/leak_check.sh   # skip binaries by name
#
# LeakSanitizer (`-Zsanitizer=leak`, nightly only) reports at exit every
# allocation no longer reachable: "SUMMARY: LeakSanitizer: N byte(s) leaked".
# A canary program that leaks on purpose runs first, so a sanitizer that
# cannot work here (e.g. ptrace forbidden in a container) fails loudly
# instead of passing silently.  valgrind reports "definitely lost" and
# "indirectly lost" bytes (both must be 0; the 48 bytes "possibly lost" in
# every binary are std's handle of the test harness's main thread); it is
# ~30x slower, so by default it skips tests/monitor.rs (LEAK_SKIP overrides).
#
# Exit status: 0 when no binary leaked and every test passed; 1 otherwise.
# Release profile without LTO (CARGO_PROFILE_RELEASE_*): the tests need the
# speed, the leak check does not need fat LTO's build time.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${LEAK_MODE:-auto}
if [[ $mode == auto ]]; then
    if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then mode=lsan
    elif command -v valgrind >/dev/null; then mode=valgrind
    else
        echo "leak_check: needs a nightly toolchain (rustup toolchain install nightly) or valgrind" >&2
        exit 2
    fi
fi
host=$(rustc -vV | sed -n 's/^host: //p')
export CARGO_PROFILE_RELEASE_LTO=false CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16
log_dir=target/leak-check
mkdir -p "$log_dir"

if [[ $mode == lsan ]]; then
    cargo_cmd=(cargo +nightly)
    export RUSTFLAGS="-Zsanitizer=leak"
    # --target keeps the sanitizer off build scripts and proc macros.
    build_args=(--target "$host" --target-dir target/lsan)
    export LSAN_OPTIONS="exitcode=23:${LSAN_OPTIONS:-}"
    skip=${LEAK_SKIP:-}

    canary_dir=$(mktemp -d)
    trap 'rm -rf "$canary_dir"' EXIT
    cat >"$canary_dir/canary.rs" <<'EOF'
// Sixteen 256-byte boxes whose only pointers die with the thread's stack.
#[inline(never)]
fn leak() {
    for _ in 0..16 {
        std::hint::black_box(Box::into_raw(Box::new([7u8; 256])));
    }
}

fn main() {
    std::thread::spawn(leak).join().unwrap();
}
EOF
    rustc +nightly -Zsanitizer=leak --target "$host" -o "$canary_dir/canary" "$canary_dir/canary.rs"
    if "$canary_dir/canary" >"$canary_dir/out" 2>&1 || ! grep -q "LeakSanitizer: detected memory leaks" "$canary_dir/out"; then
        echo "leak_check: LeakSanitizer did not catch a deliberate 4096-byte leak here:" >&2
        cat "$canary_dir/out" >&2
        echo "leak_check: try LEAK_MODE=valgrind" >&2
        exit 2
    fi
    echo "leak_check: LeakSanitizer canary caught its deliberate leak ($(grep -o 'SUMMARY.*' "$canary_dir/out"))"
else
    command -v valgrind >/dev/null || { echo "leak_check: valgrind not found (apt-get install valgrind)" >&2; exit 2; }
    cargo_cmd=(cargo)
    build_args=(--target-dir target/valgrind)
    skip=${LEAK_SKIP-monitor}  # ~27 s natively: ~15 min under valgrind
fi

echo "leak_check: building metrics_core tests ($mode)"
# Built once with errors shown (a failed build stops here), then listed:
# test binaries only (deps/), not the examples cargo test also builds.
"${cargo_cmd[@]}" test -p metrics_core --release "${build_args[@]}" --no-run --quiet
mapfile -t exes < <("${cargo_cmd[@]}" test -p metrics_core --release "${build_args[@]}" --no-run \
    --message-format=json 2>/dev/null | grep -o '"executable":"[^"]*/deps/[^"]*"' | sed 's/"executable":"//; s/"$//')
if [[ ${#exes[@]} -eq 0 ]]; then
    echo "leak_check: cargo listed no test binaries" >&2
    exit 2
fi

status=0
total_leaked=0
for exe in "${exes[@]}"; do
    name=$(basename "$exe"); name=${name%-*}
    if [[ " $skip " == *" $name "* ]]; then
        printf '%-20s skipped (LEAK_SKIP)\n' "$name"
        continue
    fi
    log="$log_dir/$name.$mode.log"
    start=$(date +%s)
    rc=0
    if [[ $mode == lsan ]]; then
        "$exe" >"$log" 2>&1 || rc=$?
        leaked=$(sed -n 's/^SUMMARY: LeakSanitizer: \([0-9]*\) byte.*/\1/p' "$log" | tail -1)
        leaked=${leaked:-0}
        detail=$(grep -o 'SUMMARY: LeakSanitizer.*' "$log" || echo "no leaks")
        [[ $rc == 23 && $leaked == 0 ]] && leaked=unknown
        [[ $rc == 23 ]] && rc=0  # the leak itself is judged below
    else
        valgrind --leak-check=full --show-leak-kinds=definite,indirect --errors-for-leak-kinds=definite,indirect \
            --error-exitcode=23 --log-file="$log.vg" "$exe" --test-threads=2 >"$log" 2>&1 || rc=$?
        definite=$(sed -n 's/.*definitely lost: \([0-9,]*\) bytes.*/\1/p' "$log.vg" | tail -1 | tr -d ,)
        indirect=$(sed -n 's/.*indirectly lost: \([0-9,]*\) bytes.*/\1/p' "$log.vg" | tail -1 | tr -d ,)
        definite=${definite:-0}; indirect=${indirect:-0}
        leaked=$((definite + indirect))
        errors=$(sed -n 's/.*ERROR SUMMARY: \([0-9]*\) errors.*/\1/p' "$log.vg" | tail -1)
        detail="definitely lost ${definite} B, indirectly lost ${indirect} B, $(grep -o 'possibly lost: [0-9,]* bytes' "$log.vg" | tail -1 || echo 'possibly lost: 0 bytes'), ${errors:-?} errors"
        [[ $rc == 23 ]] && rc=0
    fi
    tests=$(grep -o 'test result: .*' "$log" | sed 's/; 0 ignored.*//; s/test result: //' | paste -sd' ' -)
    printf '%-20s %4ss  %-40s %s\n' "$name" "$(( $(date +%s) - start ))" "${tests:-no test summary (rc $rc)}" "$detail"
    if [[ $rc != 0 ]]; then
        echo "  tests failed (rc $rc): see $log" >&2
        status=1
    fi
    if [[ $leaked != 0 ]]; then
        [[ $mode == lsan ]] && where=$log || where=$log.vg
        echo "  LEAK: see $where" >&2
        status=1
        [[ $leaked =~ ^[0-9]+$ ]] && total_leaked=$((total_leaked + leaked))
    fi
done
if [[ $status == 0 ]]; then
    echo "leak_check: no leaks ($mode), every test passed; logs in $log_dir"
else
    echo "leak_check: FAILED ($total_leaked bytes leaked in all); logs in $log_dir" >&2
fi
exit $status
