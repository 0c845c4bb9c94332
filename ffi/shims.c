/*
 * Hand-written C side of l4-sys, compiled by build.rs (with the `fiasco`
 * feature) together with the wrappers bindgen writes for the API's
 * `static inline` functions, using the L4Re tree's include paths and flags.
 *
 * What belongs here: a real function (named `l4sys_*`, declared in
 * wrapper.h so bindgen binds it) for anything of the C API that neither
 * bindgen's `wrap_static_fns` nor a constant in ffi/lib.rs can reach, e.g. a
 * function-like macro.  At the l4re-core snapshot this crate was written
 * against, every `static inline` function of the headers in wrapper.h has a
 * bindgen wrapper (l4_utcb(), l4re_env(), l4_ipc_call(), ...) and the
 * value macros (L4_IPC_NEVER, L4_INVALID_CAP, ...) are constants in
 * ffi/lib.rs, so no function is needed yet.
 *
 * What is here: compile-time checks that the tree really has the ABI the
 * project's Rust code is written for (see shared/REFERENCE.md, section 1).
 * If L4Re ever changes one of these, the build stops here, not at run time.
 */
#include <stddef.h>
#include "wrapper.h"

/* Words: l4_umword_t is a pointer-sized machine word; message tags,
 * flexpages and capability indices are one word each. */
_Static_assert(sizeof(l4_umword_t) == sizeof(void *), "l4_umword_t is not pointer-sized");
_Static_assert(sizeof(l4_msgtag_t) == sizeof(l4_umword_t), "l4_msgtag_t is not one word");
_Static_assert(sizeof(l4_fpage_t) == sizeof(l4_umword_t), "l4_fpage_t is not one word");
_Static_assert(sizeof(l4_cap_idx_t) == sizeof(l4_umword_t), "l4_cap_idx_t is not one word");
_Static_assert(sizeof(l4_timeout_t) == 4, "l4_timeout_t is not 32 bits");

/* Capability indices are slot numbers shifted by 12; the kernel's fixed slots. */
_Static_assert(L4_CAP_SHIFT == 12, "capability shift changed");
_Static_assert(L4_BASE_TASK_CAP == 1UL << 12, "L4_BASE_TASK_CAP moved");
_Static_assert(L4_BASE_FACTORY_CAP == 2UL << 12, "L4_BASE_FACTORY_CAP moved");
_Static_assert(L4_BASE_THREAD_CAP == 3UL << 12, "L4_BASE_THREAD_CAP moved");
_Static_assert(L4_BASE_LOG_CAP == 5UL << 12, "L4_BASE_LOG_CAP moved");
_Static_assert(L4_BASE_SCHEDULER_CAP == 7UL << 12, "L4_BASE_SCHEDULER_CAP moved");

/* Flexpage word: rights in bits 0-3, type in bits 4-5. */
_Static_assert(L4_FPAGE_X == 1 && L4_FPAGE_W == 2 && L4_FPAGE_RO == 4, "flexpage rights changed");
_Static_assert(L4_FPAGE_MEMORY == 1 && L4_FPAGE_IO == 2 && L4_FPAGE_OBJ == 3, "flexpage types changed");

/* Kernel protocols and message items used by pagers. */
_Static_assert(L4_PROTO_PAGE_FAULT == -2, "page-fault protocol changed");
_Static_assert(L4_PROTO_EXCEPTION == -5, "exception protocol changed");
_Static_assert(L4_PROTO_META == -21, "meta protocol changed");
_Static_assert(L4_ITEM_MAP == 8 && L4_ITEM_CONT == 1, "message item bits changed");

/*
 * The UTCB borrow flag of l4re-rs (`Utcb::with`), one per thread. The UTCB's
 * user thread-control words all belong to L4Re's pthread library, so the
 * flag lives in C thread-local storage, which L4Re's libc provides.
 * Freestanding single-threaded programs (feature `single-threaded`, e.g. the
 * internal pager) have no TLS: there it is a plain static.
 */
#ifdef L4RE_RS_SINGLE_THREADED
/*
 * Without TLS, one flag per UTCB slot of the task: a single-threaded
 * program still has other threads run its code, e.g. the in-task pager's
 * page-fault trampoline handler, run by the program's threads. Slots are
 * L4_UTCB_OFFSET apart in one UTCB area, so up to L4RE_RS_UTCB_FLAGS
 * threads never share a flag.
 */
#define L4RE_RS_UTCB_FLAGS 256
static unsigned char l4re_rs_utcb_borrowed[L4RE_RS_UTCB_FLAGS];

unsigned char *l4re_rs_utcb_borrow_flag(void);
unsigned char *l4re_rs_utcb_borrow_flag(void)
{
  unsigned long slot = (unsigned long)l4_utcb() / L4_UTCB_OFFSET;
  return &l4re_rs_utcb_borrowed[slot % L4RE_RS_UTCB_FLAGS];
}
#else
static __thread unsigned char l4re_rs_utcb_borrowed;

unsigned char *l4re_rs_utcb_borrow_flag(void);
unsigned char *l4re_rs_utcb_borrow_flag(void)
{
  return &l4re_rs_utcb_borrowed;
}
#endif

/* l4_pf_trampoline_t as l4re::platform::fiasco::pf_trampoline mirrors it. */
_Static_assert(offsetof(l4_pf_trampoline_t, handler_ip) == 0, "pf trampoline layout changed");
_Static_assert(offsetof(l4_pf_trampoline_t, user_data) == 8, "pf trampoline layout changed");
_Static_assert(offsetof(l4_pf_trampoline_t, saved_mr0) == 24, "pf trampoline layout changed");
_Static_assert(offsetof(l4_pf_trampoline_t, flags) == 32, "pf trampoline layout changed");
_Static_assert(offsetof(l4_pf_trampoline_t, state) == 40, "pf trampoline layout changed");
_Static_assert(offsetof(l4_pf_trampoline_regs_t, pfa) == 88, "pf trampoline layout changed");
_Static_assert(offsetof(l4_pf_trampoline_regs_t, ip) == 144, "pf trampoline layout changed");
_Static_assert(sizeof(l4_pf_trampoline_t) == 40 + 23 * 8, "pf trampoline layout changed");
/* The words saved around a trampoline handler: MRs, BDR, BRs, error. */
_Static_assert(L4_UTCB_THREAD_REGS_OFFSET + sizeof(l4_umword_t) <= L4_UTCB_OFFSET, "UTCB layout changed");

/* Layout of the L4Re initial stack that loader::l4re_start writes. */
#include "l4re_start_checks.h"

/* l4re::platform::fiasco::current_utcb computes the register blocks as
 * these offsets from the UTCB, as l4_utcb_mr_u/_br_u/_tcr_u do. */
_Static_assert(L4_UTCB_MSG_REGS_OFFSET == 0, "UTCB layout changed");
