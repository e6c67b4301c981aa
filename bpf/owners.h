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
	/* whole arrays: the kernel pads names with zeros, so owner_is_task compares all 16 bytes */
	bpf_probe_read_kernel(o->comm, sizeof(o->comm), task->comm);
	bpf_probe_read_kernel(o->pcomm, sizeof(o->pcomm), leader->comm);
}

/* The same task, as it was then: name, user, parent and cgroup too. */
static __always_inline int same_owner(const struct ptcap_owner *a, const struct ptcap_owner *b)
{
	__u64 an[4], bn[4];

	if (a->tid != b->tid || a->start_ns != b->start_ns || a->uid != b->uid || a->gid != b->gid ||
	    a->ppid != b->ppid || a->cgroup_id != b->cgroup_id)
		return 0;
	__builtin_memcpy(an, a->comm, sizeof(a->comm));
	__builtin_memcpy(&an[2], a->pcomm, sizeof(a->pcomm));
	__builtin_memcpy(bn, b->comm, sizeof(b->comm));
	__builtin_memcpy(&bn[2], b->pcomm, sizeof(b->pcomm));
	return an[0] == bn[0] && an[1] == bn[1] && an[2] == bn[2] && an[3] == bn[3];
}

/* Does `o` still describe `task`? The same thread can rename itself (PR_SET_NAME), change
 * user (setuid), exec another program or be reparented while it keeps its sockets. */
static __always_inline int owner_is_task(const struct ptcap_owner *o, struct task_struct *task)
{
	struct task_struct *leader = BPF_CORE_READ(task, group_leader);
	__u64 name[2], lname[2], known[2], lknown[2];

	if (!o->pid || o->tid != (__u32)BPF_CORE_READ(task, pid))
		return 0;
	if (o->uid != BPF_CORE_READ(task, real_cred, uid.val) ||
	    o->gid != BPF_CORE_READ(task, real_cred, gid.val) ||
	    o->ppid != (__u32)BPF_CORE_READ(task, real_parent, tgid) ||
	    o->cgroup_id != BPF_CORE_READ(task, cgroups, dfl_cgrp, kn, id))
		return 0;
	bpf_probe_read_kernel(name, sizeof(name), task->comm);
	bpf_probe_read_kernel(lname, sizeof(lname), leader->comm);
	__builtin_memcpy(known, o->comm, sizeof(known));
	__builtin_memcpy(lknown, o->pcomm, sizeof(lknown));
	return name[0] == known[0] && name[1] == known[1] && lname[0] == lknown[0] && lname[1] == lknown[1];
}

#endif
