#!/usr/bin/env bash
# Install everything the test suite needs and run it.
#
# On a fresh Debian machine (as root) this installs the system libraries a
# headless napari needs (Xvfb, Mesa's OpenGL, the xcb libraries Qt loads, and
# python3-venv when `python3 -m venv` cannot work yet), then makes or reuses
# the project's virtual environment .venv/ (tools/venv.sh) and installs the
# package into it in editable mode with its test and napari extras, then runs
# pytest with that environment's Python on a virtual display: napari's canvas
# needs OpenGL, which QT_QPA_PLATFORM=offscreen does not provide. Extra
# arguments go to pytest. PYTHON=... chooses the Python that makes .venv/.
set -euo pipefail
cd "$(dirname "$0")/.."

system_packages=(
    xvfb xauth libgl1-mesa-dri libglx-mesa0 libegl1 libxkbcommon-x11-0
    libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0 libxcb-render-util0
    libxcb-xinerama0 libxcb-xinput0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0
    libdbus-1-3 libfontconfig1 libglib2.0-0
)
missing=()
for package in "${system_packages[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
# Debian's python3 makes virtual environments only with python3-venv installed.
if ! .venv/bin/python -m pip --version >/dev/null 2>&1 \
    && ! "${PYTHON:-python3}" -c "import ensurepip, venv" >/dev/null 2>&1; then
    missing+=(python3-venv)
fi
if [ ${#missing[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
        echo "Missing system packages: ${missing[*]}; run this script as root or install them." >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

bash tools/venv.sh test,napari

status=0
xvfb-run -a -s "-screen 0 1280x1024x24" .venv/bin/python -m pytest "$@" || status=$?
if [ "$status" -eq 5 ]; then
    echo "pytest collected no tests: the suite is missing or was deselected entirely." >&2
    exit 1
fi
exit "$status"
