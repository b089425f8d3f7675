#!/usr/bin/env bash
# The wheels a lent GPU machine lacked last time, at the versions this project's venv runs,
# for that machine's Python (PY_VERSION, default 3.12) on x86-64 Linux, into DEST (default
# .whl, git-ignored): what `WHEELS=.whl bench/gpu_session.sh` installs there. lime publishes
# no wheel, so its wheel is built here (it is pure Python).
set -euo pipefail
cd "$(dirname "$0")/.."
PIP=${PIP:-.venv/bin/pip}
DEST=${DEST:-.whl}
PY_VERSION=${PY_VERSION:-3.12}

version() {
    local found
    found=$("$PIP" show "$1" 2>/dev/null | sed -n 's/^Version: //p')
    [ -n "$found" ] || { echo "$1 is not installed in this venv (make install)" >&2; exit 2; }
    echo "$found"
}

pins=()
for name in shap slicer pydantic pydantic-core annotated-types typing-inspection \
    pytest pluggy iniconfig; do
    pins+=("$name==$(version "$name")")
done
mkdir -p "$DEST"
"$PIP" download --quiet --dest "$DEST" --no-deps --only-binary=:all: \
    --python-version "$PY_VERSION" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 "${pins[@]}"
"$PIP" wheel --quiet --no-deps --wheel-dir "$DEST" "lime==$(version lime)"
ls -1 "$DEST"
