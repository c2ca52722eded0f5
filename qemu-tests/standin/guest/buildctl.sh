#!/bin/sh
# edgeimg STAND-IN for buildctl: NOT BuildKit. For edgeimg's VM tests only.
# Made by qemu-tests/standin/make-bundle; shipped as bin/buildctl inside an
# archive named like nerdctl-full's release asset. It builds nothing.
case ${1:-} in
    --version|-v) echo "buildctl v0.0.0-standin (edgeimg STAND-IN, NOT BuildKit)"; exit 0 ;;
esac
echo "edgeimg stand-in buildctl (NOT BuildKit): cannot ${1:-do anything}; the stand-in bundle has no BuildKit" >&2
exit 1
