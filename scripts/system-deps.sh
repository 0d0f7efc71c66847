#!/usr/bin/env bash
# Install the Debian packages that the tests need; with "slow", also the slow tests' (make
# test-slow: testssl.sh, which brings the resolver tools it needs); with "bench", the benchmarks'.
# Does nothing when they are present; needs root (CI runs as root) when they are not.
# The tests: redis-server, nginx-light, systemd (systemd-analyze), chromium (the dashboard),
# wrk (the soak test, make test-slow), curl and openssl (the TLS clients of the HTTPS tests,
# the certificate tests; the TLS bench makes its certificate with openssl), mariadb-server (the
# MySQL recipe's test starts its own mariadbd on a free port), nghttp2-client (h2load: the
# HTTP/2 tests and bench).
# Under CI=1 a missing one fails the tests, not skips them.
set -euo pipefail
want=(redis-server nginx-light systemd chromium wrk curl openssl mariadb-server nghttp2-client)
[ "${1:-}" = "slow" ] && want+=(testssl.sh)
[ "${1:-}" = "bench" ] && want+=(libnginx-mod-http-lua lua-resty-core valgrind)
missing=()
for pkg in "${want[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "system-deps: missing ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root" >&2
    exit 1
fi
echo "system-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
# the packaged services are not wanted: tests start their own on free loopback ports
for svc in redis-server nginx mariadb; do
    service "$svc" stop >/dev/null 2>&1 || true
done
