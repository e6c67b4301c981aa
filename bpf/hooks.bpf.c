// SPDX-License-Identifier: GPL-2.0
/* Packet capture at kernel hook points (tp_btf tracepoints): drops, transmit, receive.
 *
 * Per hook, three programs chained by tail calls through the hook's own prog array
 * (a prog array takes only programs of one attach target):
 *   ptcap_hook_X   attached: copies the packet's first bytes out of the skb into a
 *                  per-CPU scratch buffer, then tail-calls the filter for its link type;
 *   filter         assembled by user space from the pcap-filter expression (ptcap/filter.py),
 *                  runs against the scratch buffer, tail-calls emit with the snap length;
 *   ptcap_emit_X   rate limit, then into the ring buffer (or, for `ptcap backtrace`, the
 *                  kernel stack into a counting map).
 * Nothing enters the ring before the filter has accepted the packet.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>
#include <bpf/bpf_endian.h>
#include "ptcap.h"
#include "owners.h"
#include "ring.h"	/* ring and counters: the capture object's, shared */

#define ETH_P_IP 0x0800
#define ETH_P_IPV6 0x86DD
#define ETH_HLEN 14
#define ARPHRD_ETHER 1
#define ARPHRD_LOOPBACK 772
#define NO_HEADER 0xffff
#define MAX_STACK_DEPTH 127

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ptcap_scratch);
} ptcap_scratch SEC(".maps");

/* `ptcap backtrace`: kernel stacks of matching packets, and how often each was seen.
 * User space sizes both up in backtrace mode (the stack map preallocates). */
struct {
	__uint(type, BPF_MAP_TYPE_STACK_TRACE);
	__uint(max_entries, 1);
	__uint(key_size, sizeof(__u32));
	__uint(value_size, MAX_STACK_DEPTH * sizeof(__u64));
} ptcap_stacks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} ptcap_stack_counts SEC(".maps");

/* --hook-rate: events per one-second window, all CPUs together. */
struct ptcap_rate {
	__u64 window;
	__u64 count;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct ptcap_rate);
} ptcap_rate SEC(".maps");

struct ptcap_hook_config ptcap_hook_config = {};

static __always_inline int is_ether(__u16 type)
{
	return type == ARPHRD_ETHER || type == ARPHRD_LOOPBACK;
}

/* A TCP skb of a socket's write queue (tcp_retransmit_skb) holds only its payload; the
 * headers of its last transmission were pushed by a clone into the buffer they share,
 * right before the data. Find them there, accepted only if they name this socket's ports
 * and protocol; returns the offset of the IP header from head, or 0. */
static __always_inline __u32 pushed_headers(struct sock *sk, unsigned char *head, __u32 data_off)
{
	__u16 family = sk->__sk_common.skc_family;
	__u16 sport = bpf_htons(sk->__sk_common.skc_num);
	__u16 dport = sk->__sk_common.skc_dport;
	__u8 th[14], b[10];
	__u32 doff, ihl, iph;
	int i;

	for (i = 5; i <= 15; i++) {
		doff = i * 4;
		if (data_off < doff + 40)
			return 0;
		if (bpf_probe_read_kernel(th, sizeof(th), head + data_off - doff) < 0)
			return 0;
		if (*(__u16 *)&th[0] != sport || *(__u16 *)&th[2] != dport || (th[12] >> 4) != i)
			continue;
		if (family == 10) {		/* AF_INET6: a fixed 40-byte header, TCP next */
			iph = data_off - doff - 40;
			if (bpf_probe_read_kernel(b, sizeof(b), head + iph) < 0)
				return 0;
			return (b[0] >> 4) == 6 && b[6] == 6 ? iph : 0;
		}
		for (ihl = 5; ihl <= 15; ihl++) {
			if (data_off < doff + ihl * 4)
				return 0;
			iph = data_off - doff - ihl * 4;
			if (bpf_probe_read_kernel(b, sizeof(b), head + iph) < 0)
				return 0;
			if (b[0] == (0x40 | ihl) && b[9] == 6)
				return iph;
		}
		return 0;
	}
	return 0;
}

/* Where the packet starts: the Ethernet header when the skb has a usable one, else the
 * IP header; the wire length counts from there. Copy the linear bytes into scratch and
 * hand over to the filter. */
static __always_inline int take(void *ctx, void *progs, struct sk_buff *skb, __u64 location,
				__u32 reason, __u8 dir, struct sock *sk)
{
	struct ptcap_scratch *s;
	struct net_device *dev;
	unsigned char *head, *data;
	__u32 zero = 0, tail, start, avail, data_off;
	__u16 mac, net, mac_len, proto, devtype = 0;
	__u8 raw, first;
	__u64 n;

	if (!skb)
		return 0;
	s = bpf_map_lookup_elem(&ptcap_scratch, &zero);
	if (!s)
		return 0;
	/* direct loads (tp_btf's BTF pointers): far cheaper than a probe-read helper each */
	head = skb->head;
	data = skb->data;
	tail = skb->tail;
	mac = skb->mac_header;
	net = skb->network_header;
	mac_len = skb->mac_len;
	proto = skb->protocol;
	dev = skb->dev;
	if (dev)
		devtype = dev->type;
	data_off = data - head;
	/* A MAC header counts when it is set and really precedes the data or the network
	 * header (mac_len is only set on receive; on transmit the header is at data). */
	if (mac != NO_HEADER && is_ether(devtype) &&
	    (mac_len == ETH_HLEN || net == mac + ETH_HLEN || data_off == mac || data_off == mac + ETH_HLEN)) {
		start = mac;
		raw = 0;
	} else if ((proto == bpf_htons(ETH_P_IP) || proto == bpf_htons(ETH_P_IPV6)) &&
		   net != NO_HEADER && net != 0) {
		start = net;
		raw = 1;
	} else if (sk && (start = pushed_headers(sk, head, data_off))) {
		raw = 1;
		proto = sk->__sk_common.skc_family == 10 ? bpf_htons(ETH_P_IPV6) :
			bpf_htons(ETH_P_IP);
	} else {
		return 0;	/* not a network packet (netlink, unix) or no headers yet */
	}
	if (tail <= start)
		return 0;
	avail = tail - start;
	n = avail;
	asm volatile("if %[n] <= %[max] goto +1; %[n] = %[max]"
		     : [n] "+r"(n) : [max] "i"(PTCAP_SCRATCH_DATA));
	if (bpf_probe_read_kernel(s->data, n, head + start) < 0)
		return 0;
	if (raw) {
		first = s->data[0] >> 4;
		if (first != (proto == bpf_htons(ETH_P_IP) ? 4 : 6))
			return 0;
	}
	s->avail = n;
	s->len = skb->len + data_off - start;
	s->raw = raw;
	s->dir = dir;
	s->location = location;
	s->reason = reason;
	s->ifindex = dev ? dev->ifindex : 0;
	__builtin_memset(&s->owner, 0, sizeof(s->owner));
	if (!sk)
		sk = skb->sk;
	if (sk && bpf_core_field_exists(sk->sk_bpf_storage)) {
		struct ptcap_owner *o = bpf_sk_storage_get(&ptcap_owners, sk, 0, 0);
		if (o)
			__builtin_memcpy(&s->owner, o, sizeof(s->owner));
	}
	bpf_tail_call(ctx, progs, raw ? PTCAP_SLOT_FILTER_RAW : PTCAP_SLOT_FILTER_ETHER);
	return 0;
}

static __always_inline int rate_exceeded(__u64 now)
{
	__u32 zero = 0;
	struct ptcap_rate *r;
	__u64 window = now / 1000000000ULL;

	if (!ptcap_hook_config.rate)
		return 0;
	r = bpf_map_lookup_elem(&ptcap_rate, &zero);
	if (!r)
		return 0;
	if (r->window != window) {
		r->window = window;	/* racy between CPUs: a window may let a few more in */
		r->count = 0;
	}
	return __sync_fetch_and_add(&r->count, 1) >= ptcap_hook_config.rate;
}

#define SCRATCH_COPY(dst, n) bpf_probe_read_kernel(dst, n, s->data)
#define TRY_CLASS(N) RING_TRY_CLASS(N, SCRATCH_COPY, 0)

/* The filter accepted the packet in scratch: count its stack, or copy it into the ring. */
static __always_inline int emit(void *ctx, __u32 hook)
{
	struct ptcap_packet hdr = {};
	struct ptcap_scratch *s;
	__u32 zero = 0, caplen, idx;
	__u64 n, now, ts, queued, wake;

	s = bpf_map_lookup_elem(&ptcap_scratch, &zero);
	if (!s)
		return 0;
	now = bpf_ktime_get_ns();
	if (rate_exceeded(now)) {
		count(PTCAP_CNT_RATE_LIMITED);
		return 0;
	}
	count(PTCAP_CNT_RECEIVED);
	if (ptcap_hook_config.backtrace) {
		long id = bpf_get_stackid(ctx, &ptcap_stacks, 0);
		__u32 key;
		__u64 one = 1, *c;

		if (id < 0) {
			count(PTCAP_CNT_DROPPED);
			return 0;
		}
		key = id;
		c = bpf_map_lookup_elem(&ptcap_stack_counts, &key);
		if (c)
			__sync_fetch_and_add(c, 1);
		else if (bpf_map_update_elem(&ptcap_stack_counts, &key, &one, BPF_NOEXIST) < 0 &&
			 (c = bpf_map_lookup_elem(&ptcap_stack_counts, &key)))
			__sync_fetch_and_add(c, 1);
		return 0;
	}
	hdr.kind = PTCAP_EV_PACKET;
	hdr.hook = hook + 1;
	hdr.dir = s->dir;
	hdr.ifindex = s->ifindex;
	idx = hook < PTCAP_HOOK_MAX ? hook : 0;
	hdr.iface_id = ptcap_hook_config.iface_id[idx] + (s->raw ? 1 : 0);
	ts = now + ptcap_hook_config.clock_offset;
	hdr.ts_hi = ts >> 32;
	hdr.ts_lo = (__u32)ts;
	hdr.location = s->location;
	hdr.reason = s->reason;
	hdr.len = s->len;
	caplen = s->snap;
	if (caplen > s->avail)
		caplen = s->avail;
	if (caplen > PTCAP_SCRATCH_DATA)
		caplen = PTCAP_SCRATCH_DATA;
	hdr.caplen = caplen;
	__builtin_memcpy(&hdr.owner, &s->owner, sizeof(hdr.owner));
	queued = ring_queued();
	wake = ring_wakeup(queued, sizeof(hdr) + caplen);

	RING_CLASSES_TO_16K
	TRY_CLASS(PTCAP_SCRATCH_DATA)
	return 0;
dropped:
	count(PTCAP_CNT_DROPPED);
	return 0;
}

/* One prog array, one hook program and one emit program per hook point. */
#define PROGS(name)							\
	struct {							\
		__uint(type, BPF_MAP_TYPE_PROG_ARRAY);			\
		__uint(max_entries, PTCAP_SLOT_MAX);			\
		__type(key, __u32);					\
		__type(value, __u32);					\
	} ptcap_progs_##name SEC(".maps");				\
	SEC("tp_btf/" #name)						\
	int ptcap_emit_##name(void *ctx)				\
	{								\
		return emit(ctx, PTCAP_HOOK_##name);			\
	}

#define PTCAP_HOOK_kfree_skb PTCAP_HOOK_KFREE_SKB
#define PTCAP_HOOK_consume_skb PTCAP_HOOK_CONSUME_SKB
#define PTCAP_HOOK_net_dev_queue PTCAP_HOOK_NET_DEV_QUEUE
#define PTCAP_HOOK_net_dev_start_xmit PTCAP_HOOK_NET_DEV_START_XMIT
#define PTCAP_HOOK_netif_receive_skb PTCAP_HOOK_NETIF_RECEIVE_SKB
#define PTCAP_HOOK_tcp_retransmit_skb PTCAP_HOOK_TCP_RETRANSMIT_SKB
#define PTCAP_HOOK_tcp_send_reset PTCAP_HOOK_TCP_SEND_RESET
#define PTCAP_HOOK_dev_direct_xmit PTCAP_HOOK_DEV_DIRECT_XMIT

PROGS(kfree_skb)
/* rx_sk, the socket a received packet was dropped for (a full receive buffer names its
 * process), is the tracepoint's 4th argument from 6.11 on; before, only its own socket. */
SEC("tp_btf/kfree_skb")
int ptcap_hook_kfree_skb(unsigned long long *ctx)
{
	struct sk_buff *skb = (struct sk_buff *)ctx[0];
	struct sock *rx_sk = 0;

	if (bpf_core_field_exists(struct trace_event_raw_kfree_skb, rx_sk))
		rx_sk = (struct sock *)ctx[3];
	return take(ctx, &ptcap_progs_kfree_skb, skb, ctx[1], (__u32)ctx[2], 0,
		    rx_sk ? rx_sk : skb->sk);
}

PROGS(consume_skb)
/* location is the tracepoint's 2nd argument from 6.3 on; before, only the skb. */
SEC("tp_btf/consume_skb")
int ptcap_hook_consume_skb(unsigned long long *ctx)
{
	__u64 location = 0;

	if (bpf_core_field_exists(struct trace_event_raw_consume_skb, location))
		location = ctx[1];
	return take(ctx, &ptcap_progs_consume_skb, (struct sk_buff *)ctx[0], location, 0, 0, 0);
}

PROGS(net_dev_queue)
SEC("tp_btf/net_dev_queue")
int BPF_PROG(ptcap_hook_net_dev_queue, struct sk_buff *skb)
{
	return take(ctx, &ptcap_progs_net_dev_queue, skb, 0, 0, PTCAP_DIR_OUT, 0);
}

PROGS(net_dev_start_xmit)
SEC("tp_btf/net_dev_start_xmit")
int BPF_PROG(ptcap_hook_net_dev_start_xmit, struct sk_buff *skb)
{
	return take(ctx, &ptcap_progs_net_dev_start_xmit, skb, 0, 0, PTCAP_DIR_OUT, 0);
}

PROGS(netif_receive_skb)
SEC("tp_btf/netif_receive_skb")
int BPF_PROG(ptcap_hook_netif_receive_skb, struct sk_buff *skb)
{
	return take(ctx, &ptcap_progs_netif_receive_skb, skb, 0, 0, PTCAP_DIR_IN, 0);
}

PROGS(tcp_retransmit_skb)
SEC("tp_btf/tcp_retransmit_skb")
int BPF_PROG(ptcap_hook_tcp_retransmit_skb, struct sock *sk, struct sk_buff *skb)
{
	return take(ctx, &ptcap_progs_tcp_retransmit_skb, skb, 0, 0, PTCAP_DIR_OUT, sk);
}

/* The packet that provoked the reset (none for resets the kernel sends on its own). */
PROGS(tcp_send_reset)
SEC("tp_btf/tcp_send_reset")
int BPF_PROG(ptcap_hook_tcp_send_reset, struct sock *sk, struct sk_buff *skb)
{
	return take(ctx, &ptcap_progs_tcp_send_reset, skb, 0, 0, PTCAP_DIR_IN, sk);
}

/* Before 6.10 the tracepoint fires only for the resets of a full socket (and for those the
 * kernel sends on its own, which carry no packet): not for a packet no socket took, such as
 * a SYN to a closed port. Every reset answering a packet passes tcp_v4_send_reset or
 * tcp_v6_send_reset: on such kernels fentry on both takes the tracepoint's place (hooks.py
 * chooses), one prog array and emit program per function, as for __dev_direct_xmit. */
#define RESET_FENTRY(fn)						\
	struct {							\
		__uint(type, BPF_MAP_TYPE_PROG_ARRAY);			\
		__uint(max_entries, PTCAP_SLOT_MAX);			\
		__type(key, __u32);					\
		__type(value, __u32);					\
	} ptcap_progs_##fn SEC(".maps");				\
	SEC("fentry/" #fn)						\
	int ptcap_emit_##fn(void *ctx)					\
	{								\
		return emit(ctx, PTCAP_HOOK_TCP_SEND_RESET);		\
	}								\
	SEC("fentry/" #fn)						\
	int BPF_PROG(ptcap_hook_##fn, struct sock *sk, struct sk_buff *skb)	\
	{								\
		return take(ctx, &ptcap_progs_##fn, skb, 0, 0, PTCAP_DIR_IN, sk);	\
	}

RESET_FENTRY(tcp_v4_send_reset)
RESET_FENTRY(tcp_v6_send_reset)

/* Direct transmits (PACKET_QDISC_BYPASS, AF_XDP copy mode) skip the qdisc and xmit_one, so
 * no tracepoint sees them: fentry on __dev_direct_xmit does, where the kernel has BPF
 * trampolines. Its emit program attaches to the same function (one prog array, one target). */
struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, PTCAP_SLOT_MAX);
	__type(key, __u32);
	__type(value, __u32);
} ptcap_progs_dev_direct_xmit SEC(".maps");

SEC("fentry/__dev_direct_xmit")
int ptcap_emit_dev_direct_xmit(void *ctx)
{
	return emit(ctx, PTCAP_HOOK_DEV_DIRECT_XMIT);
}

SEC("fentry/__dev_direct_xmit")
int BPF_PROG(ptcap_hook_dev_direct_xmit, struct sk_buff *skb, __u16 queue_id)
{
	return take(ctx, &ptcap_progs_dev_direct_xmit, skb, 0, 0, PTCAP_DIR_OUT, 0);
}

char LICENSE[] SEC("license") = "GPL";
