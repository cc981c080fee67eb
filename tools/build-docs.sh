#!/usr/bin/env bash
# Install the docs extra into the project's virtual environment .venv/
# (tools/venv.sh) and build the documentation site into site/, strictly:
# any warning (broken link, missing page, unresolved reference) fails the build.
# The build runs docs/scripts/*.py first, regenerating every figure in
# docs/images/ and every printed output in docs/scripts/output/.
# Extra arguments go to `mkdocs build` (e.g. --site-dir /tmp/site).
set -euo pipefail
cd "$(dirname "$0")/.."

bash tools/venv.sh docs
MPLBACKEND=Agg .venv/bin/python -m mkdocs build --strict "$@"
