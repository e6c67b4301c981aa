// SPDX-License-Identifier: GPL-2.0
/* The reader's hot loop, in user space: from the ring buffer straight into file blocks.
 *
 * The kernel lays out each packet record so that from `iface_id` on it is the body of a pcapng
 * Enhanced Packet Block (bpf/ptcap.h). What a block still needs is its framing and its
 * options, and the options depend only on the record's key (owner, hook info, marks, peer)
 * and direction: user space encodes them once per key (ptcap/formats/pcapng.py) and puts
 * them in this table. The loop below then turns every ready record into a block without
 * Python touching a packet: it stops and returns at what needs Python — a record that is
 * not a packet (process events), a key the table does not hold yet, a full output buffer,
 * the packet or byte limit the caller gave (-c, -C).
 *
 * The ring as the kernel maps it (kernel/bpf/ringbuf.c): a consumer page, then a producer
 * page, then the data pages twice in a row, so that a record that wraps is contiguous.
 * Each record: u32 length (bit 31 busy, bit 30 discarded), u32 page offset, data, padded
 * to 8 bytes. Positions are u64s read with acquire and written with release semantics.
 *
 * For tcpdump's lines (ptcap/sinks/lines.py) the same loop frames classic pcap records for a
 * tcpdump child and describes them in *runs*: packets in a row of one key, direction and
 * interface, whose ptcap fields Python makes once per run instead of once per packet.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/mman.h>
#include <sys/uio.h>
#include <unistd.h>
#include <linux/types.h>
#include "ptcap.h"

#define RING_BUSY (1u << 31)
#define RING_DISCARD (1u << 30)
#define RING_HDR 8
/* direct mode writes (and hands the ring space back) this often, or every eighth of a
 * smaller ring */
#define FLUSH_BYTES (1 << 20)

#define KEY_AT offsetof(struct ptcap_packet, owner)
#define KEY_END offsetof(struct ptcap_packet, iface_id)
#define KEY_LEN (KEY_END - KEY_AT)
#define EPB_AT offsetof(struct ptcap_packet, iface_id)
#define EPB_FIELDS (sizeof(struct ptcap_packet) - EPB_AT)	/* iface_id .. len: 20 bytes */

_Static_assert(EPB_FIELDS == 20, "the EPB fields of struct ptcap_packet");
_Static_assert(offsetof(struct ptcap_packet, kind) == 4, "every record has its kind at byte 4");

/* Why a run returned (ptcap/pipeline/drain.py). */
enum stop {
	STOP_EMPTY = 0,		/* nothing ready */
	STOP_EVENT = 1,		/* the record at `cons` is not a packet */
	STOP_UNKNOWN = 2,	/* the packet at `cons` has a key (and direction) the table lacks */
	STOP_FULL = 3,		/* the output buffer has no room for the next block */
	STOP_BYTES = 4,		/* the last block took the output past the byte limit */
	STOP_COUNT = 5,		/* the packet limit is reached */
	STOP_ERROR = 6,		/* writing failed (direct mode): result.err */
};

/* What blocks to write. */
enum framing {
	FRAME_PCAPNG = 0,	/* Enhanced Packet Blocks with the table's options */
	FRAME_PCAP_US = 1,	/* classic pcap records, microseconds */
	FRAME_PCAP_NS = 2,	/* classic pcap records, nanoseconds */
	FRAME_PCAP_RUNS = 3,	/* classic pcap records, nanoseconds, described in runs */
};

/* Packets in a row with the same key, direction and interface (FRAME_PCAP_RUNS). */
struct run {
	uint32_t iface;		/* pcapng interface id */
	uint32_t packets;
	uint32_t bytes;		/* of their pcap records in the output */
	uint8_t dir;
	uint8_t _pad[3];
	uint64_t first_ts;	/* ns */
	uint64_t last_ts;
	uint8_t key[KEY_LEN];
} __attribute__((aligned(8)));

struct entry {
	uint8_t key[KEY_LEN];
	uint8_t dir;
	uint8_t used;
	uint16_t _pad;
	uint32_t len;		/* bytes of options */
	uint64_t hash;
	uint8_t *opts;
};

struct drain {
	uint8_t *consumer;	/* the consumer page (read-write) */
	uint8_t *producer;	/* the producer page and the data pages (read-only) */
	size_t producer_len;
	uint8_t *data;
	uint64_t mask;
	uint64_t flush_bytes;
	long page;
	int framing;
	struct entry *table;
	uint32_t slots;		/* a power of two */
	uint32_t count;
	struct entry *last;	/* the entry the previous packet used */
	struct run *runs;	/* FRAME_PCAP_RUNS: where a run describes its records */
	uint32_t max_runs;
	uint32_t per_run;	/* packets in a run, at most */
};

/* What a run did (ptcap/pipeline/drain.py's _Result). */
struct result {
	uint64_t cons;		/* the consumer position reached (already handed back) */
	uint64_t packets;	/* blocks written into the output */
	uint64_t out_len;	/* bytes of the output used */
	uint32_t stop;		/* enum stop */
	uint32_t record;	/* for STOP_EVENT and STOP_UNKNOWN: the record's offset in the data pages */
	uint32_t size;		/* and its size in the ring, header included */
	int32_t err;		/* STOP_ERROR: the errno of the failed write */
	uint32_t runs;		/* FRAME_PCAP_RUNS: runs written */
	uint32_t _pad;
};

static uint64_t hash_key(const uint8_t *key, uint8_t dir)
{
	uint64_t h = 0x9E3779B97F4A7C15ull ^ dir;
	size_t i;

	for (i = 0; i + 8 <= KEY_LEN; i += 8) {
		uint64_t w;

		memcpy(&w, key + i, 8);
		h = (h ^ w) * 0xFF51AFD7ED558CCDull;
		h ^= h >> 29;
	}
	for (; i < KEY_LEN; i++)
		h = (h ^ key[i]) * 0x100000001B3ull;
	return h ^ (h >> 31);
}

static struct entry *find(struct drain *d, const uint8_t *key, uint8_t dir, uint64_t h)
{
	uint32_t i = (uint32_t)h & (d->slots - 1);

	for (;;) {
		struct entry *e = &d->table[i];

		if (!e->used)
			return e;
		if (e->hash == h && e->dir == dir && memcmp(e->key, key, KEY_LEN) == 0)
			return e;
		i = (i + 1) & (d->slots - 1);
	}
}

void ptcap_drain_clear(struct drain *d)
{
	uint32_t i;

	for (i = 0; i < d->slots; i++) {
		free(d->table[i].opts);
		d->table[i].opts = NULL;
		d->table[i].used = 0;
	}
	d->count = 0;
	d->last = NULL;
}

/* Hold `len` bytes of options for packets of `key` (KEY_LEN bytes) and direction `dir`.
 * The table is bounded: when half full it starts again empty. Returns 0, or -1 (no memory). */
int ptcap_drain_put(struct drain *d, const uint8_t *key, uint32_t dir, const uint8_t *opts, uint32_t len)
{
	uint64_t h = hash_key(key, (uint8_t)dir);
	struct entry *e;
	uint8_t *copy = malloc(len ? len : 1);

	if (!copy)
		return -1;
	memcpy(copy, opts, len);
	if (d->count * 2 >= d->slots)
		ptcap_drain_clear(d);
	e = find(d, key, (uint8_t)dir, h);
	if (e->used) {
		free(e->opts);
	} else {
		memcpy(e->key, key, KEY_LEN);
		e->dir = (uint8_t)dir;
		e->hash = h;
		e->used = 1;
		d->count++;
	}
	e->opts = copy;
	e->len = len;
	d->last = NULL;
	return 0;
}

uint32_t ptcap_drain_entries(const struct drain *d)
{
	return d->count;
}

void ptcap_drain_close(struct drain *d)
{
	if (!d)
		return;
	if (d->table) {
		ptcap_drain_clear(d);
		free(d->table);
	}
	if (d->producer)
		munmap(d->producer, d->producer_len);
	if (d->consumer)
		munmap(d->consumer, d->page);
	free(d);
}

/* Map the ring of BPF map `map_fd` (`size` bytes of data, a power of two) for reading;
 * the table holds at most slots/2 keys. NULL on failure (errno says why). */
struct drain *ptcap_drain_open(int map_fd, uint64_t size, uint32_t slots, int framing)
{
	struct drain *d = calloc(1, sizeof(*d));

	if (!d)
		return NULL;
	d->page = sysconf(_SC_PAGESIZE);
	d->mask = size - 1;
	d->flush_bytes = size / 8 < FLUSH_BYTES ? size / 8 : FLUSH_BYTES;
	d->framing = framing;
	d->slots = slots < 16 ? 16 : slots;
	d->table = calloc(d->slots, sizeof(*d->table));
	d->consumer = mmap(NULL, d->page, PROT_READ | PROT_WRITE, MAP_SHARED, map_fd, 0);
	if (d->consumer == MAP_FAILED)
		d->consumer = NULL;
	d->producer_len = d->page + 2 * size;
	d->producer = mmap(NULL, d->producer_len, PROT_READ, MAP_SHARED, map_fd, d->page);
	if (d->producer == MAP_FAILED)
		d->producer = NULL;
	if (!d->table || !d->consumer || !d->producer || (size & (size - 1))) {
		ptcap_drain_close(d);
		return NULL;
	}
	d->data = d->producer + d->page;
	return d;
}

/* FRAME_PCAP_RUNS: runs go to runs[0..max), each of at most `per_run` packets (a full array
 * stops a run with STOP_FULL). */
void ptcap_drain_runs(struct drain *d, struct run *runs, uint32_t max, uint32_t per_run)
{
	d->runs = runs;
	d->max_runs = runs ? max : 0;
	d->per_run = per_run ? per_run : 1;
}

uint32_t ptcap_drain_run_size(void)
{
	return sizeof(struct run);
}

static inline uint64_t *cons_pos(struct drain *d)
{
	return (uint64_t *)d->consumer;
}

/* The records from the consumer position on that are not packets (process events), at most
 * `max`: their data's offsets in the data pages go to offs[]; returns how many. */
uint32_t ptcap_drain_events(struct drain *d, uint32_t *offs, uint32_t max)
{
	uint64_t cons = __atomic_load_n(cons_pos(d), __ATOMIC_RELAXED);
	uint64_t prod = __atomic_load_n((uint64_t *)d->producer, __ATOMIC_ACQUIRE);
	uint32_t n = 0;

	while (cons < prod && n < max) {
		uint8_t *hdr = d->data + (cons & d->mask);
		uint32_t len = __atomic_load_n((uint32_t *)hdr, __ATOMIC_ACQUIRE);
		const struct ptcap_packet *p = (const void *)(hdr + RING_HDR);

		if (len & RING_BUSY)
			break;
		if (!(len & RING_DISCARD)) {
			if ((len & ~RING_DISCARD) >= 8 && p->kind == PTCAP_EV_PACKET)
				break;
			offs[n++] = (uint32_t)(cons & d->mask) + RING_HDR;
		}
		cons += ((len & ~(RING_BUSY | RING_DISCARD)) + RING_HDR + 7) & ~7ull;
	}
	return n;
}

/* Step over `n` records (discarded ones not counted) at the consumer position: the ones
 * ptcap_drain_events listed, once Python has handled them. */
void ptcap_drain_skip(struct drain *d, uint32_t n)
{
	uint64_t cons = __atomic_load_n(cons_pos(d), __ATOMIC_RELAXED);
	uint64_t prod = __atomic_load_n((uint64_t *)d->producer, __ATOMIC_ACQUIRE);

	while (cons < prod) {
		uint32_t len = __atomic_load_n((uint32_t *)(d->data + (cons & d->mask)), __ATOMIC_ACQUIRE);

		if ((len & RING_BUSY) || (!(len & RING_DISCARD) && n-- == 0))
			break;
		cons += ((len & ~(RING_BUSY | RING_DISCARD)) + RING_HDR + 7) & ~7ull;
	}
	__atomic_store_n(cons_pos(d), cons, __ATOMIC_RELEASE);
}

static inline void put32(uint8_t *p, uint32_t v)
{
	memcpy(p, &v, 4);
}

/* Where a run's blocks go: small pieces are copied into the output buffer, and with a file
 * descriptor (direct mode) a large packet's bytes are referenced where they lie in the ring,
 * so that writev(2) copies them once, into the file (to /dev/null: never). */
#define IOV_MAX_RUN 1024
#define DIRECT_MIN 1024		/* packets this big go by reference */

struct emit {
	struct iovec iov[IOV_MAX_RUN];
	int n;
	uint8_t *out;
	uint64_t used, cap;
	int fd;
	uint64_t written;	/* bytes of blocks in this run */
	int err;
};

static inline void stage(struct emit *e, const void *p, size_t len)
{
	uint8_t *at = e->out + e->used;

	memcpy(at, p, len);
	e->used += len;
	if (e->n && (uint8_t *)e->iov[e->n - 1].iov_base + e->iov[e->n - 1].iov_len == at) {
		e->iov[e->n - 1].iov_len += len;
	} else {
		e->iov[e->n].iov_base = at;
		e->iov[e->n].iov_len = len;
		e->n++;
	}
}

static inline void stage_zeros(struct emit *e, size_t len)
{
	static const uint8_t zeros[4];

	stage(e, zeros, len);
}

static inline void refer(struct emit *e, const void *p, size_t len)
{
	e->iov[e->n].iov_base = (void *)p;
	e->iov[e->n].iov_len = len;
	e->n++;
}

/* Write what is queued (direct mode); on failure e->err says why. */
static int flush(struct emit *e)
{
	struct iovec *iov = e->iov;
	int n = e->n;

	while (n > 0) {
		ssize_t w = writev(e->fd, iov, n);

		if (w < 0) {
			if (errno == EINTR)
				continue;
			e->err = errno;
			return -1;
		}
		while (n > 0 && (size_t)w >= iov->iov_len) {
			w -= iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + w;
			iov->iov_len -= w;
		}
	}
	e->n = 0;
	e->used = 0;
	return 0;
}

/* Turn ready records into blocks until one of enum stop: at most `max_packets`, stopping
 * after the block that takes the run past `max_bytes`. With fd < 0 the blocks are copied
 * into out[0..cap) for the caller to write (r->out_len bytes); with a file descriptor they
 * are written to it here (r->out_len: bytes written; r->err: errno of a failed write, the
 * records not written then stay in the ring). */
void ptcap_drain_run(struct drain *d, uint8_t *out, uint64_t cap, int fd, uint64_t max_packets,
		     uint64_t max_bytes, struct result *r)
{
	uint64_t cons = __atomic_load_n(cons_pos(d), __ATOMIC_RELAXED);
	uint64_t prod = __atomic_load_n((uint64_t *)d->producer, __ATOMIC_ACQUIRE);
	uint64_t packets = 0, start = cons, done = cons;
	uint32_t stop = STOP_EMPTY, nruns = 0;
	struct run *cur = NULL;
	/* static: 16 KiB of iovecs is no stack object; one run at a time per process */
	static struct emit e;

	e.n = 0;
	e.out = out;
	e.used = 0;
	e.cap = cap;
	e.fd = fd;
	e.written = 0;
	e.err = 0;
	r->record = r->size = 0;
	uint64_t queued = 0;
	while (cons < prod) {
		uint8_t *hdr = d->data + (cons & d->mask);
		uint32_t len = __atomic_load_n((uint32_t *)hdr, __ATOMIC_ACQUIRE);
		uint64_t size = ((len & ~(RING_BUSY | RING_DISCARD)) + RING_HDR + 7) & ~7ull;
		const struct ptcap_packet *p = (const void *)(hdr + RING_HDR);
		const uint8_t *data = (const uint8_t *)(p + 1);
		uint32_t caplen, pad, total, staged;
		struct entry *ent = NULL;
		int by_ref;

		if (len & RING_BUSY)
			break;
		if (len & RING_DISCARD) {
			cons += size;
			continue;
		}
		len &= ~(RING_BUSY | RING_DISCARD);
		if (len < sizeof(*p) || p->kind != PTCAP_EV_PACKET) {
			stop = STOP_EVENT;
			r->record = (uint32_t)(cons & d->mask) + RING_HDR;
			r->size = (uint32_t)size;
			break;
		}
		if (packets >= max_packets) {
			stop = STOP_COUNT;
			break;
		}
		caplen = p->caplen;
		if (caplen > len - sizeof(*p))		/* never read past the record */
			caplen = len - sizeof(*p);
		pad = -caplen & 3;
		if (d->framing == FRAME_PCAPNG) {
			const uint8_t *key = (const uint8_t *)p + KEY_AT;

			ent = d->last;
			if (!ent || ent->dir != p->dir || memcmp(ent->key, key, KEY_LEN) != 0) {
				ent = find(d, key, p->dir, hash_key(key, p->dir));
				if (!ent->used) {
					stop = STOP_UNKNOWN;
					r->record = (uint32_t)(cons & d->mask) + RING_HDR;
					r->size = (uint32_t)size;
					break;
				}
				d->last = ent;
			}
			total = 32 + caplen + pad + ent->len;
		} else {
			total = 16 + caplen;
		}
		by_ref = fd >= 0 && caplen >= DIRECT_MIN;
		staged = by_ref ? total - caplen : total;
		if (e.used + staged > e.cap || e.n + 4 > IOV_MAX_RUN) {
			if (fd < 0) {
				stop = STOP_FULL;
				break;
			}
			if (flush(&e))
				break;
			__atomic_store_n(cons_pos(d), cons, __ATOMIC_RELEASE);
			done = cons;
			queued = 0;
		}
		if (d->framing == FRAME_PCAP_RUNS) {
			const uint8_t *key = (const uint8_t *)p + KEY_AT;
			uint64_t ts = ((uint64_t)p->ts_hi << 32) | p->ts_lo;

			if (!cur || cur->packets >= d->per_run || cur->iface != p->iface_id || cur->dir != p->dir ||
			    memcmp(cur->key, key, KEY_LEN) != 0) {
				if (nruns >= d->max_runs) {
					stop = STOP_FULL;
					break;
				}
				cur = &d->runs[nruns++];
				cur->iface = p->iface_id;
				cur->packets = 0;
				cur->bytes = 0;
				cur->dir = p->dir;
				cur->first_ts = ts;
				memcpy(cur->key, key, KEY_LEN);
			}
			cur->packets++;
			cur->bytes += total;
			cur->last_ts = ts;
		}
		if (d->framing == FRAME_PCAPNG) {
			uint8_t head[28];

			put32(head, 6);
			put32(head + 4, total);
			memcpy(head + 8, (const uint8_t *)p + EPB_AT, EPB_FIELDS);
			put32(head + 20, caplen);		/* as clamped above */
			stage(&e, head, 28);
			if (by_ref)
				refer(&e, data, caplen);
			else
				stage(&e, data, caplen);
			stage_zeros(&e, pad);
			stage(&e, ent->opts, ent->len);
			stage(&e, &total, 4);
		} else {
			uint64_t ts = ((uint64_t)p->ts_hi << 32) | p->ts_lo;
			uint32_t frac = d->framing != FRAME_PCAP_US ? ts % 1000000000u : (ts % 1000000000u) / 1000u;
			uint8_t head[16];

			put32(head, (uint32_t)(ts / 1000000000u));
			put32(head + 4, frac);
			put32(head + 8, caplen);
			put32(head + 12, p->len);
			stage(&e, head, 16);
			if (by_ref)
				refer(&e, data, caplen);
			else
				stage(&e, data, caplen);
		}
		e.written += total;
		queued += total;
		packets++;
		cons += size;
		if (fd >= 0 && queued >= d->flush_bytes) {
			if (flush(&e))
				break;
			__atomic_store_n(cons_pos(d), cons, __ATOMIC_RELEASE);
			done = cons;
			queued = 0;
		}
		if (e.written > max_bytes) {
			stop = STOP_BYTES;
			break;
		}
	}
	if (fd >= 0 && !e.err && e.n)
		flush(&e);
	if (e.err)		/* what was not written stays in the ring */
		stop = STOP_ERROR;
	else
		done = cons;
	if (done != start)
		__atomic_store_n(cons_pos(d), done, __ATOMIC_RELEASE);
	r->cons = done;
	r->packets = packets;
	r->out_len = e.written;
	r->stop = stop;
	r->err = e.err;
	r->runs = nruns;
}

/* ---- 'ptcap -r FILE.pcapng': the file's packet blocks, scanned for their options
 *
 * The Enhanced Packet Blocks in buf[pos..n), as the reader would take them
 * (ptcap/formats/pcapng_reader.py: raw_blocks), described in runs of blocks in a row with the
 * same interface id and the same options bytes (every packet of one process and direction,
 * in ptcap's files): Python parses a run's options once, and tcpdump reads the blocks as they
 * are. */

/* Blocks in a row with the same interface and options. */
struct scan_run {
	uint32_t ifid;
	uint32_t packets;
	uint64_t opt_at;	/* the options' offset in the buffer */
	uint32_t opt_len;	/* 0: the blocks have none */
	uint32_t _pad;
};

struct scan_result {
	uint64_t pos;		/* where the scan stopped: the first block not taken */
	uint64_t last;		/* the offset of the last block taken */
	uint32_t packets;
	uint32_t runs;
};

static inline uint32_t get32(const uint8_t *p, int swapped)
{
	uint32_t v;

	memcpy(&v, p, 4);
	return swapped ? __builtin_bswap32(v) : v;
}

/* Take at most `max_packets` blocks into at most `max_runs` runs; stop before any other
 * block, a block not whole in the buffer, or one the reader must look at itself (a size it
 * refuses: under 32 bytes, over `max_block`, not a multiple of 4; a captured length past the
 * block; an interface id of none of the `nifaces` interfaces). `swapped`: the section's byte
 * order is not this machine's. */
void ptcap_scan_epbs(const uint8_t *buf, uint64_t pos, uint64_t n, int swapped, uint32_t nifaces,
		     uint32_t max_block, uint32_t snaplen, uint32_t max_packets, struct scan_run *runs, uint32_t max_runs,
		     struct scan_result *r)
{
	struct scan_run *cur = NULL;
	uint32_t packets = 0, nruns = 0;
	uint64_t last = pos;

	while (pos + 12 <= n && packets < max_packets) {
		uint32_t type = get32(buf + pos, swapped), total = get32(buf + pos + 4, swapped);
		uint64_t end = pos + total, opt;
		uint32_t ifid, caplen, opt_len;

		if (type != 6 || end > n || total < 32 || total > max_block || (total & 3))
			break;
		ifid = get32(buf + pos + 8, swapped);
		caplen = get32(buf + pos + 20, swapped);
		opt = pos + 28 + (((uint64_t)caplen + 3) & ~3ull);
		/* what libpcap refuses (a trailer that disagrees, a captured length over the
		 * snapshot length) is left to the careful path, which says what is wrong */
		if (opt > end - 4 || ifid >= nifaces || caplen > snaplen ||
		    get32(buf + end - 4, swapped) != total)
			break;
		opt_len = opt + 4 <= end - 4 ? (uint32_t)(end - 4 - opt) : 0;
		if (!cur || cur->ifid != ifid || cur->opt_len != opt_len ||
		    (opt_len && memcmp(buf + cur->opt_at, buf + opt, opt_len) != 0)) {
			if (nruns >= max_runs)
				break;
			cur = &runs[nruns++];
			cur->ifid = ifid;
			cur->packets = 0;
			cur->opt_at = opt;
			cur->opt_len = opt_len;
			cur->_pad = 0;
		}
		cur->packets++;
		packets++;
		last = pos;
		pos = end;
	}
	r->pos = pos;
	r->last = last;
	r->packets = packets;
	r->runs = nruns;
}
