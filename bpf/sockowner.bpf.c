// SPDX-License-Identifier: GPL-2.0
/* Socket attribution without kprobes: remember which task owns each socket.
 *
 *  - cgroup/sock_create (on the cgroup v2 root): the creating task, for new sockets;
 *  - cgroup/connect4/6, sendmsg4/6 (same root): the task connecting or sending a datagram;
 *  - tp_btf sock_send_length / sock_recv_length: the task that last sent or received;
 *  - tp_btf tcp_sendmsg_locked: the task about to send on a TCP socket;
 *    (fentry on sock_sendmsg, sock_recvmsg, tcp_sendmsg_locked where a tracepoint is missing);
 *  - sockets that existed before start: a one-off walk. iter/task_file notes which task holds
 *    each socket inode (in ptcap_walk); iter/tcp and iter/udp, run in every network namespace,
 *    then give each socket that owner. The socket pointer a file walk reaches is untrusted on
 *    newer kernels (bpf_sk_storage_get refuses it), while the socket iterators' pointers are
 *    trusted on every kernel.
 *  - tp_btf inet_sock_set_state: when a TCP connection starts closing (and at each later
 *    step), its owner is kept by connection in ptcap_conns, for the packets sent and received
 *    after its socket is gone.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "ptcap.h"
#include "owners.h"
#include "conns.h"

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
	/* Rewrite only when the task changed (or its name, user, program): sends are hot. */
	if (!owner_is_task(o, bpf_get_current_task_btf()))
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

/* connect() (TCP's SYN, a UDP socket's peer) and an unconnected UDP sendmsg, on the cgroup v2
 * root, before anything is sent: the first packets of a socket no walk found (one made before
 * the start and not yet connected or bound: no socket table holds it) and of one a process
 * got from another name the task sending them. */
static __always_inline int touch_addr(struct bpf_sock_addr *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	struct ptcap_owner *o;

	if (!sk)
		return 1;
	o = bpf_sk_storage_get(&ptcap_owners, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (o && !owner_is_task(o, bpf_get_current_task_btf()))
		owner_from_current(o);
	return 1;
}

SEC("cgroup/connect4")
int ptcap_connect4(struct bpf_sock_addr *ctx)
{
	return touch_addr(ctx);
}

SEC("cgroup/connect6")
int ptcap_connect6(struct bpf_sock_addr *ctx)
{
	return touch_addr(ctx);
}

SEC("cgroup/sendmsg4")
int ptcap_sendmsg4(struct bpf_sock_addr *ctx)
{
	return touch_addr(ctx);
}

SEC("cgroup/sendmsg6")
int ptcap_sendmsg6(struct bpf_sock_addr *ctx)
{
	return touch_addr(ctx);
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

/* Kernels without those tracepoints (sock_send_length and sock_recv_length came with 6.2,
 * tcp_sendmsg_locked later than 6.12): fentry on the functions that would fire them, where
 * the kernel has BPF trampolines. User space loads one of each pair. */
SEC("fentry/sock_sendmsg")
int BPF_PROG(ptcap_fentry_sock_send, struct socket *sock)
{
	if (sock)
		touch(sock->sk);
	return 0;
}

SEC("fentry/tcp_sendmsg_locked")
int BPF_PROG(ptcap_fentry_tcp_send, struct sock *sk)
{
	touch(sk);
	return 0;
}

SEC("fentry/sock_recvmsg")
int BPF_PROG(ptcap_fentry_sock_recv, struct socket *sock)
{
	if (sock)
		touch(sock->sk);
	return 0;
}

/* Socket inode → the task that holds it, filled by the file walk, read by the socket walks. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(max_entries, 131072);
	__type(key, __u64);
	__type(value, struct ptcap_owner);
} ptcap_walk SEC(".maps");

SEC("iter/task_file")
int ptcap_task_walk(struct bpf_iter__task_file *ctx)
{
	struct task_struct *task = ctx->task;
	struct file *file = ctx->file;
	struct ptcap_owner o = {};
	struct socket *sock;
	__u16 family;
	__u64 ino;

	if (!task || !file)
		return 0;
	sock = bpf_sock_from_file(file);
	if (!sock)
		return 0;
	family = BPF_CORE_READ(sock, sk, __sk_common.skc_family);
	if (family != AF_INET && family != AF_INET6)
		return 0;
	ino = BPF_CORE_READ(file, f_inode, i_ino);
	owner_from_task(&o, task);
	/* A socket several processes hold goes to the first one walked. */
	bpf_map_update_elem(&ptcap_walk, &ino, &o, BPF_NOEXIST);
	return 0;
}

static __always_inline void adopt(struct sock *sk)
{
	struct ptcap_owner *known, *o;
	__u64 ino;

	ino = BPF_CORE_READ(sk, sk_socket, file, f_inode, i_ino);
	if (!ino)
		return;
	known = bpf_map_lookup_elem(&ptcap_walk, &ino);
	if (!known)
		return;
	o = bpf_sk_storage_get(&ptcap_owners, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!o || o->pid)	/* live hooks already know better */
		return;
	*o = *known;
}

SEC("iter/tcp")
int ptcap_tcp_walk(struct bpf_iter__tcp *ctx)
{
	struct sock_common *skc = ctx->sk_common;
	struct tcp_sock *tp;

	if (!skc)
		return 0;
	tp = bpf_skc_to_tcp_sock(skc);	/* full sockets only: no request or time-wait ones */
	if (tp)
		adopt((struct sock *)tp);
	return 0;
}

SEC("iter/udp")
int ptcap_udp_walk(struct bpf_iter__udp *ctx)
{
	struct udp_sock *udp = ctx->udp_sk;

	if (udp)
		adopt((struct sock *)udp);
	return 0;
}

#define IPPROTO_TCP 6

/* An established connection's flow, as its sender sends it: for its packets forwarded (NATed)
 * to and from other namespaces, where its socket cannot be looked up. */
static __always_inline void note_flow(const struct sock *sk)
{
	struct ptcap_flow_key key = {};
	struct ptcap_owner *o;

	if (sk->sk_protocol != IPPROTO_TCP)
		return;
	o = bpf_sk_storage_get(&ptcap_owners, (struct sock *)sk, 0, 0);
	if (!o || !o->pid)
		return;
	key.proto = IPPROTO_TCP;
	key.sport = bpf_htons(sk->__sk_common.skc_num);
	key.dport = sk->__sk_common.skc_dport;
	if (sk->__sk_common.skc_family == AF_INET) {
		key.saddr[0] = sk->__sk_common.skc_rcv_saddr;
		key.daddr[0] = sk->__sk_common.skc_daddr;
	} else if (sk->__sk_common.skc_family == AF_INET6) {
		key.v6 = 1;
		BPF_CORE_READ_INTO(&key.saddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&key.daddr, sk, __sk_common.skc_v6_daddr);
	} else {
		return;
	}
	bpf_map_update_elem(&ptcap_flows, &key, o, BPF_ANY);
}

/* A TCP connection's owner, by connection, from the moment it starts closing: its FIN, the
 * peer's answers, RSTs sent for it by the kernel's own socket and the ACKs of its time-wait
 * are seen after the socket (and its storage) may be gone. */
SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(ptcap_tcp_state, const struct sock *sk, const int oldstate, const int newstate)
{
	struct ptcap_conn_key key = {};
	struct ptcap_owner *o;

	if (newstate == TCP_ESTABLISHED) {
		note_flow(sk);
		return 0;
	}
	if (newstate != TCP_FIN_WAIT1 && newstate != TCP_CLOSE_WAIT && newstate != TCP_CLOSE &&
	    newstate != TCP_LAST_ACK && newstate != TCP_CLOSING && newstate != TCP_FIN_WAIT2 &&
	    newstate != TCP_TIME_WAIT)
		return 0;
	if (oldstate == TCP_SYN_SENT || oldstate == TCP_LISTEN || oldstate == TCP_CLOSE)
		return 0;	/* never connected: nothing to tear down */
	if (sk->sk_protocol != IPPROTO_TCP)
		return 0;
	o = bpf_sk_storage_get(&ptcap_owners, (struct sock *)sk, 0, 0);
	if (!o || !o->pid)
		return 0;
	key.family = sk->__sk_common.skc_family;
	key.netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	key.lport = bpf_htons(sk->__sk_common.skc_num);
	key.rport = sk->__sk_common.skc_dport;
	if (key.family == AF_INET) {
		__builtin_memcpy(key.laddr, &sk->__sk_common.skc_rcv_saddr, 4);
		__builtin_memcpy(key.raddr, &sk->__sk_common.skc_daddr, 4);
	} else if (key.family == AF_INET6) {
		BPF_CORE_READ_INTO(&key.laddr, sk, __sk_common.skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&key.raddr, sk, __sk_common.skc_v6_daddr);
	} else {
		return 0;
	}
	bpf_map_update_elem(&ptcap_conns, &key, o, BPF_ANY);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
