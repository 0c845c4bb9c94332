//! The initial stack of an ordinary static L4Re program (uclibc-ng,
//! libl4re, L4Re's `crt1.o`), as L4Re's own loader lays it out, so that our
//! loader can start such a program without `l4re_itas`.
//!
//! Sources (l4re-core `b6f7495b`, the snapshot under `/opt/l4re/src`):
//!
//! * `libloader/include/loader`, `Loader::launch`: the auxiliary vector and
//!   its order, pushed downwards, so in memory from `auxv` up:
//!   (`AT_PHDR`, `AT_PHNUM`, `AT_PHENT` only if the program has a `PT_PHDR`;
//!   `AT_ENTRY`, `AT_BASE` only for dynamic programs), `AT_EGID` 0, `AT_GID` 0,
//!   `AT_EUID` 0, `AT_UID` 0, `AT_PAGESZ` 4096, `AT_L4_AUX` (pointer to an
//!   `l4re_aux_t`, if any), `AT_L4_KIP` (KIP address), `AT_L4_ENV` (pointer
//!   to the `l4re_env_t`), `AT_NULL`; then `push_envp`/`push_argv` put envp,
//!   argv and argc below; `adjust_sp` (`libloader/include/ARCH-amd64/
//!   adjust_stack`) rounds `sp` down to 16 and moves the block there.
//!   (The memory order of the first entries is the reverse of their push
//!   order in `launch`.)
//! * `libloader/include/remote_app_model`, `Remote_app_model::add_env`: the
//!   environment on the stack — the terminator entry (`flags == ~0UL`)
//!   pushed first, the initial caps below it, the `l4re_env_t` below them,
//!   so memory reads env, caps…, terminator; `first_free_cap` is a slot
//!   *index* (`first_free >> L4_CAP_SHIFT`), the other caps are selectors
//!   (`slot << 12`); `first_free_reply_cap` 0; `utcb_area` is
//!   `l4_fpage(utcbs_start, log2size, 0)`; `first_free_utcb` is
//!   `utcbs_start + L4_UTCB_OFFSET` (the first UTCB is the main thread's);
//!   `itas` invalid. Its `generate_l4aux` pushes `ldr_base`, `ldr_flags`,
//!   `l4re_dbg`, the KIP cap and the binary name pointer: an `l4re_aux_t`.
//!   `Remote_app_std_caps` gives the usual slots ([`slots`]).
//! * `l4re/include/env.h`: `l4re_env_t` and `l4re_env_cap_entry_t`
//!   (offsets in [`env_off`], [`cap_off`]); `l4re/include/l4aux.h`:
//!   `l4re_aux_t` ([`aux_off`]); `l4util/include/elf.h` (and uclibc's
//!   `include/elf.h`): `AT_L4_AUX` 0xf0, `AT_L4_ENV` 0xf1, `AT_L4_KIP` 0xf2.
//! * Program side: uclibc's `libc/sysdeps/linux/x86_64/crt1.S` (`_start`:
//!   pops argc, argv = sp, calls `__uClibc_main`);
//!   `libc/misc/internals/__uClibc_main.c` (`__environ = &argv[argc + 1]`,
//!   auxv after envp's NULL, `_dl_aux_init`); `libc/misc/elf/dl-support.c`
//!   (`_dl_aux_init`: `AT_PHDR`, `AT_PHNUM`, `AT_PAGESZ` and
//!   `l4re_global_env = AT_L4_ENV`, `l4_global_kip = AT_L4_KIP`). A static
//!   program does not read `AT_L4_AUX` (only `l4re_itas`, `globals.cc`, and
//!   ned do). `AT_PHDR` matters: `__libc_setup_tls` finds `PT_TLS` through it.
//!   The program writes into the environment (`first_free_cap`,
//!   `first_free_reply_cap`, `first_free_utcb` in `libpthread/src/pthread.c`,
//!   `l4.cc`, `l4re/util/libs/cap_alloc.cc`): it must stay writable, as it is
//!   on the stack.
//!
//! Strings (argv, envp, the binary name) are placed on the stack too (L4Re's
//! local app model points into `l4re_itas`'s memory instead); the layout,
//! top down, is [`stack::build_with`]'s: end marker, strings, the
//! `l4re_aux_t` blob (with its binary name after it), the env blob (env,
//! caps, terminator), then auxv, envp, argv, argc at a 16-aligned `sp`.

use alloc::vec::Vec;

use crate::stack::{self, Blob, Extras, Stack, StackSpec, at};

/// L4Re's auxiliary vector types (`l4util/include/elf.h`).
pub mod at_l4 {
    /// Pointer to the `l4re_aux_t`.
    pub const AUX: u64 = 0xf0;
    /// Pointer to the `l4re_env_t` (`l4re_global_env`).
    pub const ENV: u64 = 0xf1;
    /// Address of the KIP (`l4_global_kip`).
    pub const KIP: u64 = 0xf2;
}

/// `L4_CAP_SHIFT` (`l4sys/include/consts.h`): selector = slot << 12.
pub const CAP_SHIFT: u32 = 12;
/// `L4_INVALID_CAP` (`~0UL << (L4_CAP_SHIFT - 1)`).
pub const INVALID_CAP: u64 = !0u64 << (CAP_SHIFT - 1);
/// `L4_UTCB_OFFSET` on amd64 (`l4sys/include/ARCH-amd64/arch/utcb.h`).
pub const UTCB_OFFSET: u64 = 1024;
/// `L4_PAGESIZE`.
pub use l4re::fpage::PAGE_SIZE;
/// `L4_KIP_ADDR` for amd64 (`mk/arch/Makeconf.amd64`; the default of
/// `l4_global_kip` and the `L4RE_ELF_AUX_T_KIP_ADDR` entry `crti.o` puts
/// into every program's `PT_L4_AUX`).
pub const DEFAULT_KIP_ADDR: u64 = 0x6fff_f000;

/// The slots `Remote_app_std_caps` (`libloader/include/remote_app_model`)
/// gives the initial capabilities.
pub mod slots {
    /// The task itself (`L4_BASE_TASK_CAP`).
    pub const TASK: u64 = 1;
    /// The factory.
    pub const FACTORY: u64 = 2;
    /// The first thread (`L4_BASE_THREAD_CAP`).
    pub const THREAD: u64 = 3;
    /// The log (vcon).
    pub const LOG: u64 = 5;
    /// The scheduler.
    pub const SCHEDULER: u64 = 7;
    /// The region map (`External_rm_cap`).
    pub const RM: u64 = 0x10;
    /// The memory allocator.
    pub const MEM_ALLOC: u64 = 0x11;
    /// The names (unused by the environment).
    pub const NAMES: u64 = 0x12;
    /// The parent.
    pub const PARENT: u64 = 0x13;
    /// The KIP dataspace.
    pub const KIP: u64 = 0x14;
    /// The debug events service.
    pub const DBG_EVENTS: u64 = 0x15;
    /// The first slot of the named initial caps.
    pub const FIRST_FREE: u64 = 0x16;
}

/// Byte offsets of `l4re_env_t` (`l4re/include/env.h`) on amd64.
pub mod env_off {
    /// `l4_cap_idx_t parent`.
    pub const PARENT: usize = 0;
    /// `l4_cap_idx_t rm`.
    pub const RM: usize = 8;
    /// `l4_cap_idx_t mem_alloc`.
    pub const MEM_ALLOC: usize = 16;
    /// `l4_cap_idx_t log`.
    pub const LOG: usize = 24;
    /// `l4_cap_idx_t main_thread`.
    pub const MAIN_THREAD: usize = 32;
    /// `l4_cap_idx_t factory`.
    pub const FACTORY: usize = 40;
    /// `l4_cap_idx_t scheduler`.
    pub const SCHEDULER: usize = 48;
    /// `l4_cap_idx_t itas`.
    pub const ITAS: usize = 56;
    /// `l4_cap_idx_t dbg_events`.
    pub const DBG_EVENTS: usize = 64;
    /// `l4_cap_idx_t first_free_cap` (a slot index, not a selector).
    pub const FIRST_FREE_CAP: usize = 72;
    /// `l4_umword_t first_free_reply_cap`.
    pub const FIRST_FREE_REPLY_CAP: usize = 80;
    /// `l4_fpage_t utcb_area`.
    pub const UTCB_AREA: usize = 88;
    /// `l4_addr_t first_free_utcb`.
    pub const FIRST_FREE_UTCB: usize = 96;
    /// `l4re_env_cap_entry_t *caps`.
    pub const CAPS: usize = 104;
    /// `sizeof(l4re_env_t)`.
    pub const SIZE: usize = 112;
}

/// Byte offsets of `l4re_env_cap_entry_t` (`l4re/include/env.h`) on amd64.
pub mod cap_off {
    /// `l4_cap_idx_t cap` (a selector).
    pub const CAP: usize = 0;
    /// `l4_umword_t flags` (`~0UL` ends the array).
    pub const FLAGS: usize = 8;
    /// `char name[16]`.
    pub const NAME: usize = 16;
    /// `sizeof(name)`.
    pub const NAME_LEN: usize = 16;
    /// `sizeof(l4re_env_cap_entry_t)`.
    pub const SIZE: usize = 32;
}

/// Byte offsets of `l4re_aux_t` (`l4re/include/l4aux.h`) on amd64.
pub mod aux_off {
    /// `char const *binary`.
    pub const BINARY: usize = 0;
    /// `l4_cap_idx_t kip_ds`.
    pub const KIP_DS: usize = 8;
    /// `l4_umword_t dbg_lvl`.
    pub const DBG_LVL: usize = 16;
    /// `l4_umword_t ldr_flags`.
    pub const LDR_FLAGS: usize = 24;
    /// `l4_addr_t ldr_base`.
    pub const LDR_BASE: usize = 32;
    /// `sizeof(l4re_aux_t)`.
    pub const SIZE: usize = 40;
}

/// The terminator's `flags` (`~0UL`).
pub const CAP_END_FLAGS: u64 = !0;

/// A named initial capability (`l4re_env_cap_entry_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CapEntry {
    /// The name, NUL-padded (16 bytes without NUL is allowed, as in C).
    pub name: [u8; 16],
    /// The capability slot (index); the entry holds `slot << 12`.
    pub slot: u64,
    /// Flags (0; never `~0`, which marks the end).
    pub flags: u64,
}

impl CapEntry {
    /// An entry for `name` (1 to 16 bytes, no NUL) at `slot`, flags 0.
    pub fn new(name: &[u8], slot: u64) -> Option<CapEntry> {
        if name.is_empty() || name.len() > 16 || name.contains(&0) {
            return None;
        }
        let mut n = [0u8; 16];
        n[..name.len()].copy_from_slice(name);
        Some(CapEntry {
            name: n,
            slot,
            flags: 0,
        })
    }
}

/// The UTCB area of the task (`l4_fpage(start, log2_size, 0)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UtcbArea {
    /// Its start (page-aligned).
    pub start: u64,
    /// log2 of its size.
    pub log2_size: u8,
}

impl UtcbArea {
    /// The `l4_fpage_t` word: address | order << 6 | `L4_FPAGE_MEMORY` << 4.
    pub fn fpage(&self) -> u64 {
        (self.start & !0xfff) | (u64::from(self.log2_size) << 6) | (1 << 4)
    }
}

/// The initial environment (`l4re_env_t`). Capabilities are slots
/// (`None`: `L4_INVALID_CAP`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L4reEnv {
    /// Parent (exit goes through `Parent::signal`).
    pub parent: Option<u64>,
    /// Region map.
    pub rm: Option<u64>,
    /// Memory allocator.
    pub mem_alloc: Option<u64>,
    /// Log (vcon; stdin/stdout/stderr).
    pub log: Option<u64>,
    /// The program's main thread.
    pub main_thread: Option<u64>,
    /// Factory.
    pub factory: Option<u64>,
    /// Scheduler.
    pub scheduler: Option<u64>,
    /// ITAS services (invalid without `l4re_itas`).
    pub itas: Option<u64>,
    /// Debug events service.
    pub dbg_events: Option<u64>,
    /// First free capability slot (an index).
    pub first_free_cap: u64,
    /// First free reply capability index.
    pub first_free_reply_cap: u64,
    /// The task's UTCB area.
    pub utcb_area: UtcbArea,
    /// First UTCB address available to the program.
    pub first_free_utcb: u64,
    /// The named initial capabilities.
    pub caps: Vec<CapEntry>,
}

impl L4reEnv {
    /// The environment `Remote_app_model::add_env` builds: the standard
    /// [`slots`], `main_thread` in slot 3, no ITAS, `caps` at
    /// [`slots::FIRST_FREE`] on (their `slot`s are rewritten) and
    /// `first_free_utcb` after the main thread's UTCB.
    pub fn remote_app(utcb_area: UtcbArea, log: bool, names: &[&[u8]]) -> Option<L4reEnv> {
        let caps = names
            .iter()
            .enumerate()
            .map(|(i, n)| CapEntry::new(n, slots::FIRST_FREE + i as u64))
            .collect::<Option<Vec<_>>>()?;
        Some(L4reEnv {
            parent: Some(slots::PARENT),
            rm: Some(slots::RM),
            mem_alloc: Some(slots::MEM_ALLOC),
            log: log.then_some(slots::LOG),
            main_thread: Some(slots::THREAD),
            factory: Some(slots::FACTORY),
            scheduler: Some(slots::SCHEDULER),
            itas: None,
            dbg_events: None,
            first_free_cap: slots::FIRST_FREE + caps.len() as u64,
            first_free_reply_cap: 0,
            utcb_area,
            first_free_utcb: utcb_area.start + UTCB_OFFSET,
            caps,
        })
    }

    /// The environment an in-task pager gives the program it starts, as
    /// `l4re_itas` does (`L4Re_app_model::add_env`): a copy of its own with
    /// `rm` its region-map object, `main_thread` the program's thread, no
    /// ITAS services (a pager that serves `L4Re::Itas` sets `itas`
    /// afterwards), and `first_free_utcb` past the program thread's
    /// UTCB at `thread_utcb` (the UTCB the pager took from its own
    /// `first_free_utcb`) and past whatever else the pager took from the
    /// UTCB area before (its own `first_free_utcb` now: e.g. the thread's
    /// page-fault trampoline state, which the program's pthread library
    /// would otherwise hand out as a new thread's UTCB).
    pub fn for_program(&self, rm: u64, main_thread: u64, thread_utcb: u64) -> L4reEnv {
        L4reEnv {
            rm: Some(rm),
            main_thread: Some(main_thread),
            itas: None,
            first_free_utcb: self.first_free_utcb.max(thread_utcb + UTCB_OFFSET),
            ..self.clone()
        }
    }

    /// The image of `l4re_env_t` followed by the caps array and its
    /// terminator, for the address `addr` (the caps follow at
    /// `addr + env_off::SIZE`).
    pub fn image(&self, addr: u64) -> Vec<u8> {
        let mut b = alloc::vec![0u8; env_image_size(self.caps.len())];
        let sel = |c: Option<u64>| c.map_or(INVALID_CAP, |s| s << CAP_SHIFT);
        let put = put_word;
        put(&mut b, env_off::PARENT, sel(self.parent));
        put(&mut b, env_off::RM, sel(self.rm));
        put(&mut b, env_off::MEM_ALLOC, sel(self.mem_alloc));
        put(&mut b, env_off::LOG, sel(self.log));
        put(&mut b, env_off::MAIN_THREAD, sel(self.main_thread));
        put(&mut b, env_off::FACTORY, sel(self.factory));
        put(&mut b, env_off::SCHEDULER, sel(self.scheduler));
        put(&mut b, env_off::ITAS, sel(self.itas));
        put(&mut b, env_off::DBG_EVENTS, sel(self.dbg_events));
        put(&mut b, env_off::FIRST_FREE_CAP, self.first_free_cap);
        put(
            &mut b,
            env_off::FIRST_FREE_REPLY_CAP,
            self.first_free_reply_cap,
        );
        put(&mut b, env_off::UTCB_AREA, self.utcb_area.fpage());
        put(&mut b, env_off::FIRST_FREE_UTCB, self.first_free_utcb);
        put(&mut b, env_off::CAPS, addr + env_off::SIZE as u64);
        for (i, c) in self.caps.iter().enumerate() {
            let e = env_off::SIZE + i * cap_off::SIZE;
            put(&mut b, e + cap_off::CAP, c.slot << CAP_SHIFT);
            put(&mut b, e + cap_off::FLAGS, c.flags);
            b[e + cap_off::NAME..e + cap_off::NAME + cap_off::NAME_LEN].copy_from_slice(&c.name);
        }
        // The terminator: `l4re_env_cap_entry_t()`, cap invalid, flags ~0.
        let e = env_off::SIZE + self.caps.len() * cap_off::SIZE;
        put(&mut b, e + cap_off::CAP, INVALID_CAP);
        put(&mut b, e + cap_off::FLAGS, CAP_END_FLAGS);
        b
    }
}

/// Writes the little-endian word `v` at `b[o..o + 8]`.
fn put_word(b: &mut [u8], o: usize, v: u64) {
    b[o..o + 8].copy_from_slice(&v.to_le_bytes());
}

/// Size of the env blob: `l4re_env_t`, `n` entries and the terminator.
pub fn env_image_size(n: usize) -> usize {
    env_off::SIZE + (n + 1) * cap_off::SIZE
}

/// The `l4re_aux_t` (read by `l4re_itas` and ned, not by a program).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L4reAux<'a> {
    /// The binary name (`binary` points to a copy after the struct).
    pub binary: &'a [u8],
    /// Slot of the KIP dataspace (`None`: invalid).
    pub kip_ds: Option<u64>,
    /// Debug level.
    pub dbg_lvl: u64,
    /// `l4re_aux_ldr_flags_t`.
    pub ldr_flags: u64,
    /// Load offset of the executable.
    pub ldr_base: u64,
}

impl L4reAux<'_> {
    /// Size of the aux blob: the struct and the NUL-terminated name.
    pub fn image_size(&self) -> usize {
        aux_off::SIZE + self.binary.len() + 1
    }

    /// The blob for the address `addr`.
    pub fn image(&self, addr: u64) -> Vec<u8> {
        let mut b = alloc::vec![0u8; self.image_size()];
        let put = put_word;
        put(&mut b, aux_off::BINARY, addr + aux_off::SIZE as u64);
        put(
            &mut b,
            aux_off::KIP_DS,
            self.kip_ds.map_or(INVALID_CAP, |s| s << CAP_SHIFT),
        );
        put(&mut b, aux_off::DBG_LVL, self.dbg_lvl);
        put(&mut b, aux_off::LDR_FLAGS, self.ldr_flags);
        put(&mut b, aux_off::LDR_BASE, self.ldr_base);
        b[aux_off::SIZE..aux_off::SIZE + self.binary.len()].copy_from_slice(self.binary);
        b
    }
}

/// The program's headers as `AT_PHDR`, `AT_PHNUM`, `AT_PHENT` give them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Phdrs {
    /// Address of the program headers in the loaded image.
    pub addr: u64,
    /// Their number.
    pub num: u64,
    /// Size of one (56 for ELF64).
    pub entsize: u64,
}

/// What goes on an L4Re program's initial stack.
#[derive(Debug, Clone)]
pub struct StartSpec<'a> {
    /// Arguments (argv[0] first).
    pub argv: Vec<&'a [u8]>,
    /// Environment (`NAME=value`).
    pub envp: Vec<&'a [u8]>,
    /// The environment.
    pub env: &'a L4reEnv,
    /// The `l4re_aux_t`, if one is to be passed (`AT_L4_AUX`).
    pub aux: Option<L4reAux<'a>>,
    /// Where the KIP is mapped (`AT_L4_KIP`), e.g. [`DEFAULT_KIP_ADDR`].
    pub kip: u64,
    /// The program headers (L4Re passes them when the program has a
    /// `PT_PHDR`, as its static programs do).
    pub phdrs: Option<Phdrs>,
    /// For a dynamically linked program started at its interpreter: the
    /// program's entry (`AT_ENTRY`) and the interpreter's load address
    /// (`AT_BASE`).
    pub dynamic: Option<(u64, u64)>,
}

/// Why a stack can't be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartError {
    /// A cap entry has the terminator's flags (`~0`).
    TerminatorFlags,
    /// A cap entry's name is empty.
    EmptyName,
}

/// A built L4Re stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct L4reStack {
    /// The stack (`bytes` at `[top - len, top)`, `sp` at argc).
    pub stack: Stack,
    /// Address of the `l4re_env_t` (`AT_L4_ENV`).
    pub env: u64,
    /// Address of the caps array (`env.caps`).
    pub caps: u64,
    /// Address of the `l4re_aux_t` (`AT_L4_AUX`), if any.
    pub aux: Option<u64>,
}

/// Lays out the initial stack of an L4Re program below `top`.
pub fn build(top: u64, spec: &StartSpec<'_>) -> Result<L4reStack, StartError> {
    for c in &spec.env.caps {
        if c.flags == CAP_END_FLAGS {
            return Err(StartError::TerminatorFlags);
        }
        if c.name[0] == 0 {
            return Err(StartError::EmptyName);
        }
    }
    let env_fill = |a: u64| spec.env.image(a);
    let aux_fill = |a: u64| spec.aux.as_ref().map_or_else(Vec::new, |x| x.image(a));
    let mut blobs = Vec::new();
    if let Some(x) = &spec.aux {
        blobs.push(Blob {
            size: x.image_size(),
            align: 16,
            fill: &aux_fill,
        });
    }
    blobs.push(Blob {
        size: env_image_size(spec.env.caps.len()),
        align: 16,
        fill: &env_fill,
    });
    let has_aux = spec.aux.is_some();
    // `Loader::launch`'s order (memory order, lowest first).
    let aux = |b: &[u64]| {
        let mut v = Vec::new();
        if let Some((entry, base)) = spec.dynamic {
            v.push((at::BASE, base));
            v.push((at::ENTRY, entry));
        }
        if let Some(p) = spec.phdrs {
            v.push((at::PHDR, p.addr));
            v.push((at::PHNUM, p.num));
            v.push((at::PHENT, p.entsize));
        }
        v.push((at::EGID, 0));
        v.push((at::GID, 0));
        v.push((at::EUID, 0));
        v.push((at::UID, 0));
        v.push((at::PAGESZ, PAGE_SIZE));
        if has_aux {
            v.push((at_l4::AUX, b[0]));
        }
        v.push((at_l4::KIP, spec.kip));
        v.push((at_l4::ENV, *b.last().expect("env blob")));
        v
    };
    let extras = Extras {
        linux_aux: false,
        blobs,
        aux: &aux,
    };
    let s = stack::build_with(
        top,
        &StackSpec {
            argv: spec.argv.clone(),
            envp: spec.envp.clone(),
            ..Default::default()
        },
        &extras,
    );
    let env = *s.blobs.last().expect("env blob");
    let aux_at = has_aux.then(|| s.blobs[0]);
    Ok(L4reStack {
        caps: env + env_off::SIZE as u64,
        env,
        aux: aux_at,
        stack: s,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads the stack as the program would, at addresses.
    struct Mem<'a> {
        base: u64,
        bytes: &'a [u8],
    }

    impl Mem<'_> {
        fn word(&self, a: u64) -> u64 {
            let i = (a - self.base) as usize;
            u64::from_le_bytes(self.bytes[i..i + 8].try_into().unwrap())
        }
        fn cstr(&self, a: u64) -> Vec<u8> {
            let i = (a - self.base) as usize;
            self.bytes[i..].split(|c| *c == 0).next().unwrap().to_vec()
        }
        fn raw(&self, a: u64, n: usize) -> &[u8] {
            let i = (a - self.base) as usize;
            &self.bytes[i..i + n]
        }
    }

    fn env_fixture() -> L4reEnv {
        let mut e = L4reEnv::remote_app(
            UtcbArea {
                start: 0x7ff0_0000,
                log2_size: 16,
            },
            true,
            &[b"rom", b"fs", b"exactly16bytes!!"],
        )
        .unwrap();
        e.caps[1].flags = 0x3;
        e
    }

    /// What `__uClibc_main` + `_dl_aux_init` + `l4re_env_get_cap` do.
    #[test]
    fn program_reads_it_back() {
        let env = env_fixture();
        let top = 0x8020_0000u64;
        let spec = StartSpec {
            argv: vec![b"rom/hello", b"-v"],
            envp: vec![b"LANG=C"],
            env: &env,
            aux: Some(L4reAux {
                binary: b"rom/hello",
                kip_ds: Some(slots::KIP),
                dbg_lvl: 0,
                ldr_flags: 0,
                ldr_base: 0,
            }),
            kip: DEFAULT_KIP_ADDR,
            phdrs: Some(Phdrs {
                addr: 0x400040,
                num: 7,
                entsize: 56,
            }),
            dynamic: None,
        };
        let st = build(top, &spec).unwrap();
        let s = &st.stack;
        let m = Mem {
            base: top - s.bytes.len() as u64,
            bytes: &s.bytes,
        };
        assert_eq!(s.sp % 16, 0, "sp 16-aligned (adjust_sp)");
        assert_eq!(s.sp, m.base);
        // crt1.S: argc at sp, argv at sp + 8.
        let argc = m.word(s.sp);
        assert_eq!(argc, 2);
        let argv = s.sp + 8;
        assert_eq!(m.cstr(m.word(argv)), b"rom/hello");
        assert_eq!(m.cstr(m.word(argv + 8)), b"-v");
        assert_eq!(m.word(argv + 16), 0);
        // __uClibc_main: environ = &argv[argc + 1], auxv after its NULL.
        let mut p = argv + 8 * (argc + 1);
        assert_eq!(m.cstr(m.word(p)), b"LANG=C");
        while m.word(p) != 0 {
            p += 8;
        }
        p += 8;
        assert_eq!(p, s.auxv.0);
        // _dl_aux_init.
        let mut aux = Vec::new();
        loop {
            let (t, v) = (m.word(p), m.word(p + 8));
            p += 16;
            if t == at::NULL {
                break;
            }
            aux.push((t, v));
        }
        assert_eq!(p - s.auxv.0, s.auxv.1);
        let types: Vec<u64> = aux.iter().map(|x| x.0).collect();
        assert_eq!(
            types,
            [
                at::PHDR,
                at::PHNUM,
                at::PHENT,
                at::EGID,
                at::GID,
                at::EUID,
                at::UID,
                at::PAGESZ,
                at_l4::AUX,
                at_l4::KIP,
                at_l4::ENV
            ],
            "Loader::launch's order"
        );
        let get = |t| aux.iter().find(|x| x.0 == t).unwrap().1;
        assert_eq!(get(at::PHDR), 0x400040);
        assert_eq!(get(at::PHNUM), 7);
        assert_eq!(get(at::PHENT), 56);
        assert_eq!(get(at::PAGESZ), 4096);
        assert_eq!(get(at::UID), 0);
        assert_eq!(get(at_l4::KIP), DEFAULT_KIP_ADDR);
        // l4re_global_env.
        let e = get(at_l4::ENV);
        assert_eq!(e, st.env);
        assert_eq!(e % 16, 0);
        let cap = |o| m.word(e + o as u64);
        assert_eq!(cap(env_off::PARENT), 0x13 << 12);
        assert_eq!(cap(env_off::RM), 0x10 << 12);
        assert_eq!(cap(env_off::MEM_ALLOC), 0x11 << 12);
        assert_eq!(cap(env_off::LOG), 5 << 12);
        assert_eq!(cap(env_off::MAIN_THREAD), 3 << 12);
        assert_eq!(cap(env_off::FACTORY), 2 << 12);
        assert_eq!(cap(env_off::SCHEDULER), 7 << 12);
        assert_eq!(cap(env_off::ITAS), INVALID_CAP);
        assert_eq!(cap(env_off::ITAS) & (1 << 11), 1 << 11, "l4_is_invalid_cap");
        assert_eq!(cap(env_off::DBG_EVENTS), INVALID_CAP);
        assert_eq!(cap(env_off::FIRST_FREE_CAP), 0x16 + 3, "an index");
        assert_eq!(cap(env_off::FIRST_FREE_REPLY_CAP), 0);
        // l4_fpage_memaddr / l4_fpage_size as __pthread_initialize_minimal.
        let fp = cap(env_off::UTCB_AREA);
        assert_eq!(fp & !0xfff, 0x7ff0_0000);
        assert_eq!((fp >> 6) & 0x3f, 16);
        assert_eq!((fp >> 4) & 3, 1, "L4_FPAGE_MEMORY");
        assert_eq!(cap(env_off::FIRST_FREE_UTCB), 0x7ff0_0000 + 1024);
        // The caps array, walked as l4re_env_get_cap_l does.
        let caps = cap(env_off::CAPS);
        assert_eq!(caps, st.caps);
        assert_eq!(caps, e + env_off::SIZE as u64);
        assert_eq!(caps % 8, 0);
        let mut found = Vec::new();
        let mut c = caps;
        while m.word(c + cap_off::FLAGS as u64) != !0 {
            let name = m.raw(c + cap_off::NAME as u64, 16).to_vec();
            found.push((
                name,
                m.word(c + cap_off::CAP as u64),
                m.word(c + cap_off::FLAGS as u64),
            ));
            c += cap_off::SIZE as u64;
        }
        assert_eq!(m.word(c + cap_off::CAP as u64), INVALID_CAP, "terminator");
        assert_eq!(found.len(), 3);
        assert_eq!(&found[0].0, b"rom\0\0\0\0\0\0\0\0\0\0\0\0\0", "NUL-padded");
        assert_eq!(found[0].1, 0x16 << 12);
        assert_eq!(found[1].0[..3], *b"fs\0");
        assert_eq!((found[1].1, found[1].2), (0x17 << 12, 3));
        assert_eq!(&found[2].0, b"exactly16bytes!!");
        // l4re_aux_t.
        let a = get(at_l4::AUX);
        assert_eq!(Some(a), st.aux);
        assert_eq!(a % 8, 0);
        assert_eq!(m.cstr(m.word(a + aux_off::BINARY as u64)), b"rom/hello");
        assert_eq!(m.word(a + aux_off::KIP_DS as u64), 0x14 << 12);
        assert_eq!(m.word(a + aux_off::LDR_BASE as u64), 0);
        // Everything lies inside the stack, below the end marker.
        assert_eq!(m.word(top - 8), 0);
        assert!(a + aux_off::SIZE as u64 <= top - 8);
        assert!(c + (cap_off::SIZE as u64) <= top - 8);
    }

    #[test]
    fn without_aux_or_phdrs_and_any_counts() {
        let env = L4reEnv::remote_app(
            UtcbArea {
                start: 0x7ff0_0000,
                log2_size: 12,
            },
            false,
            &[],
        )
        .unwrap();
        for argc in 0..5 {
            for envc in 0..4 {
                let spec = StartSpec {
                    argv: (0..argc).map(|_| b"x".as_slice()).collect(),
                    envp: (0..envc).map(|_| b"A=b".as_slice()).collect(),
                    env: &env,
                    aux: None,
                    kip: DEFAULT_KIP_ADDR,
                    phdrs: None,
                    dynamic: None,
                };
                let top = 0x8000_1007;
                let st = build(top, &spec).unwrap();
                let s = &st.stack;
                let base = (top & !15) - s.bytes.len() as u64;
                let m = Mem {
                    base,
                    bytes: &s.bytes,
                };
                assert_eq!(s.sp % 16, 0);
                assert_eq!(m.word(s.sp), argc as u64);
                assert_eq!(st.aux, None);
                let aux0 = s.sp + 8 * (argc as u64 + envc as u64 + 3);
                assert_eq!(aux0, s.auxv.0);
                assert_eq!(m.word(aux0), at::EGID);
                assert_eq!(s.auxv.1, 16 * 8);
                assert_eq!(m.word(st.env + env_off::LOG as u64), INVALID_CAP);
                // Empty caps array: the terminator right away.
                assert_eq!(m.word(st.caps + cap_off::FLAGS as u64), !0);
            }
        }
    }

    #[test]
    fn bad_entries_are_refused() {
        assert!(CapEntry::new(b"", 0x20).is_none());
        assert!(CapEntry::new(b"seventeen-bytes!!", 0x20).is_none());
        assert!(CapEntry::new(b"a\0b", 0x20).is_none());
        let mut env = env_fixture();
        env.caps[0].flags = !0;
        let spec = StartSpec {
            argv: vec![],
            envp: vec![],
            env: &env,
            aux: None,
            kip: DEFAULT_KIP_ADDR,
            phdrs: None,
            dynamic: None,
        };
        assert_eq!(build(0x1000_0000, &spec), Err(StartError::TerminatorFlags));
    }

    #[test]
    fn image_is_byte_exact() {
        let env = env_fixture();
        let img = env.image(0x1000);
        assert_eq!(img.len(), 112 + 4 * 32);
        assert_eq!(&img[104..112], &(0x1000u64 + 112).to_le_bytes());
        assert_eq!(&img[112 + 16..112 + 19], b"rom");
        assert_eq!(&img[112 + 3 * 32 + 8..112 + 3 * 32 + 16], &[0xff; 8]);
    }

    /// What an in-task pager hands its program: its own environment with
    /// its region map, the program's thread and the next UTCB.
    #[test]
    fn program_environment_from_the_pagers() {
        let mine = env_fixture();
        let prog = mine.for_program(0x500, 0x501, 0x7ff0_0400);
        assert_eq!(prog.rm, Some(0x500));
        assert_eq!(prog.main_thread, Some(0x501));
        assert_eq!(prog.itas, None);
        assert_eq!(prog.first_free_utcb, 0x7ff0_0800);
        // A pager that took more of the UTCB area (a trampoline state
        // after the thread's UTCB) keeps it from the program.
        let took_more = L4reEnv {
            first_free_utcb: 0x7ff0_0c00,
            ..mine.clone()
        };
        let prog2 = took_more.for_program(0x500, 0x501, 0x7ff0_0400);
        assert_eq!(prog2.first_free_utcb, 0x7ff0_0c00);
        // Everything else is the pager's: caps, parent, allocator, slots.
        assert_eq!(prog.caps, mine.caps);
        assert_eq!(prog.parent, mine.parent);
        assert_eq!(prog.mem_alloc, mine.mem_alloc);
        assert_eq!(prog.first_free_cap, mine.first_free_cap);
        let img = prog.image(0x2000);
        assert_eq!(
            &img[env_off::RM..env_off::RM + 8],
            &(0x500u64 << 12).to_le_bytes()
        );
        assert_eq!(
            &img[env_off::ITAS..env_off::ITAS + 8],
            &INVALID_CAP.to_le_bytes()
        );
    }
}
