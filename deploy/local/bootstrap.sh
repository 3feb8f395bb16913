#!/usr/bin/env bash
# Prepares this machine to develop and test freshrec:
#   - system tools the local stack needs: Java 17+ (Kafka), Maven (fetches the Kafka jars),
#     Prometheus + promtool, make; installed with apt-get when missing and running as root,
#     otherwise it says what to install;
#   - Go >= 1.21 (builds the versitygw S3 server): checked only, see the message if missing;
#   - the freshrec Python package, editable, with the test and bench extras
#     (pip install -e '.[test,bench]'), redone only when pyproject.toml changes.
# Idempotent and silent when everything is already there. Kafka jars and the versitygw
# binary are fetched by `deploy/local/stack.sh up` itself (cached under .stack/).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
LOG_TAG=bootstrap
# shellcheck source=deploy/local/lib.sh
source "$SCRIPT_DIR/lib.sh"

PYTHON=${PYTHON:-python3}
STACK_DIR=${FRESHREC_STACK_DIR:-$REPO_ROOT/.stack}

ensure_system_packages() {
    local missing=()
    # Kafka 4.x brokers need Java 17+; Debian's default JRE is 17 on bookworm, 21 on trixie.
    (($(java_major) >= 17)) || missing+=(default-jre-headless)
    have mvn || missing+=(maven)
    have make || missing+=(make)
    { have prometheus && have promtool; } || missing+=(prometheus)
    { have flock && have setsid; } || missing+=(util-linux)
    if ((${#missing[@]})); then
        say "installing system packages: ${missing[*]}"
        apt_install "${missing[@]}"
    fi
    (($(java_major) >= 17)) ||
        die "Java 17+ is needed for Kafka 4.x, but 'java' is version $(java_major). Install a JDK/JRE 17+ and put it first on PATH."
}

check_go() {
    local minor
    minor=$(go_minor)
    # versitygw's go.mod asks for Go 1.25; Go >= 1.21 fetches that toolchain by itself
    # (GOTOOLCHAIN=auto). Debian's golang-go package is older than that, hence no apt here.
    if ((minor < 21)); then
        die "Go >= 1.21 is needed to build the versitygw S3 server ($(if have go; then go env GOVERSION; else echo 'go not found'; fi)).
  Install it from the official Go distribution (e.g. into /usr/local/go) and put its bin on PATH."
    fi
}

check_python() {
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null ||
        die "Python 3.11+ is needed; '$PYTHON' is $("$PYTHON" --version 2>&1 || echo missing). Set PYTHON=/path/to/python3.11."
}

# Editable install of the repo with its test and bench extras. Skipped when the same
# pyproject.toml was already installed into the same interpreter and the distribution
# is still there (pip itself takes several seconds even when there is nothing to do).
install_python_package() {
    local pyproject=$REPO_ROOT/pyproject.toml marker want
    if [[ ! -f $pyproject ]]; then
        say "no pyproject.toml yet; skipping the Python package install"
        return 0
    fi
    marker=$STACK_DIR/bootstrap/pip-install.key
    want="$(sha256sum "$pyproject" | cut -d' ' -f1) $("$PYTHON" -c 'import sys; print(sys.executable)')"
    if [[ -f $marker && $(<"$marker") == "$want" ]] && "$PYTHON" - "$pyproject" <<'EOF' 2>/dev/null; then
import importlib.metadata, sys, tomllib
with open(sys.argv[1], "rb") as f:
    importlib.metadata.distribution(tomllib.load(f)["project"]["name"])
EOF
        return 0
    fi
    say "installing the Python package (pip install -e '.[test,bench]')…"
    PIP_ROOT_USER_ACTION=ignore "$PYTHON" -m pip install -q --disable-pip-version-check \
        -e "${REPO_ROOT}[test,bench]" ||
        die "pip install -e '.[test,bench]' failed (output above)"
    mkdir -p "$(dirname "$marker")"
    echo "$want" >"$marker"
}

main() {
    check_python
    ensure_system_packages
    check_go
    install_python_package
}

main "$@"
