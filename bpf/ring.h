/* The ring buffer every capture object writes packet records and process events into, its
 * loss counters, and the reservation by size class the verifier needs (shared by capture,
 * hooks and procs). Packets leave room at the ring's end that only process events take. */
#ifndef PTCAP_RING_H
#define PTCAP_RING_H

#include "ptcap.h"

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 24);	/* user space resizes (or shares) it before load */
} ptcap_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, PTCAP_CNT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} ptcap_counters SEC(".maps");

/* Ring wake-ups are costly at high rates (each is an interrupt; in a VM, an exit; in the
 * reader, a pass through Python): wake the reader once per 2^shift bytes queued, on the
 * record that crosses the mark, not on every record past it; it also polls on a timer. User
 * space sets the shift by the ring's size (ptcap/kernel/ringroom.py); unset, this one. */
#define WAKEUP_SHIFT 18

static __always_inline void count(__u32 which)
{
	__u64 *c = bpf_map_lookup_elem(&ptcap_counters, &which);
	if (c)
		*c += 1;
}

/* Set by user space before load: how full packets may make the ring (struct ptcap_ring_config). */
const volatile struct ptcap_ring_config ptcap_ring = {};

/* Bytes queued in the ring (reserved, submitted or discarded, not yet consumed). */
static __always_inline __u64 ring_queued(void)
{
	return bpf_ringbuf_query(&ptcap_events, BPF_RB_AVAIL_DATA);
}

/* The submit flag for a record of `size` bytes about to be queued behind `queued`. */
static __always_inline __u64 ring_wakeup(__u64 queued, __u64 size)
{
	__u64 shift = ptcap_ring.wake_shift;

	if (shift == 0 || shift > 30)
		shift = WAKEUP_SHIFT;
	return (queued + size) >> shift != queued >> shift ? BPF_RB_FORCE_WAKEUP : BPF_RB_NO_WAKEUP;
}

/* Would a packet record reserving `size` bytes (its 8-byte ring header included) eat into
 * the room kept for process events? */
static __always_inline int ring_no_room_for_packet(__u64 queued, __u64 size)
{
	return ptcap_ring.packet_limit && queued + size > ptcap_ring.packet_limit;
}

/* Reserve a record of a fixed size class (the verifier wants constant sizes), fill its
 * header from `hdr`, copy `n` (<= N) packet bytes with COPY(dst, n), submit, return RET;
 * refused (goto dropped) when it would take the room kept for process events.
 * Expects locals hdr, caplen, n, queued, wake and a `dropped` label. */
#define RING_TRY_CLASS(N, COPY, RET)							\
	if (caplen <= (N)) {								\
		struct { struct ptcap_packet h; __u8 data[N]; } *r;			\
		if (ring_no_room_for_packet(queued, sizeof(*r) + 8))			\
			goto dropped;							\
		r = bpf_ringbuf_reserve(&ptcap_events, sizeof(*r), 0);			\
		if (!r)									\
			goto dropped;							\
		__builtin_memcpy(&r->h, &hdr, sizeof(hdr));				\
		n = caplen;								\
		/* clamp to [1, N] in the register the helper gets, so the verifier	\
		 * sees both ends (6.1's loses a separate n > 0 test) */		\
		asm volatile("if %[n] <= %[max] goto +1; %[n] = %[max];"		\
			     "if %[n] > 0 goto +1; %[n] = 1"				\
			     : [n] "+r"(n) : [max] "i"(N));				\
		if (caplen > 0)								\
			COPY(r->data, n);						\
		bpf_ringbuf_submit(r, wake);						\
		return RET;								\
	}

/* The size classes up to 16 KiB, smallest first (needs a TRY_CLASS(N) of the caller's). */
#define RING_CLASSES_TO_16K		\
	TRY_CLASS(64)			\
	TRY_CLASS(128)			\
	TRY_CLASS(256)			\
	TRY_CLASS(512)			\
	TRY_CLASS(1024)			\
	TRY_CLASS(2048)			\
	TRY_CLASS(4096)			\
	TRY_CLASS(16384)

#endif
