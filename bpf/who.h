/* The process selectors (--pid, --pname, --uid, -f, containers), shared by the capture
 * object (which tests each packet's owner) and the process-event object (which, with -f,
 * selects the children of selected processes at fork). User space fills the maps once and
 * hands the same fds to both objects. */
#ifndef PTCAP_WHO_H
#define PTCAP_WHO_H

#include "ptcap.h"

#define WHO_SET(name, key_t, n)				\
	struct {						\
		__uint(type, BPF_MAP_TYPE_HASH);		\
		__uint(max_entries, n);				\
		__type(key, key_t);				\
		__type(value, __u8);				\
	} name SEC(".maps")

WHO_SET(ptcap_who_pids, __u32, 65536);
WHO_SET(ptcap_who_uids, __u32, 1024);
WHO_SET(ptcap_who_mntns, __u32, 4096);
/* Containers' cgroup v2 ids: admitted at cgroup_mkdir (bpf/cgroups.bpf.c) or by user space. */
WHO_SET(ptcap_who_cgroups, __u64, 65536);
/* -f: processes born after the start to a selected process. A child stays selected when it
 * execs another program or changes user: it is followed, not matched. */
WHO_SET(ptcap_who_children, __u32, 65536);

struct ptcap_comm_key {
	char name[PTCAP_COMM_LEN];
};
WHO_SET(ptcap_who_comms, struct ptcap_comm_key, 1024);

/* Does an owner match the selectors (`who`: enum ptcap_who_bits) the user gave? */
static __always_inline int who_matches(struct ptcap_owner *o, __u32 who)
{
	if (!who)
		return 1;
	if (!o->pid)
		return 0;
	if ((who & PTCAP_WHO_FOLLOW) && bpf_map_lookup_elem(&ptcap_who_children, &o->pid))
		return 1;
	if (who & (PTCAP_WHO_PIDS | PTCAP_WHO_COMMS)) {
		int hit = 0;

		if ((who & PTCAP_WHO_PIDS) && bpf_map_lookup_elem(&ptcap_who_pids, &o->pid))
			hit = 1;
		if (!hit && (who & PTCAP_WHO_COMMS) && bpf_map_lookup_elem(&ptcap_who_comms, o->pcomm))
			hit = 1;
		if (!hit)
			return 0;
	}
	if ((who & PTCAP_WHO_UIDS) && !bpf_map_lookup_elem(&ptcap_who_uids, &o->uid))
		return 0;
	/* the container kind: a selected container's mount namespace or cgroup */
	if ((who & PTCAP_WHO_MNTNS) && !bpf_map_lookup_elem(&ptcap_who_mntns, &o->mntns) &&
	    !bpf_map_lookup_elem(&ptcap_who_cgroups, &o->cgroup_id))
		return 0;
	return 1;
}

#endif
