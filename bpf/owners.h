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

/* Task fields are read by direct loads through the task's BTF pointer (fault-checked PROBE_MEM
 * loads, relocated by CO-RE like BPF_CORE_READ; a NULL on the way reads as 0, as a failed probe
 * read did): a probe-read helper call per field cost every send about 35 ns a field
 * (bench/send_bench.py). Every task handed in is a BTF pointer: current, an iterator's, a
 * tracepoint's. */
static __always_inline __u64 task_cgroup_id(struct task_struct *task)
{
	return task->cgroups->dfl_cgrp->kn->id;
}

/* A task name's 16 bytes as two words (one load each). */
static __always_inline __u64 comm_word(const char *comm, int i)
{
	return ((const __u64 *)comm)[i];
}

static __always_inline void owner_from_task(struct ptcap_owner *o, struct task_struct *task)
{
	struct task_struct *leader = task->group_leader;
	const struct cred *cred = task->real_cred;
	__u64 w[4];

	o->pid = task->tgid;
	o->tid = task->pid;
	o->uid = cred->uid.val;
	o->gid = cred->gid.val;
	o->start_ns = leader->start_time;
	o->cgroup_id = task_cgroup_id(task);
	o->mntns = task->nsproxy->mnt_ns->ns.inum;
	o->ppid = task->real_parent->tgid;
	/* whole arrays: the kernel pads names with zeros, so owner_is_task compares all 16 bytes */
	w[0] = comm_word(task->comm, 0);
	w[1] = comm_word(task->comm, 1);
	w[2] = comm_word(leader->comm, 0);
	w[3] = comm_word(leader->comm, 1);
	__builtin_memcpy(o->comm, w, sizeof(o->comm));
	__builtin_memcpy(o->pcomm, &w[2], sizeof(o->pcomm));
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
 * user (setuid), exec another program, be reparented or move to another cgroup (a
 * container's, which selects it) while it keeps its sockets. */
static __always_inline int owner_is_task(const struct ptcap_owner *o, struct task_struct *task)
{
	struct task_struct *leader;
	const struct cred *cred;
	__u64 known[4];

	if (!o->pid || o->tid != (__u32)task->pid)
		return 0;
	cred = task->real_cred;
	if (o->uid != cred->uid.val || o->gid != cred->gid.val ||
	    o->ppid != (__u32)task->real_parent->tgid || o->cgroup_id != task_cgroup_id(task))
		return 0;
	leader = task->group_leader;
	__builtin_memcpy(known, o->comm, sizeof(o->comm));
	__builtin_memcpy(&known[2], o->pcomm, sizeof(o->pcomm));
	return comm_word(task->comm, 0) == known[0] && comm_word(task->comm, 1) == known[1] &&
	       comm_word(leader->comm, 0) == known[2] && comm_word(leader->comm, 1) == known[3];
}

#endif
