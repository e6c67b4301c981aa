// SPDX-License-Identifier: GPL-2.0
/* TLS session keys of running programs, read with uprobes (x86-64 and arm64):
 *  - Go: crypto/tls.(*Config).writeKeyLog(label string, clientRandom, secret []byte) is
 *    called for every secret whether or not the program set a KeyLogWriter; Go's register
 *    ABI passes its nine words (receiver; label's pointer, length; clientRandom's and
 *    secret's pointer, length, capacity) in integer registers 1-9 (GO_ARG below).
 *  - OpenSSL 3: on entry to SSL_read/SSL_write (and their _ex forms) the connection's
 *    client random and secrets are copied from the SSL object at offsets that user space
 *    measured on the same libssl file (attach cookie = index of that layout); a
 *    connection is reported again only when its secrets change.
 * Each key goes to user space as one struct keylog_event in the keylog_events ring. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>

/* The n-th integer argument register of Go's register ABI (ABIInternal) at function entry. */
#if defined(__TARGET_ARCH_x86)
/* amd64: AX, BX, CX, DI, SI, R8, R9, R10, R11 */
#define GO_ARG2(r) ((r)->bx)
#define GO_ARG3(r) ((r)->cx)
#define GO_ARG4(r) ((r)->di)
#define GO_ARG5(r) ((r)->si)
#define GO_ARG7(r) ((r)->r9)
#define GO_ARG8(r) ((r)->r10)
#elif defined(__TARGET_ARCH_arm64)
/* arm64: R0-R15 (struct user_pt_regs, as libbpf's PT_REGS_PARM reads them) */
#define GO_ARG_ARM64(r, n) (((const struct user_pt_regs *)(r))->regs[(n) - 1])
#define GO_ARG2(r) GO_ARG_ARM64(r, 2)
#define GO_ARG3(r) GO_ARG_ARM64(r, 3)
#define GO_ARG4(r) GO_ARG_ARM64(r, 4)
#define GO_ARG5(r) GO_ARG_ARM64(r, 5)
#define GO_ARG7(r) GO_ARG_ARM64(r, 7)
#define GO_ARG8(r) GO_ARG_ARM64(r, 8)
#else
#error "keylog.bpf.c: Go's argument registers on this architecture are not written down"
#endif

#define KEYLOG_LABEL_MAX 32
#define KEYLOG_SECRET_MAX 64
#define KEYLOG_TLS13_SECRETS 5

enum keylog_kind {
	KEYLOG_GO = 1,
	KEYLOG_OPENSSL = 2,
};

struct keylog_event {
	__u32 kind;		/* enum keylog_kind */
	__u32 tgid;
	__u32 label_len;	/* Go: the label's length */
	__u32 secret_len;	/* Go: the secret's length */
	__u32 cipher_id;	/* OpenSSL: the session's SSL_CIPHER_get_id() */
	__u32 pad;
	char label[KEYLOG_LABEL_MAX];
	__u8 random[32];		/* client random */
	__u8 secret[KEYLOG_SECRET_MAX];	/* Go: the secret; OpenSSL: the session master key */
	/* OpenSSL, TLS 1.3: client and server application traffic secrets, exporter secret,
	 * handshake secret, transcript hash after ServerHello (user space derives the
	 * handshake traffic secrets from the last two) */
	__u8 tls13[KEYLOG_TLS13_SECRETS][KEYLOG_SECRET_MAX];
};

/* Where OpenSSL keeps a connection's secrets, as measured by user space (byte offsets). */
struct ossl_layout {
	__u32 random;		/* SSL: client random */
	__u32 session;		/* SSL: SSL_SESSION pointer */
	__u32 master;		/* SSL_SESSION: master key */
	__u32 cipher;		/* SSL_SESSION: SSL_CIPHER pointer */
	__u32 cipher_id;	/* SSL_CIPHER: id */
	__u32 tls13[KEYLOG_TLS13_SECRETS];	/* SSL: see keylog_event.tls13 */
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 18);
} keylog_events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 64);
	__type(key, __u32);
	__type(value, struct ossl_layout);
} ossl_layouts SEC(".maps");

struct conn_key {
	__u64 ssl;
	__u32 tgid;
	__u32 pad;
};

/* Per connection: a fingerprint of the secrets last reported. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, struct conn_key);
	__type(value, __u64);
} ossl_reported SEC(".maps");

/* Counted when the ring had no room (user space reports it). */
__u64 keylog_lost = 0;

SEC("uprobe")
int ptcap_keylog_go(struct pt_regs *ctx)
{
	struct keylog_event *e;
	__u64 label_len = GO_ARG3(ctx), random_len = GO_ARG5(ctx), secret_len = GO_ARG8(ctx);

	if (label_len > KEYLOG_LABEL_MAX || random_len != 32 || secret_len > KEYLOG_SECRET_MAX)
		return 0;
	e = bpf_ringbuf_reserve(&keylog_events, sizeof(*e), 0);
	if (!e) {
		__sync_fetch_and_add(&keylog_lost, 1);
		return 0;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->kind = KEYLOG_GO;
	e->tgid = bpf_get_current_pid_tgid() >> 32;
	e->label_len = label_len;
	e->secret_len = secret_len;
	bpf_probe_read_user(e->label, label_len, (void *)GO_ARG2(ctx));
	bpf_probe_read_user(e->random, 32, (void *)GO_ARG4(ctx));
	bpf_probe_read_user(e->secret, secret_len, (void *)GO_ARG7(ctx));
	bpf_ringbuf_submit(e, 0);
	return 0;
}

static __always_inline __u64 read8(__u64 addr)
{
	__u64 v = 0;

	bpf_probe_read_user(&v, 8, (void *)addr);
	return v;
}

SEC("uprobe")
int ptcap_keylog_ossl(struct pt_regs *ctx)
{
	__u32 index = bpf_get_attach_cookie(ctx);
	struct ossl_layout *l = bpf_map_lookup_elem(&ossl_layouts, &index);
	struct conn_key key = {};
	struct keylog_event *e;
	__u64 ssl = PT_REGS_PARM1(ctx), session, cipher, master, app, print, *seen;
	int i;

	if (!l || !ssl)
		return 0;
	/* the common case, a connection reported already, costs five 8-byte reads */
	session = read8(ssl + l->session);
	master = session ? read8(session + l->master) : 0;
	app = read8(ssl + l->tls13[0]);
	if (!master && !app)		/* handshake not done yet */
		return 0;
	print = read8(ssl + l->random) ^ master ^ app ^ read8(ssl + l->tls13[2]);
	key.ssl = ssl;
	key.tgid = bpf_get_current_pid_tgid() >> 32;
	seen = bpf_map_lookup_elem(&ossl_reported, &key);
	if (seen && *seen == print)
		return 0;
	e = bpf_ringbuf_reserve(&keylog_events, sizeof(*e), 0);
	if (!e) {
		__sync_fetch_and_add(&keylog_lost, 1);
		return 0;
	}
	__builtin_memset(e, 0, sizeof(*e));
	e->kind = KEYLOG_OPENSSL;
	e->tgid = key.tgid;
	bpf_probe_read_user(e->random, 32, (void *)(ssl + l->random));
	bpf_probe_read_user(e->secret, 48, (void *)(session + l->master));
	cipher = read8(session + l->cipher);
	if (cipher)
		bpf_probe_read_user(&e->cipher_id, 4, (void *)(cipher + l->cipher_id));
	for (i = 0; i < KEYLOG_TLS13_SECRETS; i++)
		bpf_probe_read_user(e->tls13[i], KEYLOG_SECRET_MAX, (void *)(ssl + l->tls13[i]));
	if (!e->cipher_id) {
		bpf_ringbuf_discard(e, 0);
		return 0;
	}
	bpf_map_update_elem(&ossl_reported, &key, &print, BPF_ANY);
	bpf_ringbuf_submit(e, 0);
	return 0;
}

char LICENSE[] SEC("license") = "GPL";
