# Sourced by the recipes: `here` (the repository), PYTHON (its .venv where there is one, else python3), and
# `need N "$@"`, which prints the calling script's header comment and exits when it has fewer than N arguments.
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PYTHON=${PYTHON:-$( [ -x "$here/.venv/bin/python" ] && echo "$here/.venv/bin/python" || echo python3 )}

need() {
  local n=$1
  shift
  if [ $# -lt "$n" ]; then
    sed -n '2,/^[^#]/p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'
    exit 2
  fi
}
