#!/usr/bin/env bash
# Install ptcap's Wireshark extcap and Lua dissector for root and, under sudo, for the
# invoking user. Usage: extcap/install-wireshark.sh ROOT   (ROOT: the project's directory,
# whose .venv runs the capture). Safe to run again: it rewrites the same files.
#
# Where Wireshark looks (per user):
#   extcap, Wireshark 4.0:  ~/.config/wireshark/extcap
#   extcap, Wireshark 4.1+: ~/.local/lib/wireshark/extcap
#   Lua plugins:            ~/.local/lib/wireshark/plugins
set -euo pipefail

say() { printf 'install-wireshark.sh: %s\n' "$*"; }
die() { printf 'install-wireshark.sh: %s\n' "$*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: $0 ROOT"
ROOT=$(readlink -f "$1")
PYTHON="$ROOT/.venv/bin/python"
[ -x "$PYTHON" ] || die "$PYTHON is missing: run install.sh first"
[ -f "$ROOT/ptcap/cli/extcap.py" ] || die "$ROOT is not a ptcap tree"

# the launcher Wireshark runs: the tree's extcap/ptcap with the .venv's absolute path in it
launcher() {
  printf '#!/bin/sh\n# installed by %s/extcap/install-wireshark.sh\n' "$ROOT"
  printf 'PTCAP_PYTHON=%q\nexport PTCAP_PYTHON\n' "$PYTHON"
  sed -n '/^exec /p' "$ROOT/extcap/ptcap"
}

install_for() {        # USER HOME
  local user=$1 home=$2 dir
  [ -d "$home" ] || { say "skipping $user: no home directory $home"; return 0; }
  local group
  group=$(id -gn "$user")
  for dir in "$home/.config/wireshark/extcap" "$home/.local/lib/wireshark/extcap"; do
    install -d "$dir"
    launcher > "$dir/ptcap.new"
    chmod 755 "$dir/ptcap.new"
    mv -f "$dir/ptcap.new" "$dir/ptcap"
  done
  install -d "$home/.local/lib/wireshark/plugins"
  install -m 644 "$ROOT/lua/ptcap.lua" "$home/.local/lib/wireshark/plugins/ptcap.lua"
  if [ "$user" != root ]; then
    # only what this script made: the directories it may have created, and its files
    local d
    for d in .config .config/wireshark .config/wireshark/extcap .local .local/lib \
             .local/lib/wireshark .local/lib/wireshark/extcap .local/lib/wireshark/plugins; do
      [ "$(stat -c %u "$home/$d")" = 0 ] && chown "$user:$group" "$home/$d"
    done
    chown "$user:$group" "$home/.config/wireshark/extcap/ptcap" "$home/.local/lib/wireshark/extcap/ptcap" \
      "$home/.local/lib/wireshark/plugins/ptcap.lua"
  fi
  say "installed for $user: extcap in $home/.config/wireshark/extcap and $home/.local/lib/wireshark/extcap, dissector in $home/.local/lib/wireshark/plugins"
}

install_for root "$(getent passwd root | cut -d: -f6)"
if [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
  install_for "$SUDO_USER" "$(getent passwd "$SUDO_USER" | cut -d: -f6)"
  say "note: capturing needs root (or CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON); Wireshark run as $SUDO_USER lists ptcap but a capture reports the missing permission"
fi

if command -v tshark >/dev/null; then
  if tshark -D 2>/dev/null | grep -q '^[0-9]*\. ptcap ('; then
    say "tshark -D lists ptcap"
  else
    die "tshark -D does not list ptcap"
  fi
fi
