#!/bin/sh
# Makes edgeimg's STAND-IN K3s bundle (NOT K3s; for the VM tests) for ARCH
# (amd64 or arm64) in OUTDIR, for `edgeimg build --bundle OUTDIR`.
# See qemu-tests/standin/README.md.
set -eu
[ $# -eq 2 ] || { echo "usage: $0 amd64|arm64 OUTDIR" >&2; exit 2; }
exec "$(dirname "$0")/standin/make-bundle" --arch "$1" --out "$2"
