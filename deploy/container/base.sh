#!/usr/bin/env bash
# Builds a base image of deploy/Containerfile from Debian packages alone (registries of base images
# need not be reachable): mmdebstrap writes a bookworm root filesystem, podman imports it as
# localhost/faast-debian:KIND. The tarball is cached under CACHE (default ~/.cache/faast/rootfs), keyed
# by the suite, packages and options, so a rebuild only re-imports.
# Usage: base.sh runtime|toolchain [CACHE]   (extra podman options, e.g. --root: $PODMAN_OPTIONS)
set -euo pipefail
kind=$1
cache=${2:-${XDG_CACHE_HOME:-$HOME/.cache}/faast/rootfs}
case "$kind" in
    runtime) packages=python3,python3-venv,passwd ;;
    toolchain) packages=python3,python3-venv,python3-dev,g++,make,passwd ;;
    *) echo "usage: $0 runtime|toolchain [CACHE]" >&2; exit 2 ;;
esac
suite=bookworm
# No docs, manuals or translations: the image serves, nobody reads man pages in it.
options=(--variant=minbase --include="$packages")
for unread in man doc locale info; do options+=(--dpkgopt="path-exclude=/usr/share/$unread/*"); done
key=$(printf '%s ' "$suite" "${options[@]}" | sha256sum | cut -c1-16)
image=localhost/faast-debian:$kind
tarball=$cache/$kind-$key.tar
read -r -a podman_options <<< "${PODMAN_OPTIONS:-}"
if [ "$(podman "${podman_options[@]}" image inspect --format '{{index .Labels "faast.rootfs"}}' "$image" 2>/dev/null)" = "$key" ]; then
    echo "$image is up to date ($key)"
    exit 0
fi
if [ ! -s "$tarball" ]; then
    mkdir -p "$cache"
    mmdebstrap "${options[@]}" "$suite" "$cache/partial-$kind.tar" http://deb.debian.org/debian  # mmdebstrap goes by the .tar suffix
    mv "$cache/partial-$kind.tar" "$tarball"
fi
podman "${podman_options[@]}" import --change "LABEL faast.rootfs=$key" --change 'CMD ["/bin/bash"]' "$tarball" "$image"
echo "$image imported ($key)"
