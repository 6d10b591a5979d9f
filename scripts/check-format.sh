#!/usr/bin/env bash
# Fails when a tracked C file differs from what .clang-format makes of it.
# Generated tables (tok_unicode.c) keep their generator's layout and are skipped.
#   ./scripts/check-format.sh        check
#   ./scripts/check-format.sh --fix  rewrite the files in place
set -euo pipefail
cd "$(dirname "$0")/.."
files=$(git ls-files '*.c' '*.h' | grep -v '^worker/tok_unicode\.c$')
if [ "${1:-}" = "--fix" ]; then
    clang-format -i $files
    exit 0
fi
clang-format --dry-run --Werror $files
echo "format: $(echo "$files" | wc -w) files ok"
