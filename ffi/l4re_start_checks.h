/*
 * Compile-time checks of the L4Re structure layouts that
 * loader/src/l4re_start.rs writes byte by byte (amd64): l4re_env_t,
 * l4re_env_cap_entry_t, l4re_aux_t, the AT_L4_* auxiliary vector types and
 * the constants the initial stack relies on. Include from a C file compiled
 * with the L4Re tree's flags (ffi/shims.c).
 */
#pragma once

#include <stddef.h>
#include <l4/sys/consts.h>
#include <l4/sys/types.h>
#include <l4/sys/utcb.h>
#include <l4/sys/__l4_fpage.h>
#include <l4/re/env.h>
#include <l4/re/l4aux.h>
#include <l4/util/elf.h>

#if defined(__x86_64__)

/* l4re_env_t (l4re/include/env.h) -- loader::l4re_start::env_off */
_Static_assert(offsetof(l4re_env_t, parent) == 0, "l4re_env_t.parent");
_Static_assert(offsetof(l4re_env_t, rm) == 8, "l4re_env_t.rm");
_Static_assert(offsetof(l4re_env_t, mem_alloc) == 16, "l4re_env_t.mem_alloc");
_Static_assert(offsetof(l4re_env_t, log) == 24, "l4re_env_t.log");
_Static_assert(offsetof(l4re_env_t, main_thread) == 32, "l4re_env_t.main_thread");
_Static_assert(offsetof(l4re_env_t, factory) == 40, "l4re_env_t.factory");
_Static_assert(offsetof(l4re_env_t, scheduler) == 48, "l4re_env_t.scheduler");
_Static_assert(offsetof(l4re_env_t, itas) == 56, "l4re_env_t.itas");
_Static_assert(offsetof(l4re_env_t, dbg_events) == 64, "l4re_env_t.dbg_events");
_Static_assert(offsetof(l4re_env_t, first_free_cap) == 72, "l4re_env_t.first_free_cap");
_Static_assert(offsetof(l4re_env_t, first_free_reply_cap) == 80, "l4re_env_t.first_free_reply_cap");
_Static_assert(offsetof(l4re_env_t, utcb_area) == 88, "l4re_env_t.utcb_area");
_Static_assert(offsetof(l4re_env_t, first_free_utcb) == 96, "l4re_env_t.first_free_utcb");
_Static_assert(offsetof(l4re_env_t, caps) == 104, "l4re_env_t.caps");
_Static_assert(sizeof(l4re_env_t) == 112, "sizeof(l4re_env_t)");
_Static_assert(sizeof(l4_fpage_t) == 8, "sizeof(l4_fpage_t)");
_Static_assert(sizeof(l4_cap_idx_t) == 8, "sizeof(l4_cap_idx_t)");

/* l4re_env_cap_entry_t -- loader::l4re_start::cap_off */
_Static_assert(offsetof(l4re_env_cap_entry_t, cap) == 0, "cap_entry.cap");
_Static_assert(offsetof(l4re_env_cap_entry_t, flags) == 8, "cap_entry.flags");
_Static_assert(offsetof(l4re_env_cap_entry_t, name) == 16, "cap_entry.name");
_Static_assert(sizeof(((l4re_env_cap_entry_t *)0)->name) == 16, "cap_entry.name size");
_Static_assert(sizeof(l4re_env_cap_entry_t) == 32, "sizeof(l4re_env_cap_entry_t)");

/* l4re_aux_t (l4re/include/l4aux.h) -- loader::l4re_start::aux_off */
_Static_assert(offsetof(l4re_aux_t, binary) == 0, "l4re_aux_t.binary");
_Static_assert(offsetof(l4re_aux_t, kip_ds) == 8, "l4re_aux_t.kip_ds");
_Static_assert(offsetof(l4re_aux_t, dbg_lvl) == 16, "l4re_aux_t.dbg_lvl");
_Static_assert(offsetof(l4re_aux_t, ldr_flags) == 24, "l4re_aux_t.ldr_flags");
_Static_assert(offsetof(l4re_aux_t, ldr_base) == 32, "l4re_aux_t.ldr_base");
_Static_assert(sizeof(l4re_aux_t) == 40, "sizeof(l4re_aux_t)");

/* Auxiliary vector types (l4util/include/elf.h) -- at_l4 */
_Static_assert(AT_L4_AUX == 0xf0, "AT_L4_AUX");
_Static_assert(AT_L4_ENV == 0xf1, "AT_L4_ENV");
_Static_assert(AT_L4_KIP == 0xf2, "AT_L4_KIP");

/* Constants -- CAP_SHIFT, INVALID_CAP, UTCB_OFFSET, PAGE_SIZE, fpage */
_Static_assert(L4_CAP_SHIFT == 12, "L4_CAP_SHIFT");
_Static_assert(L4_INVALID_CAP == 0xfffffffffffff800UL, "L4_INVALID_CAP");
_Static_assert(L4_UTCB_OFFSET == 1024, "L4_UTCB_OFFSET");
_Static_assert(L4_PAGESIZE == 4096, "L4_PAGESIZE");
_Static_assert(L4_FPAGE_MEMORY == 1 && L4_FPAGE_TYPE_SHIFT == 4
               && L4_FPAGE_SIZE_SHIFT == 6 && L4_FPAGE_ADDR_SHIFT == 12,
               "l4_fpage encoding");
_Static_assert(L4_BASE_TASK_CAP == (1UL << L4_CAP_SHIFT)
               && L4_BASE_FACTORY_CAP == (2UL << L4_CAP_SHIFT)
               && L4_BASE_THREAD_CAP == (3UL << L4_CAP_SHIFT)
               && L4_BASE_LOG_CAP == (5UL << L4_CAP_SHIFT)
               && L4_BASE_SCHEDULER_CAP == (7UL << L4_CAP_SHIFT),
               "base caps (slots::TASK, FACTORY, THREAD, LOG, SCHEDULER)");

#endif /* __x86_64__ */
