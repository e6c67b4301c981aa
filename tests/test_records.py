"""The one contract with the kernel: ptcap/kernel/records.py against the BTF clang emits."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ptcap.errors import PtcapError
from ptcap.kernel import records

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "bpf" / "build"


def _build(tmp_path: Path, edit) -> Path:
    """bpf/ copied with ptcap.h edited, and its records object built by bpf/Makefile."""
    src = tmp_path / "bpf"
    src.mkdir()
    for f in (ROOT / "bpf").iterdir():
        if f.is_file():
            shutil.copy(f, src / f.name)
    header = src / "ptcap.h"
    text = header.read_text()
    changed = edit(text)
    assert changed != text, "the edit must change ptcap.h"
    header.write_text(changed)
    subprocess.run(["make", "-s", "-C", str(src), "build/records.bpf.o"], check=True)
    return src / "build" / "records.bpf.o"


def test_every_object_agrees_with_records():
    records._checked.clear()
    records.check_objects(BUILD)
    types = records.ObjectTypes(BUILD / "records.bpf.o")
    assert {l.c_name for l in records.LAYOUTS} <= types.structs.keys()
    assert records.ENUMS.keys() <= types.enums.keys()
    # the objects that use a record were compared too
    assert "ptcap_owner" in records.ObjectTypes(BUILD / "capture.bpf.o").structs
    assert "ptcap_scratch" in records.ObjectTypes(BUILD / "hooks.bpf.o").structs
    assert {"ptcap_cgroup_dir", "ptcap_cgroup_want"} <= records.ObjectTypes(BUILD / "cgroups.bpf.o").structs.keys()


def test_a_field_changed_on_one_side_is_a_clear_error(tmp_path):
    obj = _build(tmp_path, lambda t: t.replace("\t__u32 mntns;", "\t__u64 mntns;", 1))
    with pytest.raises(PtcapError) as err:
        records.check_object(obj)
    message = str(err.value)
    assert "struct ptcap_owner is 80 bytes in the object, 72 in ptcap/kernel/records.py" in message
    assert "struct ptcap_owner.mntns is at 32, 8 bytes in the object" in message
    assert "bpf/ptcap.h and ptcap/kernel/records.py must change together" in message


def test_an_enum_changed_on_one_side_is_a_clear_error(tmp_path):
    obj = _build(tmp_path, lambda t: t.replace("PTCAP_SLOT_EMIT = 2", "PTCAP_SLOT_EMIT = 5", 1))
    with pytest.raises(PtcapError, match=r"enum ptcap_hook_slot: PTCAP_SLOT_EMIT is 5 in the object, "
                                         r"2 in ptcap/kernel/records.py"):
        records.check_object(obj)


@pytest.mark.root
def test_capture_refuses_a_wrong_object_in_one_line(tmp_path):
    """The user's view: a capture with the wrong objects stops before loading anything."""
    obj = _build(tmp_path, lambda t: t.replace("\t__u32 caplen;", "\t__u16 caplen;", 1))
    objects = tmp_path / "objects"
    shutil.copytree(BUILD, objects)
    shutil.copy(obj, objects / "records.bpf.o")
    run = subprocess.run([sys.executable, "-m", "ptcap.cli", "-i", "lo", "-c", "1"], capture_output=True,
                         text=True, timeout=60, env={**os.environ, "PTCAP_BPF_DIR": str(objects)})
    assert run.returncode == 1
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ptcap: "), run.stderr
    assert "struct ptcap_packet.caplen is at 184, 2 bytes in the object" in lines[0]      # records.CAPLEN_AT
