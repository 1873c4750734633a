#!/usr/bin/env bash
# The whole test suite, on a fresh machine too: installs what the browser
# tests of the console need when it is missing (Debian's chromium,
# chromium-driver and firefox-esr with apt-get as root; geckodriver built
# from crates.io), then runs every test.
#   ./test.sh                 # everything
#   ./test.sh --test console  # arguments go to cargo test
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

exec cargo test "$@"
