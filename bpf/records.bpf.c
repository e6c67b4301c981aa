// SPDX-License-Identifier: GPL-2.0
/* Never loaded: one variable of every struct and enum of ptcap.h, so that this object's BTF
 * holds all of them (clang emits only the types an object uses). ptcap/kernel/records.py
 * checks its layouts against this BTF, and the other objects' BTF, before loading. */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include "ptcap.h"

struct ptcap_owner ptcap_keep_owner;
struct ptcap_packet ptcap_keep_packet;
struct ptcap_exec ptcap_keep_exec;
struct ptcap_fork ptcap_keep_fork;
struct ptcap_scratch ptcap_keep_scratch;
struct ptcap_hook_config ptcap_keep_hook_config;
struct ptcap_iface_key ptcap_keep_iface_key;
struct ptcap_iface ptcap_keep_iface;
struct ptcap_config ptcap_keep_config;
struct ptcap_ring_config ptcap_keep_ring_config;
struct ptcap_cgroup_name ptcap_keep_cgroup_name;
struct ptcap_cgroup_dir ptcap_keep_cgroup_dir;
struct ptcap_cgroup_want ptcap_keep_cgroup_want;
enum ptcap_event_kind ptcap_keep_event_kind;
enum ptcap_dir ptcap_keep_dir;
enum ptcap_hook ptcap_keep_hook;
enum ptcap_hook_slot ptcap_keep_hook_slot;
enum ptcap_who_bits ptcap_keep_who_bits;
enum ptcap_counter ptcap_keep_counter;

char LICENSE[] SEC("license") = "GPL";
