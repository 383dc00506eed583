#!/usr/bin/env bash
# Install @asyncapi/parser (pinned by package-lock.json here) into a cache outside the repository, for
# tests/contract/test_asyncapi_valid.py. Usage: tests/contract/asyncapi/install-parser.sh [DIR]
# DIR defaults to $DSCTL_ASYNCAPI_PARSER_DIR, else ~/.cache/dsctl/asyncapi-parser. Quiet unless it fails.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
dir="${1:-${DSCTL_ASYNCAPI_PARSER_DIR:-$HOME/.cache/dsctl/asyncapi-parser}}"
mkdir -p "$dir"
if ! cmp -s "$here/package-lock.json" "$dir/package-lock.json" || [ ! -d "$dir/node_modules/@asyncapi/parser" ]; then
  cp "$here/package.json" "$here/package-lock.json" "$here/validate.mjs" "$dir/"
  log="$(mktemp)"
  (cd "$dir" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error) >"$log" 2>&1 \
    || { cat "$log" >&2; rm -f "$log"; exit 1; }
  rm -f "$log"
fi
cp "$here/validate.mjs" "$dir/"
