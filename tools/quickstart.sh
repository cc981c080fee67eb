#!/usr/bin/env bash
# The README's quick start: make the project's virtual environment (.venv/ at
# the root of the clone, see tools/venv.sh), install the package into it, and
# segment a picture that ships with scikit-image:
#
#     gmm-segment --sample astronaut -k 3
#
# The results go to Result/ in the folder this script is run from. Extra
# arguments go to gmm-segment (e.g. --quiet, -o elsewhere). Use PYTHON=... to
# choose the Python that makes the environment (default: python3 on PATH).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

bash "$root/tools/venv.sh"
"$root/.venv/bin/gmm-segment" --sample astronaut -k 3 "$@"
echo "To use gmm-segment and Python from this environment: . $root/.venv/bin/activate" >&2
