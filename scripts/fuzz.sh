#!/usr/bin/env bash
# Runs every fuzz target of the project for a short time each (default 5s):
#   scripts/fuzz.sh [DURATION]
# New failing inputs are written by go test into the package's testdata/fuzz/
# folder; commit them as regression seeds. Every target's seeds also run in
# plain `go test`.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=$PATH:/usr/local/go/bin
t=${1:-5s}
fail=0; n=0
while IFS=: read -r file name; do
  pkg=./$(dirname "$file")
  n=$((n + 1))
  if ! go test -run '^$' -fuzz "^${name}\$" -fuzztime "$t" "$pkg" >/tmp/llmtap-fuzz.log 2>&1; then
    echo "fuzz: $pkg $name FAILED" >&2; cat /tmp/llmtap-fuzz.log >&2; fail=1
  else
    echo "fuzz: $pkg $name ok ($t)" >&2
  fi
done < <(grep -rHo --include='*_test.go' '^func Fuzz[A-Za-z0-9_]*' . | sed -e 's#^\./##' -e 's/func //')
echo "fuzz: $n targets run for $t each" >&2
exit $fail
