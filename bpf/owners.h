/* The socket → owner map, shared by the capture and attribution objects
 * (user space creates it once and hands the same fd to both). */
#ifndef PTCAP_OWNERS_H
#define PTCAP_OWNERS_H

#include <bpf/bpf_core_read.h>
#include "ptcap.h"

/* Socket-local storage: freed with the socket; BPF_F_CLONE copies a listener's
 * owner to the connections it accepts. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC | BPF_F_CLONE);
	__type(key, int);
	__type(value, struct ptcap_owner);
} ptcap_owners SEC(".maps");

static __always_inline void owner_from_task(struct ptcap_owner *o, struct task_struct *task)
{
	struct task_struct *leader = BPF_CORE_READ(task, group_leader);

	o->pid = BPF_CORE_READ(task, tgid);
	o->tid = BPF_CORE_READ(task, pid);
	o->uid = BPF_CORE_READ(task, real_cred, uid.val);
	o->gid = BPF_CORE_READ(task, real_cred, gid.val);
	o->start_ns = BPF_CORE_READ(leader, start_time);
	o->cgroup_id = BPF_CORE_READ(task, cgroups, dfl_cgrp, kn, id);
	o->mntns = BPF_CORE_READ(task, nsproxy, mnt_ns, ns.inum);
	o->ppid = BPF_CORE_READ(task, real_parent, tgid);
	bpf_probe_read_kernel_str(o->comm, sizeof(o->comm), task->comm);
	bpf_probe_read_kernel_str(o->pcomm, sizeof(o->pcomm), leader->comm);
}

#endif
