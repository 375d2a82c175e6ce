# Sourced by the set-up scripts: make "$VENV" (with "$PYTHON") if it is missing, and give them
# pip and py, which run in it.
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
pip() { "$VENV/bin/python" -m pip --disable-pip-version-check -q "$@"; }
py() { "$VENV/bin/python" "$@"; }
