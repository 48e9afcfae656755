#!/usr/bin/env bash
# qemu's user-mode emulator, for the test that runs `ferris-sql` on an emulated CPU older than
# the build's target (x86-64-v3, .cargo/config.toml) and expects it refused by name, not an
# illegal instruction. Not a service: nothing to start.
#
#   bash tests/services/qemu.sh install   # apt-get install qemu-user, when missing (x86-64 only)
set -euo pipefail

# shellcheck source=tests/services/common.sh
. "$(dirname "$0")/common.sh"

case "${1:-}" in
  install)
    if [ "$(uname -m)" != x86_64 ]; then
      echo "== qemu: not needed on $(uname -m)"
    elif ! command -v qemu-x86_64 >/dev/null 2>&1; then
      echo "== qemu: installing Debian's qemu-user"
      apt_install qemu-user
    else
      echo "== qemu: present ($(qemu-x86_64 --version | head -n 1))"
    fi
    ;;
  *)
    echo "usage: $0 install" >&2
    exit 2
    ;;
esac
