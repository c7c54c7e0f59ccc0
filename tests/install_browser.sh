#!/usr/bin/env bash
# Debian's Chromium + ChromeDriver for the report's headless-browser test (tests/test_report.py).
# A no-op when both are installed; where they cannot be installed it says so and the test skips with the reason.
set -uo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser: no apt-get here: install Chromium and ChromeDriver yourself (the browser test skips)" >&2
    exit 0
fi
SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq \
        --no-install-recommends chromium chromium-driver >/dev/null; }; then
    echo "install_browser: apt-get could not install chromium chromium-driver (the browser test skips)" >&2
fi
exit 0
