//! The initial stack of a program (System V x86-64 ABI, as Linux's
//! `execve` lays it out).
//!
//! From the top of the stack down:
//!
//! ```text
//! top ->  8 zero bytes (end marker)
//!         execfn string (AT_EXECFN points here)
//!         environment strings
//!         argument strings
//!         platform string (AT_PLATFORM), 16 random bytes (AT_RANDOM)
//!         padding to 16 bytes
//!         auxv: (type, value) pairs, ending with AT_NULL
//!         envp[]: pointers, NULL
//!         argv[]: pointers, NULL
//! sp ->   argc
//! ```
//!
//! `sp` is 16-byte aligned, as the ABI requires at process entry (`rdx`
//! must be 0: no function for `atexit`).

use alloc::vec::Vec;

/// Auxiliary vector types (`<elf.h>`).
pub mod at {
    /// End of vector.
    pub const NULL: u64 = 0;
    /// Program headers.
    pub const PHDR: u64 = 3;
    /// Size of one program header.
    pub const PHENT: u64 = 4;
    /// Number of program headers.
    pub const PHNUM: u64 = 5;
    /// Page size.
    pub const PAGESZ: u64 = 6;
    /// Interpreter base (0 for static programs).
    pub const BASE: u64 = 7;
    /// Flags.
    pub const FLAGS: u64 = 8;
    /// Entry point.
    pub const ENTRY: u64 = 9;
    /// User ids.
    pub const UID: u64 = 11;
    /// Effective user id.
    pub const EUID: u64 = 12;
    /// Group id.
    pub const GID: u64 = 13;
    /// Effective group id.
    pub const EGID: u64 = 14;
    /// Platform string.
    pub const PLATFORM: u64 = 15;
    /// CPU capabilities.
    pub const HWCAP: u64 = 16;
    /// Clock ticks per second.
    pub const CLKTCK: u64 = 17;
    /// Secure mode (setuid).
    pub const SECURE: u64 = 23;
    /// 16 random bytes.
    pub const RANDOM: u64 = 25;
    /// More CPU capabilities.
    pub const HWCAP2: u64 = 26;
    /// File name of the program.
    pub const EXECFN: u64 = 31;
    /// The vDSO.
    pub const SYSINFO_EHDR: u64 = 33;
    /// Minimal signal stack size.
    pub const MINSIGSTKSZ: u64 = 51;
}

/// What goes on the stack.
#[derive(Debug, Clone, Default)]
pub struct StackSpec<'a> {
    /// Arguments (argv[0] first).
    pub argv: Vec<&'a [u8]>,
    /// Environment (`NAME=value`).
    pub envp: Vec<&'a [u8]>,
    /// The program's file name (`AT_EXECFN`).
    pub execfn: &'a [u8],
    /// The platform string (`AT_PLATFORM`), e.g. `x86_64`.
    pub platform: &'a [u8],
    /// The 16 bytes `AT_RANDOM` points to.
    pub random: [u8; 16],
    /// Auxiliary entries with plain values (`AT_PHDR`, `AT_ENTRY`, …);
    /// `AT_RANDOM`, `AT_EXECFN` and `AT_PLATFORM` are added with pointers.
    pub auxv: Vec<(u64, u64)>,
}

/// A block of bytes placed on the stack below the strings (for example
/// L4Re's `l4re_env_t` image), see [`build_with`].
pub struct Blob<'f> {
    /// Its size in bytes.
    pub size: usize,
    /// Its alignment (a power of two).
    pub align: u64,
    /// Produces the content (`size` bytes) given the blob's address, so
    /// that it may point into itself.
    pub fill: &'f dyn Fn(u64) -> Vec<u8>,
}

/// Produces auxiliary entries given the blobs' addresses.
pub type AuxFn<'f> = dyn Fn(&[u64]) -> Vec<(u64, u64)> + 'f;

/// What [`build_with`] adds to a [`StackSpec`].
pub struct Extras<'f> {
    /// Add Linux's `AT_RANDOM`, `AT_EXECFN` and `AT_PLATFORM` (and their
    /// data); without them `execfn`, `platform` and `random` are ignored.
    pub linux_aux: bool,
    /// Blocks placed below the strings, the first highest.
    pub blobs: Vec<Blob<'f>>,
    /// Auxiliary entries appended after [`StackSpec::auxv`] (before the
    /// Linux ones and `AT_NULL`), given the blobs' addresses.
    pub aux: &'f AuxFn<'f>,
}

impl Extras<'_> {
    /// What [`build`] uses: the Linux entries, no blobs.
    pub fn linux() -> Extras<'static> {
        Extras {
            linux_aux: true,
            blobs: Vec::new(),
            aux: &|_| Vec::new(),
        }
    }
}

/// A built stack: `bytes` belong at `[top - bytes.len(), top)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stack {
    /// The content.
    pub bytes: Vec<u8>,
    /// The initial stack pointer (points at argc).
    pub sp: u64,
    /// Where argument strings start and end (for `/proc/PID/cmdline`).
    pub args: (u64, u64),
    /// Where environment strings start and end.
    pub env: (u64, u64),
    /// Where the auxiliary vector starts, and its size in bytes.
    pub auxv: (u64, u64),
    /// Where the blobs of [`Extras::blobs`] are, in their order.
    pub blobs: Vec<u64>,
}

/// Lays out the stack for `spec` below `top` (16-aligned), Linux style.
pub fn build(top: u64, spec: &StackSpec<'_>) -> Stack {
    build_with(top, spec, &Extras::linux())
}

/// Lays out the stack for `spec` plus `extras` below `top` (16-aligned).
///
/// From the top down: the end marker (8 zero bytes), the `execfn` string
/// (Linux only), environment and argument strings, the platform string
/// (Linux only), the blobs (each aligned), the random bytes (Linux only,
/// 16-aligned), padding, then auxv, envp, argv and argc at the 16-aligned
/// `sp`.
pub fn build_with(top: u64, spec: &StackSpec<'_>, extras: &Extras<'_>) -> Stack {
    let top = top & !15;
    // Strings area, filled downwards.
    let mut strings: Vec<u8> = Vec::new();
    // Addresses are computed from `top - offset_from_top`.
    let mut at = 8u64; // the end marker
    // Pushes `s` and its NUL below the strings so far; returns its address.
    fn push(top: u64, at: &mut u64, s: &[u8], strings: &mut Vec<u8>) -> u64 {
        *at += s.len() as u64 + 1;
        let mut v = s.to_vec();
        v.push(0);
        // Prepend: strings are stored in memory order later.
        v.extend_from_slice(strings);
        *strings = v;
        top - *at
    }
    let execfn = if extras.linux_aux {
        push(top, &mut at, spec.execfn, &mut strings)
    } else {
        0
    };
    let env_end = top - at;
    let env_ptrs: Vec<u64> = spec
        .envp
        .iter()
        .rev()
        .map(|e| push(top, &mut at, e, &mut strings))
        .collect();
    let env_ptrs: Vec<u64> = env_ptrs.into_iter().rev().collect();
    let arg_end = top - at;
    let arg_ptrs: Vec<u64> = spec
        .argv
        .iter()
        .rev()
        .map(|a| push(top, &mut at, a, &mut strings))
        .collect();
    let arg_ptrs: Vec<u64> = arg_ptrs.into_iter().rev().collect();
    let arg_start = top - at;
    let platform = if extras.linux_aux {
        push(top, &mut at, spec.platform, &mut strings)
    } else {
        0
    };
    let strings_len = at;
    // Blobs below the strings.
    let mut cur = top - strings_len;
    let mut blob_at = Vec::with_capacity(extras.blobs.len());
    for b in &extras.blobs {
        debug_assert!(b.align.is_power_of_two());
        cur = (cur - b.size as u64) & !(b.align.max(1) - 1);
        blob_at.push(cur);
    }
    // Random bytes, 16-aligned below the strings and blobs.
    let random = if extras.linux_aux {
        cur = (cur - 16) & !15;
        cur
    } else {
        0
    };
    // The pointer area.
    let mut auxv: Vec<(u64, u64)> = spec
        .auxv
        .iter()
        .copied()
        .filter(|(t, _)| !matches!(*t, at::RANDOM | at::EXECFN | at::PLATFORM | at::NULL))
        .collect();
    auxv.extend(
        (extras.aux)(&blob_at)
            .into_iter()
            .filter(|(t, _)| *t != at::NULL),
    );
    if extras.linux_aux {
        auxv.push((at::RANDOM, random));
        auxv.push((at::EXECFN, execfn));
        auxv.push((at::PLATFORM, platform));
    }
    auxv.push((at::NULL, 0));
    let words = 1 + arg_ptrs.len() + 1 + env_ptrs.len() + 1 + 2 * auxv.len();
    let mut sp = cur - 8 * words as u64;
    sp &= !15;
    let mut w: Vec<u64> = Vec::with_capacity(words);
    w.push(arg_ptrs.len() as u64);
    w.extend_from_slice(&arg_ptrs);
    w.push(0);
    w.extend_from_slice(&env_ptrs);
    w.push(0);
    let auxv_at = sp + 8 * w.len() as u64;
    for (t, v) in &auxv {
        w.push(*t);
        w.push(*v);
    }
    let mut bytes = alloc::vec![0u8; (top - sp) as usize];
    for (i, x) in w.iter().enumerate() {
        bytes[i * 8..i * 8 + 8].copy_from_slice(&x.to_le_bytes());
    }
    if extras.linux_aux {
        let r = (random - sp) as usize;
        bytes[r..r + 16].copy_from_slice(&spec.random);
    }
    for (b, &a) in extras.blobs.iter().zip(&blob_at) {
        let content = (b.fill)(a);
        assert_eq!(content.len(), b.size, "blob content of the announced size");
        let o = (a - sp) as usize;
        bytes[o..o + b.size].copy_from_slice(&content);
    }
    let s = (top - strings_len - sp) as usize;
    bytes[s..s + strings.len()].copy_from_slice(&strings);
    Stack {
        bytes,
        sp,
        args: (arg_start, arg_end),
        env: (arg_end, env_end),
        auxv: (auxv_at, 16 * auxv.len() as u64),
        blobs: blob_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn word(s: &Stack, top: u64, addr: u64) -> u64 {
        let base = top - s.bytes.len() as u64;
        let i = (addr - base) as usize;
        u64::from_le_bytes(s.bytes[i..i + 8].try_into().unwrap())
    }

    fn cstr(s: &Stack, top: u64, addr: u64) -> Vec<u8> {
        let base = top - s.bytes.len() as u64;
        let i = (addr - base) as usize;
        s.bytes[i..].split(|c| *c == 0).next().unwrap().to_vec()
    }

    #[test]
    fn layout_is_pinned() {
        let top = 0x7fff_0000_0000u64;
        let spec = StackSpec {
            argv: vec![b"prog", b"-x", b"arg two"],
            envp: vec![b"A=1", b"PATH=/bin"],
            execfn: b"/bin/prog",
            platform: b"x86_64",
            random: *b"0123456789abcdef",
            auxv: vec![
                (at::PAGESZ, 4096),
                (at::ENTRY, 0x401000),
                (at::PHDR, 0x400040),
            ],
        };
        let s = build(top, &spec);
        assert_eq!(s.sp % 16, 0, "sp 16-aligned");
        assert_eq!(s.sp, top - s.bytes.len() as u64);
        // argc, argv, envp.
        assert_eq!(word(&s, top, s.sp), 3);
        let argv: Vec<Vec<u8>> = (0..3)
            .map(|i| cstr(&s, top, word(&s, top, s.sp + 8 + 8 * i)))
            .collect();
        assert_eq!(
            argv,
            [b"prog".to_vec(), b"-x".to_vec(), b"arg two".to_vec()]
        );
        assert_eq!(word(&s, top, s.sp + 32), 0, "argv NULL");
        let envp = s.sp + 40;
        assert_eq!(cstr(&s, top, word(&s, top, envp)), b"A=1");
        assert_eq!(cstr(&s, top, word(&s, top, envp + 8)), b"PATH=/bin");
        assert_eq!(word(&s, top, envp + 16), 0, "envp NULL");
        // auxv follows envp.
        let mut a = envp + 24;
        assert_eq!(a, s.auxv.0);
        let mut aux = Vec::new();
        loop {
            let (t, v) = (word(&s, top, a), word(&s, top, a + 8));
            aux.push((t, v));
            a += 16;
            if t == at::NULL {
                break;
            }
        }
        assert_eq!(
            &aux[..3],
            &[
                (at::PAGESZ, 4096),
                (at::ENTRY, 0x401000),
                (at::PHDR, 0x400040)
            ]
        );
        let get = |t| aux.iter().find(|x| x.0 == t).unwrap().1;
        let r = get(at::RANDOM);
        assert_eq!(r % 16, 0);
        let base = top - s.bytes.len() as u64;
        assert_eq!(
            &s.bytes[(r - base) as usize..(r - base) as usize + 16],
            b"0123456789abcdef"
        );
        assert_eq!(cstr(&s, top, get(at::EXECFN)), b"/bin/prog");
        assert_eq!(cstr(&s, top, get(at::PLATFORM)), b"x86_64");
        assert_eq!(aux.last(), Some(&(at::NULL, 0)));
        // Strings end 8 bytes below the top, marker zero.
        assert_eq!(get(at::EXECFN) + 10, top - 8);
        assert_eq!(word(&s, top, top - 8), 0);
        // cmdline range covers the argument strings.
        assert_eq!(cstr(&s, top, s.args.0), b"prog");
    }

    #[test]
    fn alignment_holds_for_any_count() {
        for argc in 0..6 {
            for envc in 0..5 {
                let argv: Vec<&[u8]> = (0..argc).map(|_| b"a".as_slice()).collect();
                let envp: Vec<&[u8]> = (0..envc).map(|_| b"E=xyz".as_slice()).collect();
                let spec = StackSpec {
                    argv,
                    envp,
                    execfn: b"p",
                    platform: b"x86_64",
                    auxv: vec![(at::PAGESZ, 4096)],
                    ..Default::default()
                };
                let s = build(0x1000_0000, &spec);
                assert_eq!(s.sp % 16, 0);
                assert_eq!(word(&s, 0x1000_0000, s.sp), argc as u64);
            }
        }
    }
}
