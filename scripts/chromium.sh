#!/usr/bin/env bash
# chromium.sh — make a headless Chromium available for the live page's
# browser test (services/push TestLivePageInChromium, run by `make test`).
#
#   scripts/chromium.sh   find Chromium ($TREASURE_CHROMIUM, else chromium,
#                         chromium-browser, google-chrome, google-chrome-stable
#                         or headless-shell on PATH) and print its path; else
#                         install Debian's `chromium` package with apt-get when
#                         this runs as root or with password-less sudo (it says
#                         so first); else print the one apt-get line to run and
#                         exit 1.
#
# The test itself fails (never skips) without a browser: this script is what
# lets it run on a fresh machine. TREASURE_CHROMIUM_NO_INSTALL=1 forbids the
# install (find or explain only).
set -euo pipefail

say() { printf 'chromium: %s\n' "$*" >&2; }

find_chromium() {
	if [[ -n ${TREASURE_CHROMIUM:-} ]]; then
		if [[ -x $TREASURE_CHROMIUM ]]; then
			printf '%s\n' "$TREASURE_CHROMIUM"
			return 0
		fi
		say "TREASURE_CHROMIUM=$TREASURE_CHROMIUM is not an executable file"
		return 2
	fi
	local name
	for name in chromium chromium-browser google-chrome google-chrome-stable headless-shell; do
		if command -v "$name" >/dev/null 2>&1; then
			command -v "$name"
			return 0
		fi
	done
	return 1
}

rc=0
find_chromium || rc=$?
if [[ $rc == 0 ]]; then
	exit 0
elif [[ $rc == 2 ]]; then
	exit 1
fi

LINE="apt-get install -y chromium"
if [[ ${TREASURE_CHROMIUM_NO_INSTALL:-} != 1 ]] && command -v apt-get >/dev/null 2>&1; then
	SUDO=()
	if [[ $(id -u) != 0 ]]; then
		if command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
			SUDO=(sudo -n)
		fi
	fi
	if [[ $(id -u) == 0 || ${#SUDO[@]} -gt 0 ]]; then
		say "not found; installing Debian's chromium package for the live page's browser test: ${SUDO[*]:+${SUDO[*]} }$LINE (about 100 MB with its libraries)"
		export DEBIAN_FRONTEND=noninteractive
		if ! "${SUDO[@]}" apt-get install -y chromium >&2; then
			say "install failed; refreshing the package lists (apt-get update) and trying again"
			"${SUDO[@]}" apt-get update >&2
			"${SUDO[@]}" apt-get install -y chromium >&2
		fi
		if find_chromium; then
			exit 0
		fi
		say "apt-get installed chromium, but no chromium is on PATH"
		exit 1
	fi
fi
say "not found, and this script cannot install it here (needs apt-get and root or password-less sudo); install it with: $LINE"
say "(Ubuntu: apt-get install -y chromium-browser; or point TREASURE_CHROMIUM at a Chrome or Chromium binary)"
exit 1
