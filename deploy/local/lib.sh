# shellcheck shell=bash
# Helpers shared by deploy/local/stack.sh and deploy/local/bootstrap.sh. Sourced, not run.

# Messages go to stderr so that commands such as `stack.sh env` keep a clean stdout.
say() { printf '[%s] %s\n' "${LOG_TAG:-freshrec}" "$*" >&2; }
die() {
    printf '[%s] ERROR: %s\n' "${LOG_TAG:-freshrec}" "$*" >&2
    exit 1
}

have() { command -v "$1" >/dev/null 2>&1; }

# Major version of the `java` on PATH (17 for "17.0.15"), or 0 if none.
java_major() {
    have java || { echo 0; return; }
    local v
    v=$(java -version 2>&1 | sed -n 's/.*version "\([0-9][0-9]*\).*/\1/p' | head -n 1)
    echo "${v:-0}"
}

# Minor version of the `go` on PATH (25 for go1.25.3), or 0 if none.
go_minor() {
    have go || { echo 0; return; }
    local v
    v=$(go env GOVERSION 2>/dev/null | sed -n 's/^go1\.\([0-9][0-9]*\).*/\1/p')
    echo "${v:-0}"
}

# apt_install PKG...: install Debian packages, as root only.
# - Waits for a concurrent apt/dpkg run instead of failing on its lock.
# - Runs `apt-get update` only when the package lists are missing or stale enough
#   that the install fails.
# - Keeps packaged daemons (the prometheus package ships one on :9090) from being
#   started by the install, through the standard policy-rc.d hook, unless the
#   machine already has its own policy.
apt_install() {
    if [[ $EUID -ne 0 ]] || ! have apt-get; then
        die "missing packages: $*. Install them (Debian/Ubuntu: sudo apt-get install -y --no-install-recommends $*) and re-run."
    fi
    local policy=/usr/sbin/policy-rc.d created_policy=0 rc=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\n# temporary, written by freshrec deploy/local/lib.sh\nexit 101\n' >"$policy"
        chmod +x "$policy"
        created_policy=1
    fi
    local apt=(apt-get -y -q -o DPkg::Lock::Timeout=900 --no-install-recommends)
    export DEBIAN_FRONTEND=noninteractive
    if ! compgen -G '/var/lib/apt/lists/*Packages*' >/dev/null; then
        apt-get -q -o DPkg::Lock::Timeout=900 update >&2 || rc=$?
    fi
    if ((rc == 0)) && ! "${apt[@]}" install "$@" >&2; then
        say "apt-get install failed; refreshing package lists and retrying once"
        apt-get -q -o DPkg::Lock::Timeout=900 update >&2 && "${apt[@]}" install "$@" >&2 || rc=$?
    fi
    ((created_policy)) && rm -f "$policy"
    ((rc == 0)) || die "apt-get install $* failed (see output above)"
}
