#!/usr/bin/env bash
# Install ptcap on Debian 12: system packages, .venv with the `ptcap` command, BPF objects,
# and the Wireshark extcap + Lua dissector. Safe to run again; needs root; asks nothing.
set -euo pipefail
cd "$(dirname "$(readlink -f "$0")")"
ROOT=$(pwd)

say() { printf 'install.sh: %s\n' "$*"; }
die() { printf 'install.sh: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "run as root (apt packages, BPF build)"

PACKAGES=(clang llvm make gcc libc6-dev libbpf1 libbpf-dev bpftool libpcap0.8 libpcap-dev
          tshark tcpdump iproute2 iptables nftables python3 python3-venv psmisc
          docker.io containerd busybox-static file libcap2-bin
          wireshark-qt xvfb xauth xdotool x11-utils imagemagick dbus at-spi2-core python3-pyatspi
          golang-go curl openssl iperf3 strace)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  say "creating .venv"
  "$PY" -m venv .venv
fi
say "installing the ptcap package into .venv"
.venv/bin/pip install -q --disable-pip-version-check -e ".[test]" </dev/null
# The command: Python started with the stop signals blocked, until ptcap catches them
# (ptcap/cli/signals.py). pip's script let a Ctrl-C in Python's first 50 ms print a traceback,
# or be swallowed by site's .pth processing and the capture run on.
printf '#!/bin/sh\n# written by install.sh: see ptcap/cli/signals.py\nexec /usr/bin/env --block-signal=INT,TERM,HUP "%s" -m ptcap.cli "$@"\n' \
  "$ROOT/.venv/bin/python" > .venv/bin/ptcap.new
chmod 755 .venv/bin/ptcap.new
mv .venv/bin/ptcap.new .venv/bin/ptcap

say "building BPF objects"
make -s -C bpf

# The kernel matrix (.ci/kernels): qemu, the Debian 12 kernels it boots (the versions README's
# "Kernels" section was verified on) and virtme-ng, in a venv of its own.
KERNEL_PACKAGES=(${PTCAP_KERNEL_PACKAGES:-qemu-system-x86 linux-image-6.1.0-57-amd64 linux-image-6.12.117+deb12-amd64})
VNG_VENV=${VNG_VENV:-/opt/vng-venv}
missing=()
for p in "${KERNEL_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing the kernel matrix's packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
fi
if [ ! -x "$VNG_VENV/bin/vng" ]; then
  say "installing virtme-ng into $VNG_VENV"
  "$PY" -m venv "$VNG_VENV"
  "$VNG_VENV/bin/pip" install -q --disable-pip-version-check virtme-ng </dev/null
fi

# Wireshark integration (extcap + Lua dissector), when present in this tree.
if [ -x extcap/install-wireshark.sh ]; then
  extcap/install-wireshark.sh "$ROOT"
fi

say "done: $ROOT/.venv/bin/ptcap"
