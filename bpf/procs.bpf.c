// SPDX-License-Identifier: GPL-2.0
/* Process events: what each new program is, sent at exec so that user space knows the
 * command and arguments of processes that are gone by the time their packets are read;
 * forks (followed with -f) and exits (caches dropped, selected pids released).
 * Packets leave them room in the ring (ring.h); one that still finds no room is counted
 * (PTCAP_CNT_PROC_LOST), so user space knows its process details may be stale. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "ptcap.h"
#include "owners.h"
#include "who.h"
#include "ring.h"	/* the capture object's ring and counters (user space shares the maps) */

/* Set by user space with -f / -- CMD: the active selectors (enum ptcap_who_bits), so that a
 * child of a selected process is selected too. 0: nothing is followed. */
__u32 follow_who = 0;

SEC("tp_btf/sched_process_fork")
int BPF_PROG(ptcap_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 ppid = parent->tgid, pid = child->tgid;
	struct ptcap_fork *e;
	__u8 one = 1;

	if (child->pid != child->tgid)	/* a new thread, not a new process */
		return 0;
	if (follow_who) {
		struct ptcap_owner o = {};

		/* the parent as a packet of its would be judged (pid, name, user, container) */
		owner_from_task(&o, parent);
		if (who_matches(&o, follow_who))
			bpf_map_update_elem(&ptcap_who_children, &pid, &one, BPF_ANY);
	}
	e = bpf_ringbuf_reserve(&ptcap_events, sizeof(*e), 0);
	if (!e) {
		count(PTCAP_CNT_PROC_LOST);
		return 0;
	}
	e->kind = PTCAP_EV_FORK;
	e->pid = pid;
	e->ppid = ppid;
	e->start_ns = child->start_time;
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(ptcap_exec, struct task_struct *p, pid_t old_pid, struct linux_binprm *bprm)
{
	struct ptcap_exec *e;
	unsigned long start, end;
	__u64 len;

	e = bpf_ringbuf_reserve(&ptcap_events, sizeof(*e), 0);
	if (!e) {
		count(PTCAP_CNT_PROC_LOST);
		return 0;
	}
	e->kind = PTCAP_EV_EXEC;
	e->pid = p->tgid;
	e->ppid = BPF_CORE_READ(p, real_parent, tgid);
	e->start_ns = BPF_CORE_READ(p, group_leader, start_time);
	bpf_probe_read_kernel_str(e->filename, sizeof(e->filename), bprm->filename);
	start = BPF_CORE_READ(p, mm, arg_start);
	end = BPF_CORE_READ(p, mm, arg_end);
	len = end - start;
	asm volatile("if %[n] <= %[max] goto +1; %[n] = %[max]"
		     : [n] "+r"(len) : [max] "i"(PTCAP_ARGS_LEN));
	e->args_len = 0;
	if (len > 0 && bpf_probe_read_user(e->args, len, (void *)start) == 0)
		e->args_len = len;
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(ptcap_exit, struct task_struct *p)
{
	__u32 pid = p->tgid;
	struct ptcap_fork *e;

	/* the process ends with its last thread, which need not be its first: a main thread
	 * that leaves by pthread_exit leaves the others running (do_exit counted this one out
	 * of signal->live before the tracepoint) */
	if (BPF_CORE_READ(p, signal, live.counter) != 0)
		return 0;
	/* the pid is free for reuse now: a new process with it is someone else */
	bpf_map_delete_elem(&ptcap_who_pids, &pid);
	bpf_map_delete_elem(&ptcap_who_children, &pid);
	e = bpf_ringbuf_reserve(&ptcap_events, sizeof(*e), 0);
	if (!e) {
		count(PTCAP_CNT_PROC_LOST);
		return 0;
	}
	e->kind = PTCAP_EV_EXIT;
	e->pid = pid;
	e->ppid = BPF_CORE_READ(p, real_parent, tgid);
	e->start_ns = BPF_CORE_READ(p, group_leader, start_time);	/* the process's, as owners say it */
	bpf_ringbuf_submit(e, BPF_RB_NO_WAKEUP);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
