# Shared by ops/test and ops/up: create .venv and install the project once; re-install only when
# pyproject.toml changed since the last install (a stamp file records its hash).
VENV="${DSCTL_VENV:-$PWD/.venv}"
ensure_venv() {
  local extras="${1:-}"
  local py="${PYTHON:-}"
  if [ -z "$py" ]; then
    for cand in python3.11 python3.12 python3.13 python3; do
      if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
        py="$cand"; break
      fi
    done
  fi
  [ -n "$py" ] || { echo "error: Python 3.11+ is required" >&2; exit 1; }
  if [ ! -x "$VENV/bin/python" ]; then
    echo "== creating $VENV with $py"
    "$py" -m venv "$VENV"
  fi
  local want stamp="$VENV/.dsctl-installed"
  want="$(sha256sum pyproject.toml | cut -d' ' -f1)-${extras}"
  if [ ! -f "$stamp" ] || ! grep -qx -- "$want" "$stamp" 2>/dev/null; then
    echo "== installing dsctl${extras:+[$extras]} into $VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
    if [ -n "$extras" ]; then
      "$VENV/bin/python" -m pip install -q -e ".[$extras]"
    else
      "$VENV/bin/python" -m pip install -q -e .
    fi
    echo "$want" >> "$stamp"
  fi
}
