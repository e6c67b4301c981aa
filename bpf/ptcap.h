/* The records the kernel side hands to user space: one header owns each struct.
 * ptcap/records.py mirrors these layouts; keep the two in step. */
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

/* A captured packet; the packet bytes follow (caplen of them). 104 bytes.
 * From `iface_id` on, the record is the body of a pcapng Enhanced Packet Block, so the
 * writer in user space only frames it; `dir` and `owner` are adjacent: together they are
 * the key of the packet's pcapng options. */
struct ptcap_packet {
	__u32 ifindex;
	__u16 kind;		/* PTCAP_EV_PACKET */
	__u8 flags;
	__u8 dir;		/* enum ptcap_dir */
	struct ptcap_owner owner;
	__u32 _reserved;	/* keeps the bytes right after `len` (8-byte struct alignment) */
	/* pcapng EPB body */
	__u32 iface_id;		/* pcapng interface id (from struct ptcap_iface) */
	__u32 ts_hi;		/* wall clock in ns, split as pcapng wants it */
	__u32 ts_lo;
	__u32 caplen;		/* bytes that follow */
	__u32 len;		/* original length */
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
	__u32 _pad;
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

/* Settings user space writes while capturing (the capture object's .bss). */
struct ptcap_config {
	__s64 clock_offset;	/* CLOCK_REALTIME - CLOCK_MONOTONIC, in ns */
	__u32 who;		/* active process selectors (enum ptcap_who_bits); 0 = all */
	__u32 _pad;
};

enum ptcap_counter {
	PTCAP_CNT_RECEIVED = 0,	/* passed the filters, offered to the ring */
	PTCAP_CNT_DROPPED = 1,	/* ring buffer full */
	PTCAP_CNT_MAX,
};

#endif
