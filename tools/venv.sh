#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment, .venv/ at the root of
# the clone, and install the package into it in editable mode, with the extras
# given as the first argument (comma-separated, e.g. "test,napari"; none for
# the package alone).
#
#     bash tools/venv.sh                # the estimator and the gmm-segment command
#     bash tools/venv.sh test,napari    # plus the test tools and the napari plugin
#     PYTHON=/usr/bin/python3 bash tools/venv.sh
#
# The environment is made with `$PYTHON -m venv` (PYTHON defaults to the
# python3 on PATH), so nothing is installed into that Python itself: Debian's
# python3 refuses pip installs outside a virtual environment (PEP 668). On
# Debian, `python3 -m venv` needs the python3-venv package; as root, this
# script installs it with apt when it is missing.
#
# A second run reuses .venv/ and skips pip when the same extras were already
# installed from the same pyproject.toml. Delete .venv/ to start afresh.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
extras=${1:-}
python=${PYTHON:-python3}
venv=$root/.venv
stamp_file=$venv/.gmm-segmenter-installed

if ! "$venv/bin/python" -m pip --version >/dev/null 2>&1; then
    if ! "$python" -c "import ensurepip, venv" >/dev/null 2>&1; then
        # Debian ships venv's pip bootstrap (ensurepip) in python3-venv.
        if [ "$(id -u)" -ne 0 ]; then
            echo "$python cannot create virtual environments; install python3-venv" \
                "(apt-get install python3-venv) or run this script as root." >&2
            exit 1
        fi
        echo "Installing python3-venv with apt..." >&2
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
        if ! "$python" -c "import ensurepip, venv" >/dev/null 2>&1; then
            echo "$python still cannot create virtual environments after installing" \
                "python3-venv; set PYTHON to a Python that can (e.g. PYTHON=/usr/bin/python3)." >&2
            exit 1
        fi
    fi
    echo "Creating the virtual environment $venv with $("$python" -c 'import sys; print(sys.executable)')..." >&2
    # --clear: an unusable .venv/ (no pip, or a Python that is gone) is made anew.
    "$python" -m venv --clear "$venv"
fi

# Install only when something asked for is missing: the package installed in
# editable mode from this clone, and each extra installed from this
# pyproject.toml (its digest is kept in $stamp_file).
digest=$("$venv/bin/python" -c '
import hashlib, sys
print(hashlib.sha256(open(sys.argv[1], "rb").read()).hexdigest()[:16])
' "$root/pyproject.toml")
wanted=(core)
IFS=',' read -r -a requested <<<"$extras"
for extra in "${requested[@]}"; do
    extra=${extra// /}
    [ -n "$extra" ] && wanted+=("$extra")
done

needed=0
"$venv/bin/python" - "$root" <<'EOF' || needed=1
import json, pathlib, sys
from importlib import metadata

root = pathlib.Path(sys.argv[1])
try:
    direct_url = json.loads(metadata.distribution("gmm-segmenter").read_text("direct_url.json") or "{}")
except metadata.PackageNotFoundError:
    sys.exit(1)
editable = direct_url.get("dir_info", {}).get("editable", False)
sys.exit(0 if editable and direct_url.get("url") == root.as_uri() else 1)
EOF
if [ "$needed" -eq 0 ]; then
    for extra in "${wanted[@]}"; do
        grep -qxF "$digest $extra" "$stamp_file" 2>/dev/null || needed=1
    done
fi

if [ "$needed" -eq 1 ]; then
    target=$root
    [ -n "$extras" ] && target="$root[$extras]"
    echo "Installing $target into $venv (editable)..." >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e "$target"
    # Keep the stamps of other extras only if they were made from this pyproject.toml.
    {
        grep "^$digest " "$stamp_file" 2>/dev/null || true
        printf "$digest %s\n" "${wanted[@]}"
    } | sort -u >"$stamp_file.new"
    mv "$stamp_file.new" "$stamp_file"
fi
