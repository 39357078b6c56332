#!/bin/sh
# base-image.sh IMAGE: make the Debian 12 base image IMAGE (e.g.
# localhost/debian-base:bookworm) from Debian's mirror with debootstrap,
# unless podman has it already. `make image` runs it; no registry needed.
set -eu

image=${1:?usage: $0 IMAGE}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if podman image exists "$image"; then
	exit 0
fi
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
echo "base-image.sh: debootstrap --variant=minbase bookworm from $mirror" >&2
debootstrap --variant=minbase bookworm "$dir" "$mirror" >&2
# No package lists or caches in the image.
rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/apt/archives/*.deb
tar -C "$dir" -c . | podman import --change 'CMD ["/bin/bash"]' - "$image" >&2
