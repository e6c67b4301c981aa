#!/usr/bin/env bash
# Install ptcap into Wireshark for every user of the machine, as Wireshark's own extcaps are.
# Usage: extcap/install-wireshark.sh ROOT   (ROOT: the ptcap tree, with bpf/build made).
# Safe to run again: it rewrites the same files.
#
#   PREFIX (/opt/ptcap)     a root-owned copy of the tree (ptcap/, bpf/build, extcap/help.html)
#                           with its own .venv made from the system's /usr/bin/python3: what
#                           runs for Wireshark, reachable by every user (a checkout's .venv
#                           under a 0700 home is not, and must not run with capabilities)
#   PREFIX/libexec/ptcap-capture
#                           the privileged helper (extcap/ptcap-capture.c): root:wireshark 0750,
#                           file capabilities cap_bpf, cap_perfmon, cap_net_admin
#   Wireshark's extcap folder (tshark -G folders: "Extcap path"): `ptcap`
#   /usr/local/bin/ptcap    the command, for every user (PTCAP_BIN_DIR to put it elsewhere)
#   Wireshark's global Lua plugins folder ("Global Lua Plugins"): ptcap.lua
#   Wireshark's global configuration ("Global configuration"): profiles/ptcap
# and the group `wireshark`, made when missing. Older installs' per-user copies are removed.
set -euo pipefail

say() { printf 'install-wireshark.sh: %s\n' "$*"; }
die() { printf 'install-wireshark.sh: %s\n' "$*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: $0 ROOT"
[ "$(id -u)" -eq 0 ] || die "run as root"
ROOT=$(readlink -f "$1")
PREFIX=${PTCAP_PREFIX:-/opt/ptcap}
GROUP=wireshark
SYSPY=/usr/bin/python3
[ -f "$ROOT/ptcap/cli/extcap.py" ] || die "$ROOT is not a ptcap tree"
ls "$ROOT"/bpf/build/*.bpf.o >/dev/null 2>&1 || die "$ROOT/bpf/build has no BPF objects: run make -C bpf"
command -v tshark >/dev/null || die "tshark is not installed"
[ -x "$SYSPY" ] || die "$SYSPY is missing"

# Wireshark's own folders, as the installed Wireshark reports them
folder() {
  tshark -G folders 2>/dev/null | sed -n "s/^$1:[[:space:]]*//p" | head -1
}
EXTCAP_DIR=$(folder 'Extcap path')
LUA_DIR=$(folder 'Global Lua Plugins')
CONF_DIR=$(folder 'Global configuration')
[ -n "$EXTCAP_DIR" ] && [ -n "$LUA_DIR" ] && [ -n "$CONF_DIR" ] || die "tshark -G folders does not name its extcap, plugin and configuration folders"

# -- the group ---------------------------------------------------------------------------------
if ! getent group "$GROUP" >/dev/null; then
  groupadd --system "$GROUP"
  say "created group $GROUP"
fi

# -- the root-owned copy of the tree ----------------------------------------------------------
install -d -m 755 -o root -g root "$PREFIX" "$PREFIX/bpf" "$PREFIX/extcap" "$PREFIX/libexec"
copy_dir() {     # SRC DST: DST becomes a root-owned copy of SRC (no caches)
  local tmp="$2.new"
  rm -rf "$tmp"
  cp -r --no-preserve=mode,ownership "$1" "$tmp"
  find "$tmp" -name __pycache__ -prune -exec rm -rf {} +
  chown -R root:root "$tmp"
  chmod -R u=rwX,go=rX "$tmp"
  rm -rf "$2"
  mv "$tmp" "$2"
}
copy_dir "$ROOT/ptcap" "$PREFIX/ptcap"
copy_dir "$ROOT/bpf/build" "$PREFIX/bpf/build"
install -m 644 -o root -g root "$ROOT/pyproject.toml" "$PREFIX/pyproject.toml"
install -m 644 -o root -g root "$ROOT/extcap/help.html" "$PREFIX/extcap/help.html"

if [ ! -x "$PREFIX/.venv/bin/python" ]; then
  say "creating $PREFIX/.venv"
  "$SYSPY" -m venv "$PREFIX/.venv"
fi
# the tree's dependencies, and the tree itself on the path (a .pth file: an import finds
# $PREFIX/ptcap, whose bpf/build is beside it)
mapfile -t deps < <("$PREFIX/.venv/bin/python" -I -c '
import tomllib
for d in tomllib.load(open("'"$PREFIX"'/pyproject.toml", "rb"))["project"]["dependencies"]: print(d)')
if ! "$PREFIX/.venv/bin/python" -I -c 'import psutil, docker, kubernetes, grpc' 2>/dev/null; then
  say "installing ptcap's dependencies into $PREFIX/.venv"
fi
"$PREFIX/.venv/bin/pip" install -q --disable-pip-version-check "${deps[@]}" </dev/null
SITE=$("$PREFIX/.venv/bin/python" -I -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
printf '%s\n' "$PREFIX" > "$SITE/ptcap-tree.pth"
chmod 644 "$SITE/ptcap-tree.pth"
"$PREFIX/.venv/bin/python" -I -m compileall -q "$PREFIX/ptcap" >/dev/null
chown -R root:root "$PREFIX/.venv"
chmod -R go-w "$PREFIX"
[ "$("$PREFIX/.venv/bin/python" -I -c 'import ptcap, os; print(os.path.dirname(ptcap.__file__))')" = "$PREFIX/ptcap" ] \
  || die "$PREFIX/.venv does not import $PREFIX/ptcap"

# -- the privileged helper --------------------------------------------------------------------
CC=$(command -v cc || command -v gcc || command -v clang) || die "no C compiler (cc, gcc, clang)"
command -v setcap >/dev/null || die "setcap is missing (Debian package libcap2-bin)"
helper_tmp="$PREFIX/libexec/.ptcap-capture.new"
"$CC" -O2 -Wall -Wextra -Werror -D_FORTIFY_SOURCE=2 -fstack-protector-strong -fPIE -pie \
  -DPTCAP_PYTHON="\"$PREFIX/.venv/bin/python\"" -o "$helper_tmp" "$ROOT/extcap/ptcap-capture.c"
chown "root:$GROUP" "$helper_tmp"
chmod 0750 "$helper_tmp"
setcap cap_bpf,cap_perfmon,cap_net_admin+ep "$helper_tmp"
mv -f "$helper_tmp" "$PREFIX/libexec/ptcap-capture"

# -- Wireshark's global folders ----------------------------------------------------------------
install -d -m 755 "$EXTCAP_DIR" "$LUA_DIR" "$CONF_DIR/profiles/ptcap"
{
  printf '#!/bin/sh\n# ptcap'"'"'s Wireshark extcap, installed by install-wireshark.sh from %s\n' "$ROOT"
  printf 'exec %s/.venv/bin/python -I -m ptcap.cli.extcap "$@"\n' "$PREFIX"
} > "$EXTCAP_DIR/ptcap.new"
chmod 755 "$EXTCAP_DIR/ptcap.new"
mv -f "$EXTCAP_DIR/ptcap.new" "$EXTCAP_DIR/ptcap"

# the command on every user's PATH: this copy, started as the checkout's .venv/bin/ptcap starts
# (the stop signals blocked until ptcap catches them: ptcap/cli/signals.py). Reading files needs
# no privilege; a capture says that it needs root.
BIN_DIR=${PTCAP_BIN_DIR:-/usr/local/bin}
install -d -m 755 "$BIN_DIR"
{
  printf '#!/bin/sh\n# ptcap, installed by install-wireshark.sh from %s\n' "$ROOT"
  printf 'exec /usr/bin/env --block-signal=INT,TERM,HUP %s/.venv/bin/python -I -m ptcap.cli "$@"\n' "$PREFIX"
} > "$BIN_DIR/ptcap.new"
chmod 755 "$BIN_DIR/ptcap.new"
mv -f "$BIN_DIR/ptcap.new" "$BIN_DIR/ptcap"
install -m 644 "$ROOT/lua/ptcap.lua" "$LUA_DIR/ptcap.lua"

# the profile: ptcap's columns; Wireshark's own coloring rules (this version's), ptcap's first
install -m 644 "$ROOT/lua/profile/preferences" "$CONF_DIR/profiles/ptcap/preferences"
{
  cat "$ROOT/lua/profile/colorfilters"
  [ -f "$CONF_DIR/colorfilters" ] && grep -v '^#' "$CONF_DIR/colorfilters"
} > "$CONF_DIR/profiles/ptcap/colorfilters"
chmod 644 "$CONF_DIR/profiles/ptcap/colorfilters"

# Wireshark 4.0 checks a multicheck's boxes from its preference only (an unset one checks
# none), so the global preferences give the interfaces option its default, "any". Only this
# block of the file is ptcap's; the rest is kept.
PREFS="$CONF_DIR/preferences"
{
  [ -f "$PREFS" ] && sed '/^# ptcap begin/,/^# ptcap end/d' "$PREFS"
  printf '# ptcap begin (install-wireshark.sh): the ptcap extcap captures on "any" unless told\n'
  printf 'extcap.ptcap.interfaces: any\n# ptcap end\n'
} > "$PREFS.new"
chmod 644 "$PREFS.new"
mv -f "$PREFS.new" "$PREFS"

# -- per-user copies of older installs: no longer needed (and they would hide these) ------------
for home in "$(getent passwd root | cut -d: -f6)" ${SUDO_USER:+"$(getent passwd "$SUDO_USER" | cut -d: -f6)"}; do
  for f in "$home/.config/wireshark/extcap/ptcap" "$home/.local/lib/wireshark/extcap/ptcap"; do
    if [ -f "$f" ] && grep -q 'installed by .*install-wireshark.sh' "$f"; then
      rm -f "$f"
      say "removed the per-user copy $f"
    fi
  done
  f="$home/.local/lib/wireshark/plugins/ptcap.lua"
  if [ -f "$f" ] && head -1 "$f" | grep -q "^-- ptcap's Wireshark dissector"; then
    rm -f "$f"
    say "removed the per-user copy $f"
  fi
done

say "installed: extcap $EXTCAP_DIR/ptcap, dissector $LUA_DIR/ptcap.lua, profile $CONF_DIR/profiles/ptcap, $PREFIX"
say "members of group $GROUP capture without sudo; add a user with: usermod -aG $GROUP USER (then log in again)"

# -- self-check: root, and a user who is not root ----------------------------------------------
tshark -D 2>/dev/null | grep -q '^[0-9]*\. ptcap (' || die "tshark -D (as root) does not list ptcap"
say "tshark -D lists ptcap"
if id nobody >/dev/null 2>&1; then
  (cd / && runuser -u nobody -- env HOME=/nonexistent tshark -D 2>/dev/null) | grep -q '^[0-9]*\. ptcap (' \
    || die "tshark -D as user nobody does not list ptcap"
  say "tshark -D as user nobody lists ptcap"
fi
