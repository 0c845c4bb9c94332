/*
 * Input header of l4-sys's bindgen run (see build.rs).
 *
 * It pulls in the parts of the L4Re C API the Rust crates use.  The same
 * file is included by the C file bindgen writes for `wrap_static_fns` (one
 * real function per `static inline` API function) and by ffi/shims.c, so
 * both C files are compiled against exactly what bindgen saw.
 *
 * Include paths and defines (including the tree's `-include
 * l4/bid_config.h`) come from the L4Re build tree's l4defs.sh.inc; nothing
 * here names a path on this machine.
 */
#pragma once

/* Kernel (Fiasco) interface: l4re-core/l4sys */
#include <l4/sys/types.h>
#include <l4/sys/consts.h>
#include <l4/sys/err.h>
#include <l4/sys/utcb.h>
#include <l4/sys/ipc.h>
#include <l4/sys/factory.h>
#include <l4/sys/task.h>
#include <l4/sys/thread.h>
#include <l4/sys/ipc_gate.h>
#include <l4/sys/rcv_endpoint.h>
#include <l4/sys/scheduler.h>
#include <l4/sys/kip.h>
#include <l4/sys/vcon.h>
#include <l4/sys/debugger.h>
#include <l4/sys/pf_trampoline.h>

/* L4Re runtime environment and its C interface: l4re-core/l4re, l4re_c */
#include <l4/re/env.h>
#include <l4/re/l4aux.h>
#include <l4/re/c/dataspace.h>
#include <l4/re/c/rm.h>
#include <l4/re/c/namespace.h>
#include <l4/re/c/mem_alloc.h>
#include <l4/re/c/log.h>
#include <l4/re/c/util/cap_alloc.h>

/*
 * Values the headers define as macros that bindgen cannot turn into Rust
 * constants of the right type (all-ones masks come out as `i32`, compound
 * literals not at all).  A `static const` object with a constant
 * initializer is evaluated by clang itself, so bindgen emits each one as a
 * Rust `const` with the C type:
 *
 *   L4SYS_CONST(T, M)      -> l4sys_const_M     = M
 *   L4SYS_CONST_NOT(T, M)  -> l4sys_const_not_M = ~M  (for values with the
 *                             top bit set, which bindgen cannot evaluate)
 *   L4SYS_TIMEOUT(M)       -> l4sys_timeout_M   = M.raw  (l4_timeout_t)
 *   L4SYS_TIMEOUT_S(M)     -> l4sys_timeout_s_M = M.t    (l4_timeout_s)
 *
 * ffi/lib.rs defines the public constant under the macro's own name from
 * these, and build.rs tells bindgen to skip the macros listed here (it reads
 * this file for that).  build.rs defines L4SYS_BINDGEN for the bindgen run
 * only: the C compiler never sees these objects.
 */
#ifdef L4SYS_BINDGEN
#define L4SYS_CONST(type, name) \
  static const type l4sys_const_##name = (name)
#define L4SYS_CONST_NOT(type, name) \
  static const type l4sys_const_not_##name = (type)~(name)
#define L4SYS_TIMEOUT(name) \
  static const l4_uint32_t l4sys_timeout_##name = (name).raw
#define L4SYS_TIMEOUT_S(name) \
  static const l4_uint16_t l4sys_timeout_s_##name = (name).t

L4SYS_CONST(l4_umword_t, L4_CAP_OFFSET);
L4SYS_CONST(l4_umword_t, L4_CAP_SIZE);
L4SYS_CONST(l4_umword_t, L4_INVALID_CAP_BIT);
L4SYS_CONST(l4_umword_t, L4_REPLY_CAP_BIT);
L4SYS_CONST_NOT(l4_umword_t, L4_CAP_MASK);
L4SYS_CONST_NOT(l4_cap_idx_t, L4_INVALID_CAP);
L4SYS_CONST_NOT(l4_cap_idx_t, L4_INVALID_REPLY_CAP);
L4SYS_CONST(l4_umword_t, L4_PAGESIZE);
L4SYS_CONST_NOT(l4_umword_t, L4_PAGEMASK);
L4SYS_CONST(l4_umword_t, L4_SUPERPAGESIZE);
L4SYS_CONST_NOT(l4_umword_t, L4_SUPERPAGEMASK);
L4SYS_CONST(l4_umword_t, L4_UTCB_BUF_REGS_OFFSET);
L4SYS_CONST(l4_umword_t, L4_UTCB_THREAD_REGS_OFFSET);
L4SYS_CONST(l4_umword_t, L4_UTCB_EXCEPTION_REGS_SIZE);
L4SYS_CONST(l4_umword_t, L4_UTCB_INHERIT_FPU);
L4SYS_CONST_NOT(l4_uint64_t, L4_TIMEOUT_US_NEVER);
L4SYS_CONST(l4_uint64_t, L4_TIMEOUT_US_MAX);

L4SYS_TIMEOUT(L4_IPC_NEVER);
L4SYS_TIMEOUT(L4_IPC_RECV_TIMEOUT_0);
L4SYS_TIMEOUT(L4_IPC_SEND_TIMEOUT_0);
L4SYS_TIMEOUT(L4_IPC_BOTH_TIMEOUT_0);
L4SYS_TIMEOUT_S(L4_IPC_TIMEOUT_0);
L4SYS_TIMEOUT_S(L4_IPC_TIMEOUT_NEVER);
#endif /* L4SYS_BINDGEN */

/* Functions defined in ffi/shims.c (none needed at this snapshot: see there). */
