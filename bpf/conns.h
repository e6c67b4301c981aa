/* The last-owner map: who owned each TCP connection when its socket began to close, kept
 * after the socket is gone (time-wait, closed), so that the connection's teardown (its FIN,
 * RST, and the last ACKs) still names a process. Filled by the attribution object at each
 * closing state change, read by the capture object; user space shares the map. */
#ifndef PTCAP_CONNS_H
#define PTCAP_CONNS_H

#include "ptcap.h"

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ptcap_conn_key);
	__type(value, struct ptcap_owner);
} ptcap_conns SEC(".maps");

/* Flows of local processes by their addresses, without the namespace (the addresses of a
 * host's namespaces differ where packets are forwarded between them): for forwarded and NATed
 * packets, whose socket is in another namespace or whose addresses were rewritten. Filled
 * when a TCP connection is established (sockowner), when a local process's packet crosses
 * into this namespace (veth) and, after NAT, under the rewritten addresses (capture). */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, struct ptcap_flow_key);
	__type(value, struct ptcap_owner);
} ptcap_flows SEC(".maps");

#endif
