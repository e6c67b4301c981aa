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
#include "conns.h"

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define IPPROTO_ICMP 1
#define IPPROTO_TCP 6
#define IPPROTO_UDP 17
#define IPPROTO_ICMPV6 58
#define AF_INET 2
#define AF_INET6 10
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

/* An skb program's context pointer is the kernel's sk_buff: read through it with CO-RE probe
 * reads (allowed with CAP_PERFMON). bpf_cast_to_kern_ctx would say the same, but that kfunc
 * came with 6.2 and a missing kfunc fails the whole object. */
static __always_inline struct sk_buff *kernel_skb(struct __sk_buff *ctx)
{
	return (struct sk_buff *)ctx;
}

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
		if (!(task->flags & PF_KTHREAD) && !owner_is_task(o, task)) {
			skb = kernel_skb(ctx);
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

/* A packet's addresses and ports (network order), parsed once for every lookup. */
struct flow {
	__u8 proto;		/* IPPROTO_TCP, IPPROTO_UDP; 0: neither, or not parsed */
	__u8 v6;
	__u16 sport, dport;
	__u32 saddr[4], daddr[4];
	__u8 parsed;		/* parse_flow ran (whatever it found) */
	__u8 echo;		/* an ICMP(v6) echo (proto stays 0): ECHO_REQUEST, ECHO_REPLY */
};

/* An echo is keyed as its pinger sends the request: its id (the ping socket's port) as the
 * source port, 0 as the destination port; a reply's are the other way round. */
#define ECHO_REQUEST 1
#define ECHO_REPLY 2

static __always_inline int parse_flow(struct __sk_buff *skb, __u32 l3off, struct flow *f)
{
	__u32 l4off;
	__u16 ports[2];
	__u8 proto;

	if (skb->protocol == bpf_htons(ETH_P_IP)) {
		struct iphdr ip;

		if (bpf_skb_load_bytes(skb, l3off, &ip, sizeof(ip)) < 0)
			return 0;
		if (ip.frag_off & bpf_htons(0x3fff))
			return 0;
		proto = ip.protocol;
		l4off = l3off + ip.ihl * 4;
		f->saddr[0] = ip.saddr;
		f->daddr[0] = ip.daddr;
		f->v6 = 0;
	} else if (skb->protocol == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr ip6;

		if (bpf_skb_load_bytes(skb, l3off, &ip6, sizeof(ip6)) < 0)
			return 0;
		proto = ip6.nexthdr;
		l4off = l3off + sizeof(ip6);
		__builtin_memcpy(f->saddr, &ip6.saddr, 16);
		__builtin_memcpy(f->daddr, &ip6.daddr, 16);
		f->v6 = 1;
	} else {
		return 0;
	}
	f->parsed = 1;
	if ((proto == IPPROTO_ICMP && !f->v6) || (proto == IPPROTO_ICMPV6 && f->v6)) {
		__u8 icmp[6];	/* type, code, checksum, id */
		__u16 id;

		if (bpf_skb_load_bytes(skb, l4off, icmp, sizeof(icmp)) < 0)
			return 0;
		__builtin_memcpy(&id, &icmp[4], sizeof(id));
		if (icmp[0] == (f->v6 ? 128 : 8)) {
			f->echo = ECHO_REQUEST;
			f->sport = id;
		} else if (icmp[0] == (f->v6 ? 129 : 0)) {
			f->echo = ECHO_REPLY;
			f->dport = id;
		}
		return 0;
	}
	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return 0;
	if (bpf_skb_load_bytes(skb, l4off, ports, sizeof(ports)) < 0)
		return 0;
	f->sport = ports[0];
	f->dport = ports[1];
	f->proto = proto;
	return 1;
}

/* The owner of the local socket at one end of a flow: `local_is_dst` says which end (the
 * destination: the receiver; the source: the sender). `netns` is BPF_F_CURRENT_NETNS or
 * the id, in the packet's namespace, of the namespace to look in (a veth's peer). */
static __always_inline int owner_by_lookup(struct __sk_buff *skb, struct flow *f, int local_is_dst,
					   __u64 netns, struct ptcap_owner *out)
{
	struct bpf_sock_tuple t = {};
	struct bpf_sock *sk;
	__u32 size;
	int found;

	if (!f->proto)
		return 0;
	if (!f->v6) {
		t.ipv4.saddr = local_is_dst ? f->saddr[0] : f->daddr[0];
		t.ipv4.daddr = local_is_dst ? f->daddr[0] : f->saddr[0];
		t.ipv4.sport = local_is_dst ? f->sport : f->dport;
		t.ipv4.dport = local_is_dst ? f->dport : f->sport;
		size = sizeof(t.ipv4);
	} else {
		if (local_is_dst) {
			__builtin_memcpy(t.ipv6.saddr, f->saddr, 16);
			__builtin_memcpy(t.ipv6.daddr, f->daddr, 16);
		} else {
			__builtin_memcpy(t.ipv6.saddr, f->daddr, 16);
			__builtin_memcpy(t.ipv6.daddr, f->saddr, 16);
		}
		t.ipv6.sport = local_is_dst ? f->sport : f->dport;
		t.ipv6.dport = local_is_dst ? f->dport : f->sport;
		size = sizeof(t.ipv6);
	}
	/* For a half-open TCP connection this returns its listener; a time-wait one, nothing. */
	if (f->proto == IPPROTO_TCP)
		sk = bpf_sk_lookup_tcp(skb, &t, size, netns, 0);
	else
		sk = bpf_sk_lookup_udp(skb, &t, size, netns, 0);
	if (!sk)
		return 0;
	found = owner_from_sock(sk, out);
	bpf_sk_release(sk);
	return found;
}

/* The network namespace (inode) of the device a packet is on. */
static __always_inline __u32 dev_netns(struct __sk_buff *ctx)
{
	struct sk_buff *skb = kernel_skb(ctx);

	return BPF_CORE_READ(skb, dev, nd_net.net, ns.inum);
}

/* The last owner of the TCP connection at one end of a flow, whose socket may be gone
 * (ptcap_conns, filled as connections close). `netns` is that end's namespace inode. */
static __always_inline int last_owner(struct flow *f, int local_is_dst, __u32 netns,
				      struct ptcap_owner *out)
{
	struct ptcap_conn_key key = {};
	struct ptcap_owner *o;

	if (f->proto != IPPROTO_TCP || !netns)
		return 0;
	key.netns = netns;
	key.family = f->v6 ? AF_INET6 : AF_INET;
	key.lport = local_is_dst ? f->dport : f->sport;
	key.rport = local_is_dst ? f->sport : f->dport;
	if (f->v6) {
		__builtin_memcpy(key.laddr, local_is_dst ? f->daddr : f->saddr, 16);
		__builtin_memcpy(key.raddr, local_is_dst ? f->saddr : f->daddr, 16);
	} else {
		__builtin_memcpy(key.laddr, local_is_dst ? f->daddr : f->saddr, 4);
		__builtin_memcpy(key.raddr, local_is_dst ? f->saddr : f->daddr, 4);
	}
	o = bpf_map_lookup_elem(&ptcap_conns, &key);
	if (!o)
		return 0;
	__builtin_memcpy(out, o, sizeof(*out));
	return 1;
}

static __always_inline void flow_key(struct flow *f, int reversed, struct ptcap_flow_key *k)
{
	k->proto = f->proto;
	k->v6 = f->v6;
	k->sport = reversed ? f->dport : f->sport;
	k->dport = reversed ? f->sport : f->dport;
	__builtin_memcpy(k->saddr, reversed ? f->daddr : f->saddr, 16);
	__builtin_memcpy(k->daddr, reversed ? f->saddr : f->daddr, 16);
}

/* A local process's packet crossing into this namespace (veth) with no receiver here is
 * forwarded: remember its flow for where it goes on, rewritten or not. */
static __always_inline void note_flow(struct flow *f, struct ptcap_owner *o)
{
	struct ptcap_flow_key k = {};
	struct ptcap_owner *known;

	if (!f->proto)
		return;
	flow_key(f, 0, &k);
	known = bpf_map_lookup_elem(&ptcap_flows, &k);
	if (known && same_owner(known, o))
		return;
	bpf_map_update_elem(&ptcap_flows, &k, o, BPF_ANY);
}

/* A conntrack tuple (one direction of a connection) as a flow key. */
static __always_inline void ct_flow_key(struct nf_conntrack_tuple *t, struct ptcap_flow_key *k)
{
	k->proto = BPF_CORE_READ(t, dst.protonum);
	k->v6 = BPF_CORE_READ(t, src.l3num) == AF_INET6;
	k->sport = BPF_CORE_READ(t, src.u.all);
	k->dport = BPF_CORE_READ(t, dst.u.all);
	BPF_CORE_READ_INTO(&k->saddr, t, src.u3.all);
	BPF_CORE_READ_INTO(&k->daddr, t, dst.u3.all);
	if (!k->v6) {
		k->saddr[1] = k->saddr[2] = k->saddr[3] = 0;
		k->daddr[1] = k->daddr[2] = k->daddr[3] = 0;
	}
}

#define NFCT_PTRMASK (~7UL)
#define IP_CT_IS_REPLY 3

static __always_inline int flow_owner(struct ptcap_flow_key *k, struct ptcap_owner *out)
{
	struct ptcap_owner *o = bpf_map_lookup_elem(&ptcap_flows, k);

	if (!o)
		return 0;
	__builtin_memcpy(out, o, sizeof(*out));
	return 1;
}

/* One end of a packet by the flow that end sends (noted when its connection was
 * established); `receiver` as for forwarded_end. */
static __always_inline int flow_end(struct flow *f, int receiver, struct ptcap_owner *out)
{
	struct ptcap_flow_key k = {};

	if (!f->proto)
		return 0;
	flow_key(f, receiver, &k);
	return flow_owner(&k, out);
}

/* One end of a forwarded packet (no socket of it here): the local process behind it. Its
 * flow as that end sends it names it before NAT, or after NAT once noted; otherwise the
 * connection tracking entry the packet carries (after conntrack: leaving, or forwarded
 * within this namespace) gives the flow as that end sent it, and the packet's rewritten
 * flow is noted for the packets that come before conntrack (the replies arriving).
 * `receiver` picks the end: 0 the sender, 1 the receiver. */
static __always_inline int forwarded_end(struct __sk_buff *ctx, struct flow *f, int receiver,
					 struct ptcap_owner *out)
{
	struct ptcap_flow_key k = {};

	if (!f->proto)
		return 0;
	flow_key(f, receiver, &k);
	if (flow_owner(&k, out))
		return 1;
	if (bpf_core_field_exists(((struct sk_buff *)0)->_nfct)) {
		struct sk_buff *skb = kernel_skb(ctx);
		unsigned long nfct = BPF_CORE_READ(skb, _nfct);
		struct nf_conn *ct = (struct nf_conn *)(nfct & NFCT_PTRMASK);
		int reply = (nfct & 7) >= IP_CT_IS_REPLY;

		if (!ct)
			return 0;
		/* the sender of an original-direction packet sent the original tuple; of a
		 * reply, the reply tuple; the receiver the other one */
		ct_flow_key(&ct->tuplehash[reply ^ receiver].tuple, &k);
		if (!flow_owner(&k, out))
			return 0;
		flow_key(f, receiver, &k);
		bpf_map_update_elem(&ptcap_flows, &k, out, BPF_ANY);
		return 1;
	}
	return 0;
}

/* Where a packet's other end may be: tc gets it in cb[3] and cb[4] from the entry program,
 * cgroup_skb from its interface entry. */
struct where {
	__u32 flags;		/* enum ptcap_iface_flags */
	__u32 peer_netns;	/* a veth's peer namespace inode (0: none) */
};

/* How one end was found (marks of the owner; << 1 for the peer's where they pair up). */
#define END_LAST 1
#define END_FWD 2

static __always_inline __u32 owner_marks(int how)
{
	return (how & END_LAST ? PTCAP_MARK_LAST_OWNER : 0) | (how & END_FWD ? PTCAP_MARK_CONNTRACK : 0);
}

static __always_inline __u32 peer_marks(int how)
{
	return (how & END_LAST ? PTCAP_MARK_PEER_LAST_OWNER : 0) | (how & END_FWD ? PTCAP_MARK_PEER_CONNTRACK : 0);
}

/* ICMP echoes (ping sockets, raw sockets): no socket lookup finds a pinger, so the request
 * its socket sends leaves its flow, which names the pinger of the replies that come back
 * (arriving, or leaving on loopback and veth). The kernel answers requests itself: nothing
 * to name there. */
static __always_inline void echo_key(struct flow *f, int reversed, struct ptcap_flow_key *k)
{
	flow_key(f, reversed, k);
	k->proto = f->v6 ? IPPROTO_ICMPV6 : IPPROTO_ICMP;
}

static __always_inline void echo_owners(struct __sk_buff *skb, __u32 l2len, struct where *w, int cgroup,
					struct flow *f, struct ptcap_packet *h)
{
	struct ptcap_flow_key k = {};
	struct ptcap_owner *o;

	if (!f->parsed) {
		struct bpf_sock *sk = skb->sk;

		/* most packets: a TCP or UDP socket's (request and time-wait ones are TCP's), whose
		 * flow was not needed */
		if (sk) {
			sk = bpf_sk_fullsock(sk);
			if (!sk || sk->protocol == IPPROTO_TCP || sk->protocol == IPPROTO_UDP)
				return;
		}
		parse_flow(skb, l2len, f);
	}
	if (f->echo == ECHO_REQUEST) {
		/* its pinger: leaving by its socket, or arriving from a veth with it */
		if (!h->owner.pid || (h->marks & (PTCAP_MARK_LAST_OWNER | PTCAP_MARK_CONNTRACK)) ||
		    (h->dir == PTCAP_DIR_IN && cgroup))
			return;
		echo_key(f, 0, &k);
		o = bpf_map_lookup_elem(&ptcap_flows, &k);
		if (!o || !same_owner(o, &h->owner))
			bpf_map_update_elem(&ptcap_flows, &k, &h->owner, BPF_ANY);
		return;
	}
	if (f->echo != ECHO_REPLY)
		return;
	echo_key(f, 1, &k);
	if (h->dir == PTCAP_DIR_IN) {
		if (h->owner.pid)
			return;
		o = bpf_map_lookup_elem(&ptcap_flows, &k);
		if (o)
			__builtin_memcpy(&h->owner, o, sizeof(*o));
		return;
	}
	/* leaving on loopback or a veth: the pinger is its receiver */
	if (!(w->flags & PTCAP_IFACE_LOCAL) || h->peer.pid)
		return;
	o = bpf_map_lookup_elem(&ptcap_flows, &k);
	if (o) {
		__builtin_memcpy(&h->peer, o, sizeof(*o));
		h->marks |= PTCAP_MARK_PEER_RECEIVER;
	}
}

/* The packet's owner (its sender when leaving, its receiver when arriving; the other local
 * end when that one is not local) and, where both ends may be local or the packet is
 * forwarded, the other end's: both in the record `h`. Each end is found by its socket (the
 * skb's, or looked up here or in a veth's peer namespace), else as the last owner of its
 * closed connection, else (a forwarded packet) through its flow and conntrack. */
static __always_inline void socket_owners(struct __sk_buff *skb, __u32 l2len, struct where *w,
					  int cgroup, struct ptcap_packet *h, struct flow *f)
{
	struct bpf_sock *sk = skb->sk;
	__u32 nsid = w->flags >> PTCAP_IFACE_PEER_NSID_SHIFT;
	__u64 peer_ns = nsid ? nsid - 1 : (__u64)BPF_F_CURRENT_NETNS;
	__u32 netns = 0;
	int local = w->flags & PTCAP_IFACE_LOCAL, got, how = 0, forwarded;

	if (h->dir == PTCAP_DIR_OUT) {
		/* The sender: the socket that sent it. A full socket that isn't ours (the kernel's
		 * reset/ICMP socket) has none; a request or timewait socket is looked up as its
		 * connection; failing all, the connection's last owner, or a forwarded packet's. */
		got = 0;
		forwarded = !sk && !cgroup;
		if (sk && bpf_sk_fullsock(sk))
			got = owner_of_sender(skb, sk, &h->owner);
		else if (sk && !cgroup && parse_flow(skb, l2len, f))
			got = owner_by_lookup(skb, f, 0, BPF_F_CURRENT_NETNS, &h->owner);
		if (!got && (local || !cgroup) && (f->proto || parse_flow(skb, l2len, f))) {
			netns = dev_netns(skb);
			if (last_owner(f, 0, netns, &h->owner))
				h->marks |= PTCAP_MARK_LAST_OWNER;
			else if (forwarded && forwarded_end(skb, f, 0, &h->owner))
				h->marks |= PTCAP_MARK_CONNTRACK;
		}
		if (!(local || forwarded)) {
			/* out of a bridge, or a veth whose peer went to another namespace after
			 * it was tapped (a container's): its receiver there by its flow, once
			 * established */
			if ((w->flags & PTCAP_IFACE_FLOWS) && (f->proto || parse_flow(skb, l2len, f)) &&
			    flow_end(f, 1, &h->peer))
				h->marks |= PTCAP_MARK_PEER_RECEIVER;
			return;
		}
		if (!f->proto && !parse_flow(skb, l2len, f))
			return;
		/* The receiver: here (loopback), in the veth's peer namespace, or behind NAT. */
		got = 0;
		if (local) {
			got = owner_by_lookup(skb, f, 1, peer_ns, &h->peer);
			if (!got) {
				if (!netns && !nsid)
					netns = dev_netns(skb);
				got = last_owner(f, 1, nsid ? w->peer_netns : netns, &h->peer);
				how = got ? END_LAST : 0;
			}
		}
		if (!got && forwarded) {
			got = forwarded_end(skb, f, 1, &h->peer);
			how = got ? END_FWD : 0;
		}
		if (got)
			h->marks |= PTCAP_MARK_PEER_RECEIVER | peer_marks(how);
		return;
	}
	/* Received. The receiver: the local socket it is for (at cgroup_skb, the one it was
	 * given to), or that connection's last owner. */
	got = 0;
	if (cgroup) {
		if (sk)
			got = owner_from_sock(sk, &h->owner);
	} else if (parse_flow(skb, l2len, f)) {
		got = owner_by_lookup(skb, f, 1, BPF_F_CURRENT_NETNS, &h->owner);
		if (!got) {
			netns = dev_netns(skb);
			got = last_owner(f, 1, netns, &h->owner);
			how = got ? END_LAST : 0;
		}
	}
	if (cgroup && !(got && local))
		return;
	/* The sender: a packet crossing from another namespace (veth, bridge) still carries its
	 * socket; on loopback it is looked up. With no local receiver, the packet is forwarded:
	 * its receiver may be behind NAT, and the sender is the owner. */
	if (!cgroup && sk && owner_from_sock(sk, got ? &h->peer : &h->owner)) {
		if (got) {
			h->marks |= owner_marks(how) | PTCAP_MARK_PEER_SENDER;
			if (w->flags & PTCAP_IFACE_FLOWS)
				note_flow(f, &h->peer);	/* its handshake, on the bridge beyond */
			return;
		}
		if (forwarded_end(skb, f, 1, &h->peer))
			h->marks |= PTCAP_MARK_PEER_RECEIVER | PTCAP_MARK_PEER_CONNTRACK;
		note_flow(f, &h->owner);	/* for where it goes on, rewritten or not */
		return;
	}
	if (!got && !cgroup) {
		/* forwarded from elsewhere: its receiver behind NAT, else its sender, by flow */
		if (forwarded_end(skb, f, 1, &h->owner)) {
			h->marks |= PTCAP_MARK_CONNTRACK;
			if (forwarded_end(skb, f, 0, &h->peer))
				h->marks |= PTCAP_MARK_PEER_SENDER | PTCAP_MARK_PEER_CONNTRACK;
		} else if (forwarded_end(skb, f, 0, &h->owner)) {
			h->marks |= PTCAP_MARK_CONNTRACK;
		} else if (local && f->proto) {
			/* on loopback or a veth, to a port nobody listens on: its one local end is
			 * the sender */
			owner_by_lookup(skb, f, 0, peer_ns, &h->owner);
		}
		return;
	}
	h->marks |= owner_marks(how);
	if (got && !local && (w->flags & PTCAP_IFACE_FLOWS)) {
		/* into a bridge from a namespace behind it, the socket left on its veth: the
		 * sender by its flow, once established */
		if (flow_end(f, 0, &h->peer))
			h->marks |= PTCAP_MARK_PEER_SENDER;
		return;
	}
	if (!got || !local || (!f->proto && !parse_flow(skb, l2len, f)))
		return;
	/* here (loopback) or in the veth's peer namespace (its request and time-wait sockets
	 * do not travel with the packet) */
	if (owner_by_lookup(skb, f, 0, peer_ns, &h->peer)) {
		h->marks |= PTCAP_MARK_PEER_SENDER;
	} else {
		if (!netns && !nsid)
			netns = dev_netns(skb);
		if (last_owner(f, 0, nsid ? w->peer_netns : netns, &h->peer))
			h->marks |= PTCAP_MARK_PEER_SENDER | PTCAP_MARK_PEER_LAST_OWNER;
	}
}

static __always_inline void find_owners(struct __sk_buff *skb, __u32 l2len, struct where *w,
					int cgroup, struct ptcap_packet *h)
{
	struct flow f = {};

	socket_owners(skb, l2len, w, cgroup, h, &f);
	if (!f.proto)
		echo_owners(skb, l2len, w, cgroup, &f, h);
}

#define SKB_COPY(dst, n) bpf_skb_load_bytes(skb, 0, dst, n)
#define TRY_CLASS(N) RING_TRY_CLASS(N, SKB_COPY, ret)

/* Copy one packet (and who owns it) into the ring; `ret` is what the hook returns. */
static __always_inline int capture(struct __sk_buff *skb, __u8 dir, __u32 iface_id, __u32 l2len,
				   struct where *w, int cgroup, int ret)
{
	struct ptcap_packet hdr = {};
	__u32 caplen;
	__u64 n, ts, queued, wake;

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
	find_owners(skb, l2len, w, cgroup, &hdr);
	/* a local conversation's one copy is selected by either end (-Q in / out: by its own) */
	if (!who_matches(&hdr.owner, ptcap_config.who) &&
	    !(ptcap_config.peer_selects && hdr.peer.pid && who_matches(&hdr.peer, ptcap_config.who)))
		return ret;

	count(PTCAP_CNT_RECEIVED);
	queued = ring_queued();
	wake = ring_wakeup(queued, sizeof(hdr) + caplen);

	/* above 16 KiB: GRO/GSO packets, most often a full 64 KiB IP packet behind its link-layer
	 * header (65550 bytes on lo), which must not take a 256 KiB reservation */
	RING_CLASSES_TO_16K
	TRY_CLASS(32768)
	TRY_CLASS(65536)
	TRY_CLASS(65536 + 1024)
	TRY_CLASS(131072)
	TRY_CLASS(262144)
	return ret;
dropped:
	count(PTCAP_CNT_DROPPED);
	return ret;
}

/* tc: the entry program put the interface's pcapng id in cb[1], the inode of the namespace
 * it was taken in in cb[2], its flags (enum ptcap_iface_flags, its L2 length in bits 8-15) in
 * cb[3] and a veth's peer namespace inode in cb[4]. A device that has gone to another
 * namespace since (a container's end of a veth pair made on the host, moved before ptcap let
 * it go) is not that interface any more: its packets are the container's own. */
static __always_inline int tc_capture(struct __sk_buff *skb, __u8 dir)
{
	struct where w = { .flags = skb->cb[3], .peer_netns = skb->cb[4] };

	if (skb->cb[2] && dev_netns(skb) != skb->cb[2])
		return TC_ACT_UNSPEC;
	return capture(skb, dir, skb->cb[1], (w.flags >> PTCAP_IFACE_L2LEN_SHIFT) & 0xff, &w, 0, TC_ACT_UNSPEC);
}

SEC("tc")
int ptcap_tc_ingress(struct __sk_buff *skb)
{
	return tc_capture(skb, PTCAP_DIR_IN);
}

SEC("tc")
int ptcap_tc_egress(struct __sk_buff *skb)
{
	return tc_capture(skb, PTCAP_DIR_OUT);
}

/* cgroup_skb on the v2 root sees every namespace: take only the interfaces asked for.
 * (No attach type in the section: both directions share one prog array with the
 * attach-type-less entry programs, and a prog array takes only one kind.) */
/* The packet's network namespace, read from its device (else its socket): the helper
 * bpf_get_netns_cookie takes an skb only from 6.14 on. */
static __always_inline __u64 netns_cookie(struct __sk_buff *ctx)
{
	struct sk_buff *skb = kernel_skb(ctx);
	struct net_device *dev = BPF_CORE_READ(skb, dev);

	if (dev)
		return BPF_CORE_READ(dev, nd_net.net, net_cookie);
	return BPF_CORE_READ(skb, sk, __sk_common.skc_net.net, net_cookie);
}

static __always_inline int capture_cgroup(struct __sk_buff *skb, __u8 dir)
{
	struct ptcap_iface_key key = {};
	struct ptcap_iface *iface;
	struct where w = {};

	key.netns_cookie = netns_cookie(skb);
	key.ifindex = skb->ifindex;
	iface = bpf_map_lookup_elem(&ptcap_ifaces, &key);
	if (!iface)
		return 1;
	/* loopback, one copy: the leaving one (it has both ends) */
	if (dir == PTCAP_DIR_IN && (iface->flags & PTCAP_IFACE_ONE_COPY))
		return 1;
	w.flags = iface->flags & (PTCAP_IFACE_LOCAL | PTCAP_IFACE_ONE_COPY);
	return capture(skb, dir, iface->iface_id, 0, &w, 1, 1);
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
_Static_assert(sizeof(struct ptcap_packet) == 192, "ptcap_packet is 192 bytes");
_Static_assert(__builtin_offsetof(struct ptcap_packet, location) == 80, "hook metadata at 80");
_Static_assert(__builtin_offsetof(struct ptcap_packet, peer) == 96, "peer at 96");
_Static_assert(__builtin_offsetof(struct ptcap_packet, iface_id) == 172, "EPB body at 172");
char LICENSE[] SEC("license") = "GPL";
