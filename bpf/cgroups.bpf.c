// SPDX-License-Identifier: GPL-2.0
/* Container admission: a new cgroup v2 directory whose name says it is a wanted container
 * is added to the capture's cgroup selector at mkdir, before any process runs in it, so a
 * container selected by --container-id/-name/--pod-name is captured from its first packet.
 * Every new directory's name and parent are kept too (user space names the cgroup of a
 * container that is gone by the time its packets are read).
 *
 * An object of its own: a kernel where tp_btf/cgroup_mkdir does not load loses only this
 * (user space then admits containers when their runtime reports them).
 *
 * Runtimes name a container's cgroup <id> (cgroupfs drivers, containerd's /<namespace>/<id>)
 * or <runtime>-<id>.scope (systemd drivers): user space writes each such name of each full
 * id it learns; --container-id's prefix is compared here, at the id's place in either form.
 * A directory made below an admitted one is admitted too (podman's libpod-<id>.scope/container). */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "ptcap.h"

/* The capture object's cgroup selector (user space shares the map). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u8);
} ptcap_who_cgroups SEC(".maps");

/* The directory names a wanted container's cgroup may have (user space writes each layout
 * of each full id learnt from a runtime's create event: <id>, docker-<id>.scope, ...). */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct ptcap_cgroup_name);
	__type(value, __u8);
} ptcap_who_cgnames SEC(".maps");

/* Every new cgroup v2 directory: its name and parent, kept after it is removed, so user space
 * names the cgroup of a container that lived for a second (its directory is gone by the
 * time its packets are read). Least recently made ones go first. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 8192);
	__type(key, __u64);
	__type(value, struct ptcap_cgroup_dir);
} ptcap_cgroup_dirs SEC(".maps");

/* --container-id: the id or its prefix, matched here (set by user space before attach). */
struct ptcap_cgroup_want ptcap_want = {};

/* Scratch for the new directory's name (one per CPU: too big for the stack). */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ptcap_cgroup_dir);
} ptcap_cgroup_scratch SEC(".maps");

/* Does the name hold --container-id's prefix at `at` (after "<runtime>-" when at > 0)? */
static __always_inline int prefix_at(const char *name, __u32 at)
{
	__u32 i;

	if (at && name[(at - 1) & 127] != '-')
		return 0;
	for (i = 0; i < PTCAP_CONTAINER_ID_LEN; i++) {
		if (i >= ptcap_want.len)
			return 1;
		if (name[(at + i) & 127] != ptcap_want.id[i])
			return 0;
	}
	return 1;
}

SEC("tp_btf/cgroup_mkdir")
int BPF_PROG(ptcap_cgroup_mkdir, struct cgroup *cgrp, const char *path)
{
	struct ptcap_cgroup_dir *d;
	struct cgroup *parent;
	__u64 cgid, parent_id;
	__u32 zero = 0;
	__u8 one = 1;
	int hit = 0;

	if (BPF_CORE_READ(cgrp, root, hierarchy_id) != 0)	/* a cgroup v1 hierarchy */
		return 0;
	cgid = BPF_CORE_READ(cgrp, kn, id);
	parent = (struct cgroup *)BPF_CORE_READ(cgrp, self.parent);
	parent_id = parent ? BPF_CORE_READ(parent, kn, id) : 0;
	d = bpf_map_lookup_elem(&ptcap_cgroup_scratch, &zero);
	if (!d)
		return 0;
	__builtin_memset(d, 0, sizeof(*d));
	d->parent_id = parent_id;
	if (bpf_probe_read_kernel_str(d->name.name, sizeof(d->name.name), BPF_CORE_READ(cgrp, kn, name)) <= 1)
		return 0;
	bpf_map_update_elem(&ptcap_cgroup_dirs, &cgid, d, BPF_ANY);

	if (parent_id && bpf_map_lookup_elem(&ptcap_who_cgroups, &parent_id))
		hit = 1;
	else if (bpf_map_lookup_elem(&ptcap_who_cgnames, &d->name))
		hit = 1;
	else if (ptcap_want.len) {
		/* <id>, then the systemd drivers' <runtime>-<id>.scope: crio-, docker-, libpod-,
		 * nerdctl-, containerd-, cri-containerd- */
		hit = prefix_at(d->name.name, 0) || prefix_at(d->name.name, 5) ||
		      prefix_at(d->name.name, 7) || prefix_at(d->name.name, 8) ||
		      prefix_at(d->name.name, 11) || prefix_at(d->name.name, 15);
	}
	if (hit)
		bpf_map_update_elem(&ptcap_who_cgroups, &cgid, &one, BPF_ANY);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
