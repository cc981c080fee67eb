#!/usr/bin/env bash
# Install the docs extra and build the documentation site into site/, strictly:
# any warning (broken link, missing page, unresolved reference) fails the build.
# The build runs docs/scripts/*.py first, regenerating every figure in
# docs/images/ and every printed output in docs/scripts/output/.
# Extra arguments go to `mkdocs build` (e.g. --site-dir /tmp/site).
set -euo pipefail
cd "$(dirname "$0")/.."

# as in tools/test.sh: Debian's python3 marks its packages externally managed
export PIP_BREAK_SYSTEM_PACKAGES=1
python3 -m pip install --quiet --disable-pip-version-check -e ".[docs]"
MPLBACKEND=Agg python3 -m mkdocs build --strict "$@"
