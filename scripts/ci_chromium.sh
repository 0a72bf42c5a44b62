#!/usr/bin/env bash
# Make Debian's headless Chromium available for the browser tests (report and demo page).
# Idempotent: does nothing when chromium is already on PATH. Needs root to install; under CI
# a missing browser is an error, elsewhere the browser tests skip and say why.
set -euo pipefail

if command -v chromium >/dev/null 2>&1; then
    echo "ci_chromium: $(chromium --version 2>/dev/null | head -n 1)"
    exit 0
fi
cannot_install() {
    echo "ci_chromium: chromium missing and $1; install Debian's 'chromium' package" >&2
    if [ -n "${CI:-}" ]; then exit 2; fi
    echo "ci_chromium: CI is not set: the browser tests will be skipped" >&2
    exit 0
}
if [ "$(id -u)" -ne 0 ]; then cannot_install "not running as root"; fi
if ! command -v apt-get >/dev/null 2>&1; then cannot_install "apt-get not found"; fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
command -v chromium >/dev/null || { echo "ci_chromium: install failed" >&2; exit 1; }
echo "ci_chromium: installed $(chromium --version 2>/dev/null | head -n 1)"
