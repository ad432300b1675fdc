#!/bin/sh
# Makes the Debian base images that deploy/Containerfile starts FROM, where
# no registry can be reached: a debootstrap minbase of bookworm, imported as
# docker.io/library/debian:bookworm and tagged ...:bookworm-slim. Does
# nothing when both are present. Needs root, podman and debootstrap.
set -eu
: "${CONTAINERS_CONF:=$(cd "$(dirname "$0")" && pwd)/containers.conf}"
export CONTAINERS_CONF
img=docker.io/library/debian
if podman image exists $img:bookworm && podman image exists $img:bookworm-slim; then
	exit 0
fi
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
root=$(mktemp -d /var/tmp/ferry-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
echo "base-images: debootstrap bookworm minbase (about 30 s)" >&2
debootstrap --variant=minbase bookworm "$root" "$mirror" >"$root.log" 2>&1 || { cat "$root.log" >&2; rm -f "$root.log"; exit 1; }
rm -f "$root.log"
# Without PATH in the image, commands are not found in its containers.
tar -C "$root" -c . | podman import \
	--change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
	--change 'CMD ["bash"]' - $img:bookworm >/dev/null
podman tag $img:bookworm $img:bookworm-slim
