#!/usr/bin/env bash
# Make promtool and prometheus available for `make test` (alert-rule unit tests and the
# Prometheus integration test). Idempotent: does nothing when both are already on PATH.
#
# Installs Debian's `prometheus` package (needs root). The package's postinst may enable and
# start a system Prometheus on :9090; the tests start their own on temporary ports, so this
# script stops any service the install started (and only that: a Prometheus that was running
# before the install is left alone).
set -euo pipefail

if command -v promtool >/dev/null 2>&1 && command -v prometheus >/dev/null 2>&1; then
    echo "ci_prometheus: $(promtool --version 2>&1 | head -n 1)"
    exit 0
fi

# Where we cannot install: fail under CI (the tests must run there), otherwise warn and let
# the Prometheus tests skip themselves.
cannot_install() {
    echo "ci_prometheus: promtool/prometheus missing and $1;" \
         "install Debian's 'prometheus' package (promtool + prometheus) yourself" >&2
    if [ -n "${CI:-}" ]; then exit 2; fi
    echo "ci_prometheus: CI is not set: the Prometheus tests will be skipped" >&2
    exit 0
}
if [ "$(id -u)" -ne 0 ]; then cannot_install "not running as root"; fi
if ! command -v apt-get >/dev/null 2>&1; then cannot_install "apt-get not found"; fi

# Remember what was running before, so we stop only what the install started.
before="$(pgrep -x prometheus || true)"

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# policy-rc.d exit 101 tells invoke-rc.d not to start services from maintainer scripts
# (containers without systemd would otherwise try, and fail or leave a daemon behind).
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod +x "$policy"
    created_policy=1
fi
cleanup() { if [ "$created_policy" -eq 1 ]; then rm -f "$policy"; fi; }
trap cleanup EXIT
apt-get install -y -qq --no-install-recommends prometheus >/dev/null

# Stop a service the package started despite the policy (systemd hosts ignore policy-rc.d).
if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    if [ -z "$before" ] && systemctl is-active --quiet prometheus 2>/dev/null; then
        systemctl stop prometheus || true
        systemctl disable prometheus >/dev/null 2>&1 || true
    fi
fi
after="$(pgrep -x prometheus || true)"
for pid in $after; do
    case " $before " in
        *" $pid "*) ;;                       # was running before: not ours
        *) kill "$pid" 2>/dev/null || true ;; # started by the install: stop it
    esac
done

command -v promtool >/dev/null && command -v prometheus >/dev/null || {
    echo "ci_prometheus: install finished but promtool/prometheus still not on PATH" >&2
    exit 1
}
echo "ci_prometheus: installed $(promtool --version 2>&1 | head -n 1)"
