#!/usr/bin/env bash
# System packages the tests use, from Debian's archive (no browser or server downloads at test time):
#   chromium       headless browser tests of report.html and the labelling page (Playwright drives /usr/bin/chromium)
#   redis-server   the server-backed LLM response cache (llm.cache_backend=redis), started by the tests
#   bash scripts/system_packages.sh      (setup.sh calls it; installs only what is missing; needs root or sudo)
# Without root or sudo it prints the apt-get line and leaves the machine alone: the tests that need a
# missing package skip, naming it (MOLOCH_REQUIRE_SYSTEM=1, set by .ci/run, makes that a failure).
set -euo pipefail
WANT=(chromium redis-server)
missing=()
for pkg in "${WANT[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
  echo "system_packages: no apt-get here; install ${missing[*]} with your package manager for the tests that use them"
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "system_packages: not root; run: sudo apt-get install -y ${missing[*]}"
    exit 0
  fi
fi
echo "system_packages: installing ${missing[*]} (apt-get, about a minute)"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
