#!/usr/bin/env bash
# Install everything StreamSpace needs on a Debian 12 machine, idempotently.
#
# Usage: scripts/install-deps.sh [run|test]
#
#   run   (default) what `make run` needs
#   test  what `make test` needs: also Docker (docker.io, a running dockerd) and debootstrap
#
# Steps (each prints one line when it does something; silent when all is present):
#   1. Debian packages (apt-get; `apt-get update` only when something is missing)
#   2. .venv (python3 -m venv) + `pip install -e '.[dev]'` when the venv is missing or
#      pyproject.toml is newer than the stamp .venv/.installed
#   3. npm packages when package.json exists and node_modules is missing or stale
#   4. (test) .venv-tools: checkov, the manifest scanner of tests/deploy, in a venv of its
#      own because it pins `packaging<24` and pytest 9 needs `packaging>=24`
#      (requirements-tools.txt has the range, constraints-tools.txt the exact pins)
#   5. (test) dockerd started in the background unless a Docker daemon answers
#      (scripts/start-dockerd.sh; `make run` never needs Docker)
set -euo pipefail

MODE="${1:-run}"
case "$MODE" in
    run | test) ;;
    *)
        echo "usage: $0 [run|test]" >&2
        exit 2
        ;;
esac

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV="$ROOT/.venv"
STAMP="$VENV/.installed"
LOG_DIR="$(mktemp -d "${TMPDIR:-/tmp}/streamspace-deps.XXXXXX")"
trap 'rm -rf "$LOG_DIR"' EXIT

APT_PACKAGES=(
    python3 python3-venv
    tigervnc-standalone-server xterm x11-apps x11-utils
    postgresql redis-server chromium bubblewrap
)
if [[ "$MODE" == test ]]; then
    APT_PACKAGES+=(docker.io debootstrap) # the docker platform's tests and image builder
fi
if [[ -f package.json ]] && ! command -v npm >/dev/null 2>&1; then
    APT_PACKAGES+=(npm)
fi

say() { echo "install-deps: $*"; }

die() {
    echo "install-deps: ERROR: $*" >&2
    exit 1
}

# run_logged NAME CMD...: run CMD with its output in a log; show the log's tail on failure.
run_logged() {
    local name="$1"
    shift
    local log="$LOG_DIR/$name.log"
    if ! "$@" >"$log" 2>&1 </dev/null; then
        echo "----- last lines of output of: $* -----" >&2
        tail -n 40 "$log" >&2
        echo "-----" >&2
        return 1
    fi
}

is_installed() {
    [[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" == installed ]]
}

# --- 1. Debian packages ------------------------------------------------------------------
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    is_installed "$pkg" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    command -v apt-get >/dev/null 2>&1 ||
        die "missing Debian packages (${missing[*]}) and apt-get is not available"
    SUDO=()
    if ((EUID != 0)); then
        command -v sudo >/dev/null 2>&1 ||
            die "missing Debian packages (${missing[*]}); run as root or install sudo"
        SUDO=(sudo -n)
    fi
    export DEBIAN_FRONTEND=noninteractive
    say "apt-get install ${missing[*]}"
    run_logged apt-update "${SUDO[@]}" apt-get update -q ||
        die "apt-get update failed"
    run_logged apt-install "${SUDO[@]}" apt-get install -y -q "${missing[@]}" ||
        die "apt-get install ${missing[*]} failed"
fi

# --- 2. Python virtualenv ---------------------------------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
    say "create virtualenv .venv"
    rm -f "$STAMP"
    run_logged venv python3 -m venv "$VENV" || die "python3 -m venv .venv failed"
fi
if [[ ! -f "$STAMP" || pyproject.toml -nt "$STAMP" || constraints.txt -nt "$STAMP" ]]; then
    # constraints.txt pins the exact versions the suite last passed with (the ranges
    # live in pyproject.toml); regenerate it with `pip freeze --exclude-editable`.
    say "pip install -e '.[dev]' -c constraints.txt into .venv"
    run_logged pip "$VENV/bin/pip" install --disable-pip-version-check -q \
        -c constraints.txt -e '.[dev]' ||
        die "pip install -e '.[dev]' failed"
    touch "$STAMP"
fi

# --- 3. npm packages --------------------------------------------------------------------
if [[ -f package.json ]]; then
    command -v npm >/dev/null 2>&1 || die "package.json exists but npm is not installed"
    if [[ ! -d node_modules || package.json -nt node_modules ||
        (-f package-lock.json && package-lock.json -nt node_modules) ]]; then
        if [[ -f package-lock.json ]]; then
            say "npm ci"
            run_logged npm npm ci --no-audit --no-fund || die "npm ci failed"
        else
            say "npm install"
            run_logged npm npm install --no-audit --no-fund || die "npm install failed"
        fi
        touch node_modules
    fi
fi

# --- 4. Manifest scanner venv (tests only) ---------------------------------------------
TOOLS_VENV="$ROOT/.venv-tools"
TOOLS_STAMP="$TOOLS_VENV/.installed"
if [[ "$MODE" == test ]]; then
    if [[ ! -x "$TOOLS_VENV/bin/python" ]]; then
        say "create virtualenv .venv-tools"
        rm -f "$TOOLS_STAMP"
        run_logged venv-tools python3 -m venv "$TOOLS_VENV" || die "python3 -m venv .venv-tools failed"
    fi
    if [[ ! -f "$TOOLS_STAMP" || requirements-tools.txt -nt "$TOOLS_STAMP" ||
        constraints-tools.txt -nt "$TOOLS_STAMP" ]]; then
        say "pip install -r requirements-tools.txt -c constraints-tools.txt into .venv-tools"
        run_logged pip-tools "$TOOLS_VENV/bin/pip" install --disable-pip-version-check -q \
            -c constraints-tools.txt -r requirements-tools.txt ||
            die "pip install -r requirements-tools.txt failed"
        touch "$TOOLS_STAMP"
    fi
fi

# --- 5. Docker daemon (tests only) -----------------------------------------------------
if [[ "$MODE" == test ]]; then
    bash "$ROOT/scripts/start-dockerd.sh" || die "could not start dockerd"
fi
