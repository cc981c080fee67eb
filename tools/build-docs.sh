#!/usr/bin/env bash
# Install the docs extra and build the documentation site into site/, strictly:
# any warning (broken link, missing page, unresolved reference) fails the build.
# The build runs docs/scripts/*.py first, regenerating every figure in
# docs/images/ and every printed output in docs/scripts/output/.
# Extra arguments go to `mkdocs build` (e.g. --site-dir /tmp/site).
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check -e ".[docs]"
MPLBACKEND=Agg python3 -m mkdocs build --strict "$@"
