#!/usr/bin/env bash
# Fails when a C file of the tree (tracked, or new and not ignored) differs from what
# .clang-format makes of it. Generated tables (tok_unicode.c) keep their generator's
# layout and are skipped.
#   ./scripts/check-format.sh        check
#   ./scripts/check-format.sh --fix  rewrite the files in place
set -euo pipefail
cd "$(dirname "$0")/.."
files=$(git ls-files --cached --others --exclude-standard '*.c' '*.h' |
    grep -v '^worker/tok_unicode\.c$')
if [ "${1:-}" = "--fix" ]; then
    clang-format -i $files
    exit 0
fi
clang-format --dry-run --Werror $files
echo "format: $(echo "$files" | wc -w) files ok"
