/* The records the kernel side hands to user space: one header owns each struct.
 * ptcap/kernel/records.py declares them once for user space and checks them
 * against the objects' BTF at load (bpf/records.bpf.c keeps every type here in its BTF). */
#ifndef PTCAP_H
#define PTCAP_H

#define PTCAP_COMM_LEN 16

enum ptcap_event_kind {
	PTCAP_EV_PACKET = 1,
	PTCAP_EV_EXEC = 2,
	PTCAP_EV_FORK = 3,
	PTCAP_EV_EXIT = 4,	/* struct ptcap_fork's layout: a process ended */
};

enum ptcap_dir {
	PTCAP_DIR_IN = 1,
	PTCAP_DIR_OUT = 2,
};

/* Who owns a socket: the task that last created, sent or received on it. 72 bytes. */
struct ptcap_owner {
	__u32 pid;		/* tgid */
	__u32 tid;
	__u32 uid;
	__u32 gid;
	__u64 start_ns;		/* process start (boot-based ns): pid + start = identity */
	__u64 cgroup_id;	/* cgroup v2 id */
	__u32 mntns;		/* mount namespace inode: tells containers apart */
	__u32 ppid;
	char comm[PTCAP_COMM_LEN];	/* thread name */
	char pcomm[PTCAP_COMM_LEN];	/* process name (the thread group leader's) */
};

/* What else a packet record says about its owners (struct ptcap_packet.marks). */
enum ptcap_marks {
	PTCAP_MARK_LAST_OWNER = 1,	/* owner: the last owner of a connection whose socket is gone */
	PTCAP_MARK_PEER_LAST_OWNER = 2,	/* the same for the peer */
	PTCAP_MARK_PEER_RECEIVER = 4,	/* peer: the local process the packet is for */
	PTCAP_MARK_PEER_SENDER = 8,	/* peer: the local process that sent it */
	PTCAP_MARK_CONNTRACK = 16,	/* owner: a forwarded (NATed) packet's, through its flow / conntrack entry */
	PTCAP_MARK_PEER_CONNTRACK = 32,	/* the same for the peer */
};

/* A captured packet; the packet bytes follow (caplen of them). 192 bytes.
 * From `iface_id` on, the record is the body of a pcapng Enhanced Packet Block, so the
 * writer in user space only frames it; `owner` to `_pad` are adjacent: together they are
 * the key of the packet's pcapng options (who, and where the kernel saw it).
 * `owner` is the packet's own process (the sender of an outgoing packet, the receiver of an
 * incoming one); `peer` the other end's when it is local too (loopback, veth), else zero. */
struct ptcap_packet {
	__u32 ifindex;
	__u16 kind;		/* PTCAP_EV_PACKET */
	__u8 hook;		/* 0: interface capture (tc, cgroup_skb); else enum ptcap_hook + 1 */
	__u8 dir;		/* enum ptcap_dir */
	struct ptcap_owner owner;
	__u64 location;		/* kernel address: where the skb was dropped (kfree_skb hook) */
	__u32 reason;		/* enum skb_drop_reason (kfree_skb hook) */
	__u32 marks;		/* enum ptcap_marks */
	struct ptcap_owner peer;
	__u32 _pad;
	/* pcapng EPB body */
	__u32 iface_id;		/* pcapng interface id (from struct ptcap_iface) */
	__u32 ts_hi;		/* wall clock in ns, split as pcapng wants it */
	__u32 ts_lo;
	__u32 caplen;		/* bytes that follow */
	__u32 len;		/* original length */
};

/* A flow as its local sender sees it (addresses and ports in network order, IPv4 in the first
 * 4 bytes): the key of the flow map, which names the process behind a flow for its packets
 * that are forwarded or NATed, where no socket is at hand. */
struct ptcap_flow_key {
	__u8 proto;		/* IPPROTO_TCP, IPPROTO_UDP */
	__u8 v6;
	__u16 sport;
	__u16 dport;
	__u16 _pad;
	__u32 saddr[4];
	__u32 daddr[4];
};

/* A TCP connection as its local end sees it: the key of the last-owner map, which keeps who
 * owned a connection once its socket closes, so that its teardown (FIN, RST, the last ACKs
 * of time-wait) still names it. Addresses in network order, IPv4 in the first 4 bytes. */
struct ptcap_conn_key {
	__u32 netns;		/* network namespace inode */
	__u16 family;		/* AF_INET, AF_INET6 */
	__u16 lport;		/* network order */
	__u16 rport;
	__u16 _pad;
	__u8 laddr[16];
	__u8 raddr[16];
};

/* Kernel hook points packets can be captured at (bpf/hooks.bpf.c, ptcap/hooks.py). */
enum ptcap_hook {
	PTCAP_HOOK_KFREE_SKB = 0,
	PTCAP_HOOK_CONSUME_SKB = 1,
	PTCAP_HOOK_NET_DEV_QUEUE = 2,
	PTCAP_HOOK_NET_DEV_START_XMIT = 3,
	PTCAP_HOOK_NETIF_RECEIVE_SKB = 4,
	PTCAP_HOOK_TCP_RETRANSMIT_SKB = 5,
	PTCAP_HOOK_TCP_SEND_RESET = 6,
	PTCAP_HOOK_DEV_DIRECT_XMIT = 7,	/* fentry: kernels with BPF trampolines */
	PTCAP_HOOK_MAX,
};

/* Hook → filter → emit: the hook program copies the packet's first bytes here (one per
 * CPU), the filter user space assembles reads them, the emit program copies what passed
 * into the ring. 32 KiB: the largest per-CPU map value. */
#define PTCAP_SCRATCH_SIZE 32768
#define PTCAP_SCRATCH_HDR 128
#define PTCAP_SCRATCH_DATA (PTCAP_SCRATCH_SIZE - PTCAP_SCRATCH_HDR)

struct ptcap_scratch {
	__u64 location;
	__u32 reason;
	__u32 len;		/* wire length from the first copied byte */
	__u32 avail;		/* bytes copied into data */
	__u32 snap;		/* the filter's verdict: bytes to keep */
	__u32 ifindex;
	__u8 raw;		/* 1: data starts at the IP header, 0: at the Ethernet header */
	__u8 dir;
	__u8 _pad[2];
	struct ptcap_owner owner;	/* the skb's socket's owner, if ours (at 32) */
	__u8 _pad2[24];
	__u8 data[PTCAP_SCRATCH_DATA];
};

/* Where the filter programs sit in each hook's prog array, and the emit program. */
enum ptcap_hook_slot {
	PTCAP_SLOT_FILTER_ETHER = 0,
	PTCAP_SLOT_FILTER_RAW = 1,
	PTCAP_SLOT_EMIT = 2,
	PTCAP_SLOT_MAX,
};

/* Settings of the hook capture (hooks object's .bss). */
struct ptcap_hook_config {
	__s64 clock_offset;	/* CLOCK_REALTIME - CLOCK_MONOTONIC, in ns */
	__u32 rate;		/* events per second at most (0 = no limit) */
	__u32 backtrace;	/* 1: count kernel stacks instead of emitting packets */
	__u32 iface_id[PTCAP_HOOK_MAX];	/* pcapng id of each hook's Ethernet interface; raw IP is +1 */
};

#define PTCAP_FILENAME_LEN 256
#define PTCAP_ARGS_LEN 1024

/* A process started a new program: what it runs, captured at exec time so that
 * short-lived processes keep their command after they are gone. */
struct ptcap_exec {
	__u32 pid;
	__u16 kind;		/* PTCAP_EV_EXEC (every record has its kind at byte 4) */
	__u16 _pad;
	__u32 ppid;
	__u32 args_len;		/* bytes of args used (NUL-separated argv) */
	__u64 start_ns;
	char filename[PTCAP_FILENAME_LEN];
	char args[PTCAP_ARGS_LEN];
};

/* A process forked: the child runs its parent's program until it execs.
 * Also a process's end (PTCAP_EV_EXIT): user space drops what it cached about it. */
struct ptcap_fork {
	__u32 pid;
	__u16 kind;		/* PTCAP_EV_FORK, PTCAP_EV_EXIT */
	__u16 _pad;
	__u32 ppid;
	__u32 _pad2;
	__u64 start_ns;
};

/* cgroup_skb capture sees every namespace: which (namespace, interface) pairs to take,
 * and their pcapng interface ids. (tc gets its interface id from the entry program.) */
struct ptcap_iface_key {
	__u64 netns_cookie;
	__u32 ifindex;
	__u32 _pad;
};

struct ptcap_iface {
	__u32 iface_id;		/* its pcapng interface id */
	__u32 flags;		/* enum ptcap_iface_flags */
};

/* What an interface's packets may have at their other end (tc: cb[3]; cgroup_skb: struct
 * ptcap_iface.flags). */
enum ptcap_iface_flags {
	PTCAP_IFACE_LOCAL = 1,		/* both ends may be local: look for the receiver (lo, veth) */
	PTCAP_IFACE_ONE_COPY = 2,	/* loopback: take each packet once, leaving (cgroup_skb) */
	PTCAP_IFACE_FLOWS = 4,		/* a veth or bridge: the other end may be a local process
					 * of another namespace, found by its established flow */
	/* bits 8-15 (tc): the bytes before the IP header */
	PTCAP_IFACE_L2LEN_SHIFT = 8,
	/* bits 16-31: a veth's peer network namespace, as its id in this one + 1 (0: none) */
	PTCAP_IFACE_PEER_NSID_SHIFT = 16,
};

/* Which process selectors are active (the global ptcap_who): a packet must match every
 * active kind; within a kind any value matches. PIDS and COMMS are one kind ("process"). */
enum ptcap_who_bits {
	PTCAP_WHO_PIDS = 1,
	PTCAP_WHO_COMMS = 2,
	PTCAP_WHO_UIDS = 4,
	PTCAP_WHO_MNTNS = 8,
	PTCAP_WHO_FOLLOW = 16,	/* add children of selected pids at fork */
};

/* Container admission at cgroup_mkdir (bpf/cgroups.bpf.c): a cgroup directory's name
 * (NUL-padded, the map key of wanted names), a directory as kept (name and parent), and
 * --container-id's id or prefix (containerd allows ids of 76 characters). */
#define PTCAP_CONTAINER_ID_LEN 76

struct ptcap_cgroup_name {
	char name[128];
};

struct ptcap_cgroup_dir {
	__u64 parent_id;	/* the parent cgroup's id */
	struct ptcap_cgroup_name name;
};

struct ptcap_cgroup_want {
	__u32 len;		/* 0: no --container-id */
	char id[80];
};

/* Settings user space writes while capturing (the capture object's .bss). */
struct ptcap_config {
	__s64 clock_offset;	/* CLOCK_REALTIME - CLOCK_MONOTONIC, in ns */
	__u32 who;		/* active process selectors (enum ptcap_who_bits); 0 = all */
	__u32 peer_selects;	/* 1: a packet whose peer (other local end) matches is taken too */
};

/* The ring's settings, fixed at load (the objects' .rodata; their only variable there).
 * A packet is refused (and counted dropped) when the ring would be fuller than
 * packet_limit bytes with it: the rest is room that only process events may take. */
struct ptcap_ring_config {
	__u64 packet_limit;	/* ring size - headroom; 0: no limit */
	__u64 wake_shift;	/* wake the reader once per 2^wake_shift bytes queued; 0: 18 */
};

enum ptcap_counter {
	PTCAP_CNT_RECEIVED = 0,	/* passed the filters, offered to the ring */
	PTCAP_CNT_DROPPED = 1,	/* ring buffer full */
	PTCAP_CNT_RATE_LIMITED = 2,	/* hook events over --hook-rate */
	PTCAP_CNT_PROC_LOST = 3,	/* process events (exec, fork, exit) the ring had no room for */
	PTCAP_CNT_MAX,
};

#endif
