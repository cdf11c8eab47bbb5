#!/usr/bin/env bash
# Build the test disk image (raw, VHDX, VMDK, QCOW2, E01) under OUT (default: a temp dir).
# Needs root for the ntfs-3g FUSE mount, and mkntfs/ntfs-3g (Debian ntfs-3g), qemu-img
# (qemu-utils), ewfacquire (ewf-tools) and openssl. The test session builds the same thing
# itself (tests/image/conftest.py); nothing built here is committed.
set -euo pipefail
cd "$(dirname "$0")/../../.."
out="${1:-$(mktemp -d)}"
python3 -m tests.image.imagedata "$out"
