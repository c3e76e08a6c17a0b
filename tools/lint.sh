#!/usr/bin/env bash
# lint.sh - the style checker: clang-format (--dry-run -Werror), clang-tidy
# (.clang-tidy, with build/compile_commands.json) and cppcheck on every
# project .c/.h file; exits non-zero on any finding. docs/contributing.md
# says what each checks and why.
#   tools/lint.sh                  every file (what CI runs)
#   tools/lint.sh FILE...          only these files (while working on them)
#   LINT_BUILD_DIR=DIR             the meson build dir (default: build)
#   LINT_SKIP_FORMAT=1             skip the clang-format step (local work in progress)
#   LINT_JOBS=N                    parallel clang-tidy processes (default: nproc)
set -uo pipefail
cd "$(dirname "$0")/.."
build=${LINT_BUILD_DIR:-build}
jobs=${LINT_JOBS:-$(nproc)}
status=0

for tool in clang-format clang-tidy cppcheck; do
    command -v "$tool" >/dev/null || { echo "lint: $tool is not installed" >&2; exit 2; }
done
if [ ! -f "$build/compile_commands.json" ]; then
    echo "lint: $build/compile_commands.json missing: run meson setup $build first" >&2
    exit 2
fi

# Every tracked C file of the project (generated sources live in the build dir).
if [ $# -gt 0 ]; then
    files=("$@")
else
    mapfile -t files < <(git ls-files '*.c' '*.h')
fi
mapfile -t sources < <(printf '%s\n' "${files[@]}" | grep '\.c$')

if [ "${LINT_SKIP_FORMAT:-0}" = 1 ]; then
    echo "lint: clang-format skipped (LINT_SKIP_FORMAT=1)"
else
    echo "lint: clang-format on ${#files[@]} files"
    clang-format --dry-run -Werror "${files[@]}" || status=1
fi

# clang-tidy needs the compile command: only sources the build compiles.
# Headers are checked through the sources that include them (HeaderFilterRegex).
mapfile -t compiled < <(python3 - "$build" "${sources[@]}" <<'PY'
import json, os, sys
build, srcs = sys.argv[1], sys.argv[2:]
db = json.load(open(os.path.join(build, "compile_commands.json")))
known = {os.path.realpath(os.path.join(e["directory"], e["file"])) for e in db}
for s in srcs:
    if os.path.realpath(s) in known:
        print(s)
    elif not s.startswith("tests/fuzz/"):
        print(f"lint: {s} is not in the build; clang-tidy cannot check it", file=sys.stderr)
PY
)
echo "lint: clang-tidy on ${#compiled[@]} sources ($jobs jobs)"
printf '%s\n' "${compiled[@]}" |
    xargs -P "$jobs" -n 4 clang-tidy -p "$build" --quiet 2>/dev/null |
    grep -E '(warning|error):' | sort -u > "$build/lint-tidy.txt"
if [ -s "$build/lint-tidy.txt" ]; then
    cat "$build/lint-tidy.txt"
    status=1
fi

echo "lint: cppcheck"
filter=()
if [ $# -gt 0 ]; then
    for f in "${sources[@]}"; do filter+=("--file-filter=*${f}"); done
fi
[ $# -gt 0 ] && [ ${#sources[@]} -eq 0 ] ||
cppcheck --project="$build/compile_commands.json" "${filter[@]}" -j "$jobs" --library=tools/cppcheck.cfg \
    --enable=warning,performance,portability --inline-suppr --suppress=missingIncludeSystem \
    --error-exitcode=1 -q --template='{file}:{line}: {severity}: {message} [{id}]' \
    -i "$build" || status=1

[ "$status" = 0 ] && echo "lint: clean" || echo "lint: findings above" >&2
exit "$status"
