# Shared by ops/test and ops/up: create .venv and install the project once; re-install only when
# pyproject.toml changed since the last install (a stamp file records its hash).
# The installer's output goes to a log in the venv: one progress line is shown while it works, and on
# failure the log's last lines and its path.
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
  local want stamp="$VENV/.dsctl-installed" log="$VENV/dsctl-install.log"
  want="$(sha256sum pyproject.toml | cut -d' ' -f1)-${extras}"
  if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && grep -qx -- "$want" "$stamp" 2>/dev/null; then
    return 0
  fi
  mkdir -p "$VENV"
  : > "$log"
  if [ -x "$VENV/bin/python" ]; then
    printf '== installing dsctl%s into %s (log: %s) ...' "${extras:+[$extras]}" "$VENV" "$log"
  else
    printf '== first run: creating %s and installing dsctl%s, a minute or two (log: %s) ...' \
      "$VENV" "${extras:+[$extras]}" "$log"
  fi
  if ! _venv_install "$py" "$extras" >>"$log" 2>&1; then
    echo " failed" >&2
    echo "error: setting up $VENV failed; the last lines of $log:" >&2
    tail -n 20 "$log" | sed 's/^/  /' >&2
    exit 1
  fi
  echo " done"
  echo "$want" >> "$stamp"
}
_venv_install() {
  # (called in an `if`, where errexit does not apply: each step returns its own failure)
  local py="$1" extras="$2"
  if [ ! -x "$VENV/bin/python" ]; then
    "$py" -m venv "$VENV" || return
  fi
  "$VENV/bin/python" -m pip install --upgrade pip || true
  "$VENV/bin/python" -m pip install -e ".${extras:+[$extras]}"
}
