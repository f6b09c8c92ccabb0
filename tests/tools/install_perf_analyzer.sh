#!/usr/bin/env bash
# Installs a perf_analyzer that runs on this Debian/Python 3.11 machine into DEST (bin/ and lib/),
# from registries only: the binary inside the tritonclient 2.51.0 wheel (newer wheels need glibc
# 2.38; `pip install perf-analyzer` is an empty placeholder), libb64 from Debian's libb64-0d, and
# libcudart.so.12 from PyPI's nvidia-cuda-runtime-cu12 (the binary links it even for CPU servers).
# Usage: install_perf_analyzer.sh DEST [PYTHON]
set -euo pipefail
dest=$(mkdir -p "$1" && cd "$1" && pwd)
python=${2:-python3}
[ -x "$dest/bin/perf_analyzer" ] && [ -e "$dest/lib/libb64.so.0d" ] && [ -e "$dest/lib/libcudart.so.12" ] && exit 0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$dest/bin" "$dest/lib"
"$python" -m pip download --quiet --no-deps --dest "$work" tritonclient==2.51.0 'nvidia-cuda-runtime-cu12==12.*'
"$python" - "$work" "$dest" <<'PY'
import shutil, sys, zipfile
from pathlib import Path
work, dest = Path(sys.argv[1]), Path(sys.argv[2])
wanted = {"tritonclient-2.51.0.data/data/bin/perf_analyzer": dest / "bin" / "perf_analyzer"}
for wheel in work.glob("*.whl"):
    with zipfile.ZipFile(wheel) as archive:
        for name in archive.namelist():
            target = wanted.get(name) or (dest / "lib" / "libcudart.so.12" if name.endswith("/libcudart.so.12") else None)
            if target:
                with archive.open(name) as source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out)
                target.chmod(0o755)
PY
cd "$work"
apt-get download libb64-0d >/dev/null 2>&1 || { $(command -v sudo) apt-get update -q >/dev/null && apt-get download libb64-0d >/dev/null; }
dpkg-deb -x libb64-0d_*.deb extracted
cp extracted/usr/lib/*/libb64.so.0d* "$dest/lib/"
[ -e "$dest/lib/libb64.so.0d" ] || ln -sf "$(ls "$dest"/lib/libb64.so.0d* | head -1)" "$dest/lib/libb64.so.0d"
LD_LIBRARY_PATH="$dest/lib" "$dest/bin/perf_analyzer" --version >/dev/null 2>&1 || LD_LIBRARY_PATH="$dest/lib" "$dest/bin/perf_analyzer" --help >/dev/null
echo "perf_analyzer installed in $dest"
