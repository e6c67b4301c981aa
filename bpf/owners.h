/* The socket → owner map, shared by the capture and attribution objects
 * (user space creates it once and hands the same fd to both). */
#ifndef PTCAP_OWNERS_H
#define PTCAP_OWNERS_H

#include "ptcap.h"

/* Socket-local storage: freed with the socket; BPF_F_CLONE copies a listener's
 * owner to the connections it accepts. */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC | BPF_F_CLONE);
	__type(key, int);
	__type(value, struct ptcap_owner);
} ptcap_owners SEC(".maps");

#endif
