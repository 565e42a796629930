#!/usr/bin/env bash
# The qemu-an386 firmware against the host, blob by blob: boards/qemu-check.sh qemu-an386 (see there).
# Usage: boards/qemu-an386/check.sh BLOB.itb [BLOB.itb ...]
exec "$(dirname "$0")/../qemu-check.sh" qemu-an386 "$@"
