// SPDX-License-Identifier: GPL-2.0
/* Socket attribution without kprobes: remember which task owns each socket.
 *
 *  - cgroup/sock_create (on the cgroup v2 root): the creating task, for new sockets;
 *  - tp_btf sock_send_length / sock_recv_length: the task that last sent or received;
 *  - tp_btf tcp_sendmsg_locked: the task about to send on a TCP socket;
 *  - iter/task_file: a one-off walk of every process's sockets that existed before start.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include "ptcap.h"
#include "owners.h"

#define AF_INET 2
#define AF_INET6 10

static __always_inline void owner_from_current(struct ptcap_owner *o)
{
	owner_from_task(o, bpf_get_current_task_btf());
}

static __always_inline void touch(struct sock *sk)
{
	struct ptcap_owner *o;
	__u16 family;

	if (!sk)
		return;
	family = sk->__sk_common.skc_family;
	if (family != AF_INET && family != AF_INET6)
		return;
	o = bpf_sk_storage_get(&ptcap_owners, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!o)
		return;
	/* Rewrite only when the task changed: sends are hot. */
	if (o->tid == (__u32)bpf_get_current_pid_tgid() && o->pid)
		return;
	owner_from_current(o);
}

SEC("cgroup/sock_create")
int ptcap_sock_create(struct bpf_sock *ctx)
{
	struct ptcap_owner *o;

	if (ctx->family != AF_INET && ctx->family != AF_INET6)
		return 1;
	o = bpf_sk_storage_get(&ptcap_owners, ctx, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (o)
		owner_from_current(o);
	return 1;
}

SEC("tp_btf/sock_send_length")
int BPF_PROG(ptcap_sock_send, struct sock *sk, int ret, int flags)
{
	touch(sk);
	return 0;
}

/* TCP names its sender before the data is queued: what it sends next (now, or later from
 * timers and ACKs) is this task's, even when threads or processes share the connection. */
SEC("tp_btf/tcp_sendmsg_locked")
int BPF_PROG(ptcap_tcp_send, struct sock *sk, struct msghdr *msg, struct sk_buff *skb, int size_goal)
{
	touch(sk);
	return 0;
}

SEC("tp_btf/sock_recv_length")
int BPF_PROG(ptcap_sock_recv, struct sock *sk, int ret, int flags)
{
	touch(sk);
	return 0;
}

SEC("iter/task_file")
int ptcap_sock_walk(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	struct ptcap_owner *o;
	struct socket *sock;
	struct sock *sk;
	__u16 family;

	if (!task || !file)
		return 0;
	sock = bpf_sock_from_file(file);
	if (!sock)
		return 0;
	sk = sock->sk;
	if (!sk)
		return 0;
	family = sk->__sk_common.skc_family;
	if (family != AF_INET && family != AF_INET6)
		return 0;
	o = bpf_sk_storage_get(&ptcap_owners, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!o || o->pid)	/* live hooks already know better */
		return 0;
	owner_from_task(o, task);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
