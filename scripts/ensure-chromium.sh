#!/usr/bin/env bash
# Install headless Chromium and its driver for the report's browser test, only when absent.
set -euo pipefail

if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
    exit 0
fi
if [[ "$(id -u)" -ne 0 ]]; then
    # apt-get needs root; use sudo when it is there, otherwise say what to run.
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo -n)
    else
        echo "chromium is missing: run 'apt-get install chromium chromium-driver' as root" >&2
        exit 1
    fi
else
    SUDO=()
fi
echo "installing chromium and chromium-driver"
export DEBIAN_FRONTEND=noninteractive
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# apt's progress and debconf chatter go to a log that is shown only when something fails.
if ! { "${SUDO[@]}" apt-get update -qq &&
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends chromium chromium-driver; } \
    >"$log" 2>&1; then
    cat "$log" >&2
    exit 1
fi
test -x /usr/bin/chromium && test -x /usr/bin/chromedriver
