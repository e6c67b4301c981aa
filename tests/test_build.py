"""The BPF build names its target architecture (x86 and arm64), and builds arm64 objects from
an arm64 kernel's BTF: the registers the uprobes read are that architecture's. No root needed."""
from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, run

BPF = ROOT / "bpf"
# A Debian arm64 kernel package (apt-get download linux-image-<version>-arm64-unsigned): its
# image carries the kernel's BTF, the types an arm64 build is compiled against.
ARM64_DEB = os.environ.get("PTCAP_ARM64_KERNEL_DEB", "")


def _cflags(*make_args: str) -> str:
    return run(["make", "-s", "-C", str(BPF), *make_args, "print-cflags"]).stdout


@pytest.mark.parametrize("machine, arch", [("x86_64", "x86"), ("aarch64", "arm64")])
def test_makefile_maps_the_machine_to_libbpfs_target(machine, arch):
    for flags in (_cflags(f"MACHINE={machine}"), _cflags(f"ARCH={arch}")):
        assert re.findall(r"-D__TARGET_ARCH_\w+", flags) == [f"-D__TARGET_ARCH_{arch}"], flags


def test_makefile_detects_this_machine():
    arch = {"x86_64": "x86", "aarch64": "arm64"}[os.uname().machine]
    assert re.findall(r"-D__TARGET_ARCH_\w+", _cflags()) == [f"-D__TARGET_ARCH_{arch}"]


def test_another_architecture_needs_its_btf(tmp_path):
    other = "arm64" if os.uname().machine == "x86_64" else "x86"
    tree = tmp_path / "bpf"
    shutil.copytree(BPF, tree, ignore=shutil.ignore_patterns("build"))
    res = subprocess.run(["make", "-s", "-C", str(tree), f"ARCH={other}"], capture_output=True, text=True)
    assert res.returncode != 0
    assert f"ARCH={other} is not this machine's" in res.stderr and "give BTF=" in res.stderr


def _btf_of_image(image: bytes) -> bytes:
    """The kernel's own BTF inside an (uncompressed) arm64 Image: the blob that starts with
    BTF's header (magic 0xeb9f, version 1, header length 24)."""
    at = image.find(struct.pack("<HBBI", 0xEB9F, 1, 0, 24))
    assert at >= 0, "no BTF in the kernel image"
    _, _, _, hdr_len, _, _, str_off, str_len = struct.unpack_from("<HBBIIIII", image, at)
    return image[at:at + hdr_len + str_off + str_len]


def _struct_size(obj: Path, name: str) -> int | None:
    dump = run(["bpftool", "btf", "dump", "file", str(obj)]).stdout
    m = re.search(rf"STRUCT '{name}' size=(\d+)", dump)
    return int(m.group(1)) if m else None


@pytest.mark.skipif(os.uname().machine != "x86_64" or not ARM64_DEB,
                    reason="cross-building for arm64 needs PTCAP_ARM64_KERNEL_DEB (a Debian arm64 kernel "
                           "package) on an x86_64 machine")
def test_arm64_objects_build_from_an_arm64_kernels_btf(tmp_path):
    run(["dpkg-deb", "-x", ARM64_DEB, str(tmp_path / "deb")])
    image = next((tmp_path / "deb" / "boot").glob("vmlinuz-*"))
    btf = tmp_path / "arm64.btf"
    btf.write_bytes(_btf_of_image(image.read_bytes()))
    tree = tmp_path / "bpf"       # a copy: the tree's own build/ is not touched
    shutil.copytree(BPF, tree, ignore=shutil.ignore_patterns("build"))
    run(["make", "-s", "-C", str(tree), "ARCH=arm64", f"BTF={btf}"])
    objects = sorted(p.name for p in (tree / "build" / "arm64").glob("*.bpf.o"))
    assert objects == sorted(p.name.replace(".bpf.c", ".bpf.o") for p in BPF.glob("*.bpf.c"))
    for name in objects:
        assert "eBPF" in run(["file", str(tree / "build" / "arm64" / name)]).stdout
    # the uprobes read arm64's registers (struct user_pt_regs), x86's read its own pt_regs
    keylog = tree / "build" / "arm64" / "keylog.bpf.o"
    assert _struct_size(keylog, "user_pt_regs") == 272          # regs[31], sp, pc, pstate
    assert _struct_size(BPF / "build" / "keylog.bpf.o", "pt_regs") == 168    # x86-64's
    assert _struct_size(BPF / "build" / "keylog.bpf.o", "user_pt_regs") is None
    # every CO-RE relocation of the arm64 objects resolves against that kernel's BTF (what
    # libbpf does at load; bpftool keeps the types and fields they use): the uprobes' reads
    # land on user_pt_regs.regs, where the x86 object's register reads find nothing
    for name in objects:
        if name != "records.bpf.o":         # types only, no programs to relocate
            run(["bpftool", "gen", "min_core_btf", str(btf), str(tmp_path / "min.btf"),
                 str(tree / "build" / "arm64" / name)])
    run(["bpftool", "gen", "min_core_btf", str(btf), str(tmp_path / "min.btf"), str(keylog)])
    assert re.search(r"STRUCT 'user_pt_regs' size=272 vlen=1\n\s+'regs'",
                     run(["bpftool", "btf", "dump", "file", str(tmp_path / "min.btf")]).stdout)
    run(["bpftool", "gen", "min_core_btf", str(btf), str(tmp_path / "min.btf"), str(BPF / "build" / "keylog.bpf.o")])
    assert "pt_regs" not in run(["bpftool", "btf", "dump", "file", str(tmp_path / "min.btf")]).stdout
