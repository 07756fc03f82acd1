#!/usr/bin/env bash
# Install what the demo and the tests need on a fresh Debian machine (idempotent):
# Debian packages (npm and python3-venv when missing; with --test: chromium, nginx, prosody,
# prometheus, wrk, valgrind, Java + Maven for Keycloak, LemonLDAP::NG's portal), a virtualenv
# in .venv with the pinned Python packages and this project, and the test OpenID Provider's
# npm packages (npm ci); with --test also a few source files of Jitsi Meet's web client from
# the pinned npm tarball and the pinned Keycloak distribution from Maven Central.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=()
# The demo and the tests run the test OpenID Provider on Node (the pinned node from npm);
# npm itself and Python's venv module come from Debian when missing.
command -v npm >/dev/null || apt_packages+=(nodejs npm)
python3 -c "import ensurepip, venv" 2>/dev/null || apt_packages+=(python3-venv)
if [[ "${1:-}" == "--test" ]]; then
  command -v chromium >/dev/null || apt_packages+=(chromium)
  # Tests start the real nginx in front of the gateway (tests/test_nginx.py).
  [[ -x /usr/sbin/nginx ]] || command -v nginx >/dev/null || apt_packages+=(nginx)
  # docs/deploy.md's snippets are checked with the real tools (tests/test_deploy_docs.py):
  # Prosody's prosodyctl, Prometheus' promtool (the Grafana dashboard's queries).
  [[ -x /usr/bin/prosodyctl ]] || apt_packages+=(prosody)
  [[ -x /usr/bin/promtool ]] || apt_packages+=(prometheus)
  # The benchmark's single sign-on and bare-redirect load (benchmarks/wrk.py; --smoke in tests).
  command -v wrk >/dev/null || apt_packages+=(wrk)
  # Its instructions per operation (callgrind_control; --smoke in tests).
  command -v callgrind_control >/dev/null || apt_packages+=(valgrind)
  # A real Keycloak (tests/test_keycloak.py): Java to run it, Maven to fetch it from Central.
  command -v java >/dev/null || apt_packages+=(openjdk-17-jre-headless)
  command -v mvn >/dev/null || apt_packages+=(maven)
  # LemonLDAP::NG's portal as a second real OpenID Provider (tests/test_lemonldap.py), run
  # under plackup; the Perl modules its OpenID Connect issuer and captcha load at start-up
  # that the package only recommends or does not name (docs/lemonldap.md). The FastCGI
  # server is not run; it is listed because the portal was tested with its dependencies.
  [[ -f /usr/share/lemonldap-ng/portal/htdocs/index.psgi ]] || apt_packages+=(
    liblemonldap-ng-portal-perl lemonldap-ng-fastcgi-server libplack-perl
    libgd-securityimage-perl libimage-magick-perl libstring-random-perl
    libcrypt-openssl-rsa-perl libcrypt-openssl-bignum-perl libconvert-base32-perl
    libio-string-perl libipc-run-perl libmime-tools-perl libunicode-string-perl
  )
fi
if ((${#apt_packages[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "setup: need root to apt-get install ${apt_packages[*]}" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${apt_packages[@]}" >/dev/null
fi

if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --disable-pip-version-check -r requirements-dev.txt
.venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .

if [[ ! -x tests/op/node_modules/.bin/node ]] || [[ tests/op/package-lock.json -nt tests/op/node_modules ]]; then
  (cd tests/op && npm ci --no-audit --no-fund --loglevel=error)
fi
if [[ "${1:-}" == "--test" ]]; then
  # Jitsi Meet's own URL-reading code, the judge of the URLs the gateway delivers.
  bash tests/op/fetch-jitsi-source.sh
  # Keycloak's server distribution from Maven Central, pinned and checked, unpacked once into
  # the cache tests/support/keycloak.py reads (each test run starts a copy of it).
  bash tests/op/fetch-keycloak.sh
fi
