#!/usr/bin/env bash
# Compile a built artifact's bytecode with the Lambda runtime's CPython, as Lambda would
# read it: unchecked-hash .pyc files (the code directories are read-only there, so a module
# without its .pyc is compiled again on every cold start). One script for the function and
# the layer (their Makefiles call it through COMPILE_BYTECODE, which `make build` sets).
#
#   compile-bytecode.sh DIR PREFIX     e.g. ARTIFACTS_DIR/python /opt/python
#
# RUNTIME_PYTHON: the interpreter (default: python$PYTHON_VERSION on PATH); PYTHON_VERSION
# (default 3.13) is the version it must be; REQUIRE_BYTECODE=1 makes its absence an error
# instead of a warning.
set -euo pipefail
dir="$1"
prefix="$2"
version="${PYTHON_VERSION:-3.13}"
python="${RUNTIME_PYTHON:-$(command -v "python$version" || true)}"
if [ -n "$python" ] && "$python" -c \
    "import sys; sys.exit('%d.%d' % sys.version_info[:2] != '$version')"; then
  echo "compiling bytecode with $python"
  "$python" -m compileall -q --invalidation-mode unchecked-hash -s "$dir" -p "$prefix" "$dir"
elif [ "${REQUIRE_BYTECODE:-0}" = 1 ]; then
  echo "no CPython $version to compile the bytecode of $dir" >&2
  exit 1
else
  echo "warning: no CPython $version: $dir ships without bytecode" >&2
fi
