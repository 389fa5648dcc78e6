#!/usr/bin/env bash
# Installs CPython 3.13 (the Lambda runtime's version) into DEST from Debian's own packages,
# without touching the system: this machine runs Debian 12, whose Python is 3.11, and the
# layer's bytecode must be compiled by the runtime's version (Lambda's /opt is read-only, so
# .pyc files of another version are recompiled in memory on every cold start).
#
# How: a private apt state (nothing under /etc or /var changes) reads Debian 13's package
# index from the mirror this machine already uses, downloads the interpreter, its stdlib and
# the C library and the other shared libraries its standard library's extension modules
# were built against (OpenSSL 3.5 for ssl and hashlib, libffi for ctypes, ...), and unpacks
# them into DEST. The interpreter runs through the unpacked dynamic loader with the unpacked
# libraries first, so the system's older glibc and OpenSSL are never involved: the stdlib's
# `ssl` (which botocore and urllib3 import) otherwise fails against Debian 12's libcrypto.
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
# The interpreter's packages and the libraries they depend on (ncurses, readline and
# Berkeley DB, for the interactive and dbm modules, are left out: nothing here uses them).
apt-get "${APT[@]}" download \
  "python$VERSION-minimal" "libpython$VERSION-minimal" "libpython$VERSION-stdlib" \
  libc6 zlib1g libexpat1 libssl3t64 libzstd1 libffi8 libbz2-1.0 liblzma5 libuuid1 libsqlite3-0

rm -rf "$DEST"
mkdir -p "$DEST/root" "$DEST/bin"
for deb in *.deb; do dpkg-deb -x "$deb" "$DEST/root"; done
ROOT=$DEST/root
# --argv0 makes sys.executable this wrapper, not the bare binary (which the system's loader
# cannot run), so whatever starts the interpreter again (compileall's and multiprocessing's
# worker processes, subprocess.run([sys.executable, ...])) gets a working one. With DEST/lib
# beside DEST/bin, the interpreter finds its standard library from there.
ln -s root/usr/lib "$DEST/lib"
cat > "$DEST/bin/python$VERSION" <<WRAPPER
#!/bin/sh
exec "$ROOT/usr/lib/$TRIPLET/$LOADER" --library-path "$ROOT/usr/lib/$TRIPLET" \\
  --argv0 "$DEST/bin/python$VERSION" "$ROOT/usr/bin/python$VERSION" "\$@"
WRAPPER
chmod +x "$DEST/bin/python$VERSION"
# Debian compiles the standard library's bytecode when the package is installed (py3compile
# in its postinst), which unpacking skips; without it, every process run with -B (as the
# benchmark runs them) would compile each stdlib module it imports from source.
"$DEST/bin/python$VERSION" -m compileall -q -j 0 "$ROOT/usr/lib/python$VERSION" >/dev/null
# It must run programs as the benchmark runs them (-S -P, code on PYTHONPATH), with the
# extension modules botocore, urllib3, asyncio and pydantic's imports need.
mkdir -p "$WORK/check"
cat > "$WORK/check/runtime_check.py" <<'CHECK'
import sys
import _ssl, ssl, hashlib, _hashlib, ctypes, _asyncio, _decimal, _json, _uuid, bz2, lzma, zlib
import pyexpat, sqlite3
hashlib.sha256(b"x").hexdigest()
ssl.create_default_context()
CHECK
PYTHONPATH="$WORK/check" "$DEST/bin/python$VERSION" -S -P -c "import runtime_check, sys, subprocess
assert '%d.%d' % sys.version_info[:2] == '$VERSION', sys.version
subprocess.run([sys.executable, '-c', 'import ssl'], check=True)
print('runtime-python:', sys.version.split()[0])"
