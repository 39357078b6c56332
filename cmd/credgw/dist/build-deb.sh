#!/bin/sh
# build-deb.sh BINARY VERSION OUTDIR: make OUTDIR/credgw_DEBVERSION_ARCH.deb
# from a built credgw binary (make build), this directory's systemd unit,
# example config and maintainer scripts, and the docs. Prints the .deb's path.
# `make package` runs it; so does test/package_test.go. Needs dpkg-deb,
# objdump and strip (binutils), gzip.
set -eu

if [ $# -ne 3 ]; then
	echo "usage: $0 BINARY VERSION OUTDIR" >&2
	exit 2
fi
bin=$1 version=$2 out=$3
dist=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$dist/../../.." && pwd)

# A Debian version starts with a digit and has no '-' (this is a native
# package: no Debian revision). A release tag v1.2.3-4-gabcdef gives
# 1.2.3+4+gabcdef; an untagged commit (git describe --always) 0~git<hash>.
v=${version#v}
case $v in
[0-9]*.*) ;;
*) v="0~git$v" ;;
esac
debversion=$(printf '%s' "$v" | tr -- '-_' '++' | tr -cd 'A-Za-z0-9.+~')
arch=$(dpkg --print-architecture)

# Reproducible: every date is the last commit's (or SOURCE_DATE_EPOCH).
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
	SOURCE_DATE_EPOCH=$(git -C "$top" log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
umask 022
chmod 0755 "$root"

install -D -m 0755 "$bin" "$root/usr/bin/credgw"
# A man page per command, from the CLI itself.
"$bin" man --dir "$root/usr/share/man/man1" >/dev/null
gzip -9n "$root/usr/share/man/man1/"*.1
chmod 0644 "$root/usr/share/man/man1/"*.gz
strip --strip-unneeded --remove-section=.comment "$root/usr/bin/credgw"
install -D -m 0644 "$dist/credgw.service" "$root/lib/systemd/system/credgw.service"
# The example config: a conffile, 0640; postinst gives it group credgw
# (dpkg-statoverride), the gateway's user reads it, nobody else.
install -D -m 0640 "$dist/credgw.yaml" "$root/etc/credgw/credgw.yaml"

doc=$root/usr/share/doc/credgw
install -d "$doc"
# The years of the first and last commit (or SOURCE_DATE_EPOCH's).
first=$(git -C "$top" log --reverse --format=%cd --date=format:%Y 2>/dev/null | head -1)
last=$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y)
years=${first:-$last}
[ "$years" = "$last" ] || years="$years-$last"
sed "s/@YEARS@/$years/" "$dist/copyright" >"$doc/copyright"
for f in README.md docs/config.md docs/deploy.md docs/key-ceremony.md; do
	gzip -9n <"$top/$f" >"$doc/$(basename "$f").gz"
done
cat >"$root/changelog" <<CHANGELOG
credgw ($debversion) unstable; urgency=medium

  * Built from the credgw source tree at $version.

 -- credgw maintainers <dev@credgw.invalid>  $(date -u -R -d "@$SOURCE_DATE_EPOCH")
CHANGELOG
gzip -9n <"$root/changelog" >"$doc/changelog.gz"
rm "$root/changelog"
chmod 0644 "$doc"/*
# 0640 on the config is on purpose (postinst above).
install -D -m 0644 /dev/null "$root/usr/share/lintian/overrides/credgw"
echo 'credgw: non-standard-file-perm 0640 != 0644 [etc/credgw/credgw.yaml]' >"$root/usr/share/lintian/overrides/credgw"

# libc6: the newest GLIBC_ symbol version the binary needs (cgo).
glibc=$(objdump -T "$root/usr/bin/credgw" | grep -o 'GLIBC_[0-9.]*' | sed 's/GLIBC_//' | sort -uV | tail -1)

install -d "$root/DEBIAN"
for s in postinst prerm postrm; do
	install -m 0755 "$dist/deb/$s" "$root/DEBIAN/$s"
done
echo /etc/credgw/credgw.yaml >"$root/DEBIAN/conffiles"
chmod 0644 "$root/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
cat >"$root/DEBIAN/control" <<CONTROL
Package: credgw
Version: $debversion
Architecture: $arch
Maintainer: credgw maintainers <dev@credgw.invalid>
Installed-Size: $size
Depends: libc6 (>= $glibc), adduser
Suggests: softhsm2, opensc
Section: net
Priority: optional
Homepage: https://github.com/credgw/credgw
Description: derived PIV credential issuance gateway
 credgw validates a PIV smart card (PKI-AUTH: path, policy, OCSP/CRL, fail
 closed) and issues NIST SP 800-157 derived credentials to a mobile device
 behind a QR code and a numeric password, over a streaming gRPC API. Its CA
 key lives in an HSM reached over PKCS#11.
 .
 This package installs the gateway, a hardened systemd unit (credgw.service)
 running as the system user credgw, and an example /etc/credgw/credgw.yaml.
CONTROL
chmod 0644 "$root/DEBIAN/control"

find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
mkdir -p "$out"
deb="$out/credgw_${debversion}_${arch}.deb"
# DEB_COMPRESSION=gzip builds faster (the tests use it); xz is smaller.
dpkg-deb --build --root-owner-group -Z"${DEB_COMPRESSION:-xz}" "$root" "$deb" >/dev/null
echo "$deb"
