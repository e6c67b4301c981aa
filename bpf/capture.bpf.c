// SPDX-License-Identifier: GPL-2.0
/* Packet capture at tc (TCX): copy the packet and its owner into the ring buffer.
 *
 * Reached by a tail call from the filter program user space assembles from the
 * pcap-filter expression; that program leaves the filter's snap length in cb[0].
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>
#include "ptcap.h"
#include "owners.h"
#include "ring.h"
#include "who.h"

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define TC_ACT_UNSPEC (-1)

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16384);
	__type(key, struct ptcap_iface_key);
	__type(value, struct ptcap_iface);
} ptcap_ifaces SEC(".maps");

/* Filter → capture: slots 0/1 tc ingress/egress, 2/3 cgroup_skb ingress/egress. */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 4);
	__type(key, __u32);
	__type(value, __u32);
} ptcap_capture_progs SEC(".maps");

struct ptcap_config ptcap_config = {};

static __always_inline int owner_from_sock(struct bpf_sock *sk, struct ptcap_owner *out)
{
	struct ptcap_owner *o;

	sk = bpf_sk_fullsock(sk);
	if (!sk)
		return 0;
	o = bpf_sk_storage_get(&ptcap_owners, sk, 0, 0);
	if (!o || !o->pid)
		return 0;
	__builtin_memcpy(out, o, sizeof(*out));
	return 1;
}

extern void *bpf_cast_to_kern_ctx(void *ctx) __ksym;

#define PF_KTHREAD 0x00200000

/* The owner of a socket sending a packet. The owner hooks learn a UDP socket's sender only
 * after the send returns, so when processes or threads share the socket (fork, thread pools)
 * the packet would carry the previous sender. A UDP packet leaves in its sender's own call,
 * so the current task is trusted when it can be that sender: a user task in the socket's
 * network namespace, the packet leaving by a device of that namespace (a packet forwarded
 * from another namespace is sent from softirq, on behalf of whichever task was running).
 * It becomes the socket's owner. (TCP also sends from timers and ACKs: tp_btf
 * tcp_sendmsg_locked names its sender before the data is queued.) */
static __always_inline int owner_of_sender(struct __sk_buff *ctx, struct bpf_sock *sk,
					   struct ptcap_owner *out)
{
	struct sk_buff *skb;
	struct task_struct *task;
	struct ptcap_owner *o;
	__u32 task_ns, sock_ns, dev_ns;

	sk = bpf_sk_fullsock(sk);
	if (!sk)
		return 0;
	o = bpf_sk_storage_get(&ptcap_owners, sk, 0, 0);
	if (!o || !o->pid)
		return 0;
	if (sk->protocol == IPPROTO_UDP) {
		task = bpf_get_current_task_btf();
		if ((__u32)BPF_CORE_READ(task, pid) != o->tid &&
		    !(BPF_CORE_READ(task, flags) & PF_KTHREAD)) {
			skb = bpf_cast_to_kern_ctx(ctx);
			task_ns = BPF_CORE_READ(task, nsproxy, net_ns, ns.inum);
			sock_ns = BPF_CORE_READ(skb, sk, __sk_common.skc_net.net, ns.inum);
			dev_ns = BPF_CORE_READ(skb, dev, nd_net.net, ns.inum);
			if (task_ns && task_ns == sock_ns && sock_ns == dev_ns)
				owner_from_task(o, task);
		}
	}
	__builtin_memcpy(out, o, sizeof(*out));
	return 1;
}

/* Find the local socket of a packet from its addresses. `local_is_dst` tells which end
 * is ours: the destination for received packets, the source for sent ones. */
static __always_inline int owner_by_lookup(struct __sk_buff *skb, __u32 l3off, int local_is_dst,
					   struct ptcap_owner *out)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	__u32 size, l4off;
	__u8 proto;
	__u16 ports[2];
	int found;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, l3off, &ip, sizeof(ip)) < 0)
			return 0;
		if (ip.frag_off & bpf_htons(0x3fff))
			return 0;
		proto = ip.protocol;
		l4off = l3off + ip.ihl * 4;
		if (local_is_dst) {
			t.ipv4.saddr = ip.saddr;
			t.ipv4.daddr = ip.daddr;
		} else {
			t.ipv4.saddr = ip.daddr;
			t.ipv4.daddr = ip.saddr;
		}
		size = sizeof(t.ipv4);
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, l3off, &ip6, sizeof(ip6)) < 0)
			return 0;
		proto = ip6.nexthdr;
		l4off = l3off + sizeof(ip6);
		if (local_is_dst) {
			__builtin_memcpy(t.ipv6.saddr, &ip6.saddr, 16);
			__builtin_memcpy(t.ipv6.daddr, &ip6.daddr, 16);
		} else {
			__builtin_memcpy(t.ipv6.saddr, &ip6.daddr, 16);
			__builtin_memcpy(t.ipv6.daddr, &ip6.saddr, 16);
		}
		size = sizeof(t.ipv6);
	} else {
		return 0;
	}
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 0;
	if (bpf_skb_load_bytes(skb, l4off, ports, sizeof(ports)) < 0)
		return 0;
	if (size == sizeof(t.ipv4)) {
		t.ipv4.sport = local_is_dst ? ports[0] : ports[1];
		t.ipv4.dport = local_is_dst ? ports[1] : ports[0];
	} else {
		t.ipv6.sport = local_is_dst ? ports[0] : ports[1];
		t.ipv6.dport = local_is_dst ? ports[1] : ports[0];
	}
	/* For a half-open TCP connection this returns its listener. */
	if (proto == IPPROTO_TCP)
		sk = bpf_sk_lookup_tcp(skb, &t, size, BPF_F_CURRENT_NETNS, 0);
	else
		sk = bpf_sk_lookup_udp(skb, &t, size, BPF_F_CURRENT_NETNS, 0);
	if (!sk)
		return 0;
	found = owner_from_sock(sk, out);
	bpf_sk_release(sk);
	return found;
}

static __always_inline void find_owner(struct __sk_buff *skb, __u32 l2len, __u8 dir, int cgroup,
				       struct ptcap_owner *out)
{
	struct bpf_sock *sk = skb->sk;

	/* At cgroup_skb the socket is known both ways: the sender's or the receiver's. */
	if (cgroup) {
		if (sk && dir == PTCAP_DIR_OUT)
			owner_of_sender(skb, sk, out);
		else if (sk)
			owner_from_sock(sk, out);
		return;
	}
	/* Received: the local socket it is for. Failing that, a packet crossing from another
	 * namespace (veth) may still carry its sender's socket. */
	if (dir == PTCAP_DIR_IN) {
		if (owner_by_lookup(skb, l2len, 1, out))
			return;
		if (sk)
			owner_from_sock(sk, out);
		return;
	}
	if (!sk)
		return;
	/* Sent: the socket that sent it. A full socket that isn't ours (the kernel's reset/ICMP
	 * socket) stays blank; a request or timewait socket is looked up as its connection. */
	if (bpf_sk_fullsock(sk))
		owner_of_sender(skb, sk, out);
	else
		owner_by_lookup(skb, l2len, 0, out);
}

#define SKB_COPY(dst, n) bpf_skb_load_bytes(skb, 0, dst, n)
#define TRY_CLASS(N) RING_TRY_CLASS(N, SKB_COPY, ret)

/* Copy one packet (and who owns it) into the ring; `ret` is what the hook returns. */
static __always_inline int capture(struct __sk_buff *skb, __u8 dir, __u32 iface_id, __u32 l2len,
				   int cgroup, int ret)
{
	struct ptcap_packet hdr = {};
	__u32 caplen;
	__u64 n, ts, wake;

	hdr.kind = PTCAP_EV_PACKET;
	hdr.dir = dir;
	hdr.ifindex = skb->ifindex;
	hdr.iface_id = iface_id;
	ts = bpf_ktime_get_ns() + ptcap_config.clock_offset;
	hdr.ts_hi = ts >> 32;
	hdr.ts_lo = (__u32)ts;
	hdr.len = skb->len;
	caplen = skb->cb[0];
	if (caplen > skb->len)
		caplen = skb->len;
	if (caplen > 262144)
		caplen = 262144;
	hdr.caplen = caplen;
	find_owner(skb, l2len, dir, cgroup, &hdr.owner);
	if (!who_matches(&hdr.owner, ptcap_config.who))
		return ret;

	count(PTCAP_CNT_RECEIVED);
	wake = ring_wakeup(sizeof(hdr) + caplen);

	RING_CLASSES_TO_16K
	TRY_CLASS(65536)
	TRY_CLASS(262144)
	return ret;
dropped:
	count(PTCAP_CNT_DROPPED);
	return ret;
}

/* tc: the entry program put the interface's pcapng id in cb[1] and its L2 length in cb[2]. */
SEC("tc")
int ptcap_tc_ingress(struct __sk_buff *skb)
{
	return capture(skb, PTCAP_DIR_IN, skb->cb[1], skb->cb[2], 0, TC_ACT_UNSPEC);
}

SEC("tc")
int ptcap_tc_egress(struct __sk_buff *skb)
{
	return capture(skb, PTCAP_DIR_OUT, skb->cb[1], skb->cb[2], 0, TC_ACT_UNSPEC);
}

/* cgroup_skb on the v2 root sees every namespace: take only the interfaces asked for.
 * (No attach type in the section: both directions share one prog array with the
 * attach-type-less entry programs, and a prog array takes only one kind.) */
static __always_inline int capture_cgroup(struct __sk_buff *skb, __u8 dir)
{
	struct ptcap_iface_key key = {};
	struct ptcap_iface *iface;

	key.netns_cookie = bpf_get_netns_cookie(skb);
	key.ifindex = skb->ifindex;
	iface = bpf_map_lookup_elem(&ptcap_ifaces, &key);
	if (!iface)
		return 1;
	return capture(skb, dir, iface->iface_id, 0, 1, 1);
}

SEC("cgroup/skb")
int ptcap_cg_ingress(struct __sk_buff *skb)
{
	return capture_cgroup(skb, PTCAP_DIR_IN);
}

SEC("cgroup/skb")
int ptcap_cg_egress(struct __sk_buff *skb)
{
	return capture_cgroup(skb, PTCAP_DIR_OUT);
}

/* The record layout user space relies on (ptcap/decoder.py). */
_Static_assert(sizeof(struct ptcap_packet) == 112, "ptcap_packet is 112 bytes");
_Static_assert(__builtin_offsetof(struct ptcap_packet, location) == 80, "hook metadata at 80");
_Static_assert(__builtin_offsetof(struct ptcap_packet, iface_id) == 92, "EPB body at 92");
char LICENSE[] SEC("license") = "GPL";
