#!/usr/bin/env bash
# Installs CPython 3.13 (the Lambda runtime's version) into DEST from Debian's own packages,
# without touching the system: this machine runs Debian 12, whose Python is 3.11, and the
# layer's bytecode must be compiled by the runtime's version (Lambda's /opt is read-only, so
# .pyc files of another version are recompiled in memory on every cold start).
#
# How: a private apt state (nothing under /etc or /var changes) reads Debian 13's package
# index from the mirror this machine already uses, downloads the interpreter, its stdlib and
# the C library it was built against, and unpacks them into DEST. The interpreter runs
# through the unpacked dynamic loader, so the system's older glibc is never involved.
# Usage: scripts/runtime-python.sh DEST   (then DEST/bin/python3.13 is the interpreter)
set -euo pipefail

DEST=${1:?usage: runtime-python.sh DEST}
mkdir -p "$DEST" && DEST=$(cd "$DEST" && pwd)
VERSION=3.13
SUITE=trixie
KEYRING=/usr/share/keyrings/debian-archive-keyring.gpg

for tool in apt-get dpkg-deb dpkg; do
  command -v "$tool" >/dev/null || { echo "runtime-python: needs $tool (Debian or Ubuntu)" >&2; exit 1; }
done

case "$(dpkg --print-architecture)" in
  amd64) TRIPLET=x86_64-linux-gnu; LOADER=ld-linux-x86-64.so.2 ;;
  arm64) TRIPLET=aarch64-linux-gnu; LOADER=ld-linux-aarch64.so.1 ;;
  *) echo "runtime-python: unsupported architecture $(dpkg --print-architecture)" >&2; exit 1 ;;
esac

# The Debian mirror this machine is configured with (deb822 or one-line sources).
MIRROR=$(
  { grep -hsE '^URIs:' /etc/apt/sources.list.d/*.sources | awk '{print $2}'
    grep -hsE '^deb ' /etc/apt/sources.list /etc/apt/sources.list.d/*.list |
      sed -E 's/^deb (\[[^]]*\] )?//' | awk '{print $1}'
  } | grep -E '/debian/?$' | head -n1 || true
)
[ -n "$MIRROR" ] || { echo "runtime-python: no Debian mirror in this machine's apt sources" >&2; exit 1; }

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/lists/partial" "$WORK/cache/archives/partial" "$WORK/debs" "$WORK/prefs"
echo "deb [signed-by=$KEYRING] $MIRROR $SUITE main" > "$WORK/sources.list"
APT=(-qq
  -o "Dir::Etc::sourcelist=$WORK/sources.list" -o Dir::Etc::sourceparts=-
  -o "Dir::State::Lists=$WORK/lists" -o "Dir::Cache=$WORK/cache"
  -o "Dir::Etc::preferencesparts=$WORK/prefs" -o Debug::NoLocking=1 -o APT::Sandbox::User=root)

apt-get "${APT[@]}" update
cd "$WORK/debs"
apt-get "${APT[@]}" download \
  "python$VERSION-minimal" "libpython$VERSION-minimal" "libpython$VERSION-stdlib" \
  libc6 zlib1g libexpat1

rm -rf "$DEST"
mkdir -p "$DEST/root" "$DEST/bin"
for deb in *.deb; do dpkg-deb -x "$deb" "$DEST/root"; done
ROOT=$DEST/root
cat > "$DEST/bin/python$VERSION" <<WRAPPER
#!/bin/sh
exec "$ROOT/usr/lib/$TRIPLET/$LOADER" --library-path "$ROOT/usr/lib/$TRIPLET" \\
  "$ROOT/usr/bin/python$VERSION" "\$@"
WRAPPER
chmod +x "$DEST/bin/python$VERSION"
"$DEST/bin/python$VERSION" -c "import sys; assert '%d.%d' % sys.version_info[:2] == '$VERSION', sys.version; print('runtime-python:', sys.version.split()[0])"
