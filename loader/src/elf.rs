//! ELF parsing and validation (with goblin), and the load plan.
//!
//! [`plan`] accepts static (`ET_EXEC` without interpreter) and static-pie
//! (`ET_DYN` without interpreter and without needed libraries) x86-64
//! programs and refuses everything else with an [`ElfError`] that says
//! what is wrong. It checks: the ELF magic, class (64-bit), byte order,
//! machine, type, program-header size and count, every `PT_LOAD`
//! (alignment of address to file offset, file size not above memory size,
//! data inside the file, sizes and addresses that fit the user address
//! space, no overlap with another segment), an entry point inside an
//! executable segment, and that the program headers are loaded (static
//! glibc finds its TLS template through `AT_PHDR`).
//!
//! The plan lists the task's regions at page granularity: for each
//! segment, a file-backed region for the pages holding file data (shared
//! if the segment is read-only, private if writable) and an anonymous
//! region for the pages beyond (bss).

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;

use goblin::container::{Container, Ctx, Endian};
use goblin::elf::header::{self, Header};
use goblin::elf::program_header::{self, ProgramHeader};

/// Page size of the target.
pub use l4re::fpage::PAGE_SIZE as PAGE;
/// Highest user address + 1 (x86-64, 4-level paging, minus the guard page).
pub const USER_END: u64 = 0x7fff_ffff_f000;
/// Lowest address a segment may use (Linux's default `mmap_min_addr`).
pub const MIN_ADDR: u64 = 0x10000;
/// Largest accepted segment (memory size).
pub const MAX_SEGMENT: u64 = 1 << 40;
/// Most program headers accepted.
pub const MAX_PHNUM: usize = 512;

/// Why a file is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ElfError {
    /// Not an ELF file at all.
    NotElf,
    /// The file ends before a structure it declares.
    Truncated(String),
    /// 32-bit, big-endian or another machine.
    WrongArch(String),
    /// Not an executable program (object file, core dump, shared library).
    WrongType(String),
    /// Needs a dynamic linker or shared libraries.
    Dynamic(String),
    /// A segment is malformed.
    BadSegment(String),
    /// Two segments overlap.
    Overlap(String),
    /// The entry point is not in an executable segment.
    BadEntry(String),
    /// Something else is malformed.
    Malformed(String),
}

impl fmt::Display for ElfError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ElfError::NotElf => f.write_str("not an ELF file (bad magic)"),
            ElfError::Truncated(s) => write!(f, "truncated ELF file: {s}"),
            ElfError::WrongArch(s) => write!(f, "wrong architecture: {s}"),
            ElfError::WrongType(s) => write!(f, "not a program: {s}"),
            ElfError::Dynamic(s) => write!(f, "dynamically linked program: {s}"),
            ElfError::BadSegment(s) => write!(f, "bad segment: {s}"),
            ElfError::Overlap(s) => write!(f, "overlapping segments: {s}"),
            ElfError::BadEntry(s) => write!(f, "bad entry point: {s}"),
            ElfError::Malformed(s) => write!(f, "malformed ELF file: {s}"),
        }
    }
}

/// Access rights of a region (read, write, execute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prot {
    /// Readable.
    pub r: bool,
    /// Writable.
    pub w: bool,
    /// Executable.
    pub x: bool,
}

impl Prot {
    fn of(flags: u32) -> Prot {
        Prot {
            r: flags & program_header::PF_R != 0,
            w: flags & program_header::PF_W != 0,
            x: flags & program_header::PF_X != 0,
        }
    }

    /// As `L4Re::Rm` rights flags (R=4, W=2, X=1).
    pub fn rm_flags(self) -> u32 {
        (self.r as u32) << 2 | (self.w as u32) << 1 | self.x as u32
    }
}

/// One region of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionPlan {
    /// Start address (page-aligned, load bias applied).
    pub start: u64,
    /// Size (whole pages).
    pub size: u64,
    /// Rights.
    pub prot: Prot,
    /// File-backed: page-aligned file offset of `start`, and how many bytes
    /// from `start` come from the file. `None`: anonymous (bss).
    pub file: Option<(u64, u64)>,
    /// Private (copied on first touch) rather than shared.
    pub private: bool,
    /// Name for reports: `text`, `rodata`, `data`, `bss`, …
    pub name: String,
}

/// A validated program and how to load it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Static-pie (relocated to `bias`).
    pub pie: bool,
    /// Load bias (0 for `ET_EXEC`).
    pub bias: u64,
    /// Entry point (bias applied).
    pub entry: u64,
    /// Address of the program headers in memory (`AT_PHDR`).
    pub phdr: u64,
    /// Number of program headers (`AT_PHNUM`).
    pub phnum: u64,
    /// Size of one (`AT_PHENT`).
    pub phent: u64,
    /// The regions, in address order.
    pub regions: Vec<RegionPlan>,
    /// Pages of the file that loadable segments cover.
    pub loadable_pages: u64,
    /// First page after the highest segment (where the heap starts).
    pub brk: u64,
    /// Lowest and highest address + 1 of the image.
    pub span: (u64, u64),
    /// The interpreter (`PT_INTERP`) of a dynamically linked program
    /// (only from [`plan_dynamic`]).
    pub interp: Option<String>,
}

fn page_down(x: u64) -> u64 {
    x & !(PAGE - 1)
}

fn page_up(x: u64) -> Option<u64> {
    x.checked_add(PAGE - 1).map(page_down)
}

fn machine_name(m: u16) -> String {
    let n = header::machine_to_str(m);
    format!("{n} ({m})")
}

/// Validates `bytes` as a static or static-pie x86-64 program and plans
/// its regions; a static-pie is placed at `pie_base` (page-aligned).
pub fn plan(bytes: &[u8], pie_base: u64) -> Result<Plan, ElfError> {
    plan_with(bytes, pie_base, false)
}

/// As [`plan`], and also accepts dynamically linked programs and shared
/// objects: their interpreter is named in [`Plan::interp`], for a loader
/// that loads it too (L4Re's `ld-l4.so`, as `l4re_itas` does). An
/// interpreter itself plans as a static-pie without interpreter.
pub fn plan_dynamic(bytes: &[u8], pie_base: u64) -> Result<Plan, ElfError> {
    plan_with(bytes, pie_base, true)
}

fn plan_with(bytes: &[u8], pie_base: u64, dynamic: bool) -> Result<Plan, ElfError> {
    if bytes.len() < 4 || &bytes[..4] != b"\x7fELF" {
        return Err(ElfError::NotElf);
    }
    if bytes.len() < header::header64::SIZEOF_EHDR {
        return Err(ElfError::Truncated(format!(
            "{} bytes, shorter than an ELF header",
            bytes.len()
        )));
    }
    match bytes[header::EI_CLASS] {
        header::ELFCLASS64 => {}
        header::ELFCLASS32 => {
            return Err(ElfError::WrongArch(
                "32-bit ELF; this loader runs 64-bit x86-64 programs".into(),
            ));
        }
        c => return Err(ElfError::Malformed(format!("unknown ELF class {c}"))),
    }
    if bytes[header::EI_DATA] != header::ELFDATA2LSB {
        return Err(ElfError::WrongArch(
            "big-endian ELF; x86-64 is little-endian".into(),
        ));
    }
    let h: Header = goblin::elf::Elf::parse_header(bytes)
        .map_err(|e| ElfError::Malformed(format!("header: {e}")))?;
    if h.e_machine != header::EM_X86_64 {
        return Err(ElfError::WrongArch(format!(
            "machine {}, this loader runs x86-64 (62) programs",
            machine_name(h.e_machine)
        )));
    }
    let pie = match h.e_type {
        header::ET_EXEC => false,
        header::ET_DYN => true,
        header::ET_REL => {
            return Err(ElfError::WrongType(
                "a relocatable object file (ET_REL)".into(),
            ));
        }
        header::ET_CORE => return Err(ElfError::WrongType("a core dump (ET_CORE)".into())),
        t => return Err(ElfError::WrongType(format!("ELF type {t}"))),
    };
    if h.e_phnum == 0 {
        return Err(ElfError::WrongType("no program headers".into()));
    }
    if h.e_phentsize as usize != program_header::program_header64::SIZEOF_PHDR {
        return Err(ElfError::Malformed(format!(
            "program header size {} (expected 56)",
            h.e_phentsize
        )));
    }
    let phnum = h.e_phnum as usize;
    if phnum > MAX_PHNUM {
        return Err(ElfError::Malformed(format!("{phnum} program headers")));
    }
    let ph_end = (h.e_phoff)
        .checked_add(phnum as u64 * 56)
        .ok_or_else(|| ElfError::Malformed("program header offset overflows".into()))?;
    if ph_end > bytes.len() as u64 {
        return Err(ElfError::Truncated(format!(
            "program headers end at {ph_end:#x}, the file has {:#x} bytes",
            bytes.len()
        )));
    }
    let ctx = Ctx::new(Container::Big, Endian::Little);
    let phdrs = ProgramHeader::parse(bytes, h.e_phoff as usize, phnum, ctx)
        .map_err(|e| ElfError::Malformed(format!("program headers: {e}")))?;

    // Dynamic programs.
    let mut interp = None;
    if let Some(i) = phdrs.iter().find(|p| p.p_type == program_header::PT_INTERP) {
        let s = i.p_offset as usize;
        let e = s.saturating_add(i.p_filesz as usize).min(bytes.len());
        let name = bytes
            .get(s..e)
            .map(|b| String::from_utf8_lossy(b.split(|c| *c == 0).next().unwrap_or(b)).into_owned())
            .unwrap_or_default();
        if !dynamic {
            return Err(ElfError::Dynamic(format!(
                "needs the interpreter {name:?}; only static programs are supported so far (link with -static or -static-pie)"
            )));
        }
        if name.is_empty() {
            return Err(ElfError::Malformed("empty interpreter name".into()));
        }
        interp = Some(name);
    }
    if !dynamic
        && pie
        && let Some(n) = needed_libraries(bytes, &phdrs)
    {
        return Err(ElfError::Dynamic(format!(
            "needs {n} shared libraries (a shared library or a dynamically linked program); only static programs are supported so far"
        )));
    }

    let bias = if pie {
        if pie_base % PAGE != 0 {
            return Err(ElfError::Malformed("unaligned load base".into()));
        }
        pie_base
    } else {
        0
    };
    let mut loads: Vec<&ProgramHeader> = phdrs
        .iter()
        .filter(|p| p.p_type == program_header::PT_LOAD && p.p_memsz > 0)
        .collect();
    if loads.is_empty() {
        return Err(ElfError::WrongType("no loadable segment".into()));
    }
    let file_len = bytes.len() as u64;
    for (i, p) in loads.iter().enumerate() {
        let what = || format!("segment {i} at {:#x}", p.p_vaddr);
        if p.p_align > 1 && !p.p_align.is_power_of_two() {
            return Err(ElfError::BadSegment(format!(
                "{}: alignment {:#x} is not a power of two",
                what(),
                p.p_align
            )));
        }
        if p.p_vaddr % PAGE != p.p_offset % PAGE {
            return Err(ElfError::BadSegment(format!(
                "{}: address and file offset {:#x} differ modulo the page size",
                what(),
                p.p_offset
            )));
        }
        if p.p_filesz > p.p_memsz {
            return Err(ElfError::BadSegment(format!(
                "{}: file size {:#x} exceeds memory size {:#x}",
                what(),
                p.p_filesz,
                p.p_memsz
            )));
        }
        if p.p_memsz > MAX_SEGMENT {
            return Err(ElfError::BadSegment(format!(
                "{}: absurd size {:#x}",
                what(),
                p.p_memsz
            )));
        }
        let fend = p.p_offset.checked_add(p.p_filesz);
        if fend.is_none_or(|e| e > file_len) {
            return Err(ElfError::Truncated(format!(
                "{}: data at {:#x}+{:#x} lies beyond the end of the file ({file_len:#x} bytes)",
                what(),
                p.p_offset,
                p.p_filesz
            )));
        }
        let start = p.p_vaddr.checked_add(bias);
        let end = start
            .and_then(|s| s.checked_add(p.p_memsz))
            .and_then(page_up);
        match (start, end) {
            (Some(s), Some(e)) if page_down(s) >= MIN_ADDR && e <= USER_END => {}
            _ => {
                return Err(ElfError::BadSegment(format!(
                    "{}: [{:#x}+{:#x}) is outside the user address space [{MIN_ADDR:#x}, {USER_END:#x})",
                    what(),
                    p.p_vaddr.wrapping_add(bias),
                    p.p_memsz
                )));
            }
        }
    }
    loads.sort_by_key(|p| p.p_vaddr);
    for w in loads.windows(2) {
        let (a, b) = (w[0], w[1]);
        // Bytes must not overlap; two segments may share a boundary page
        // (then the page is assembled privately, see below).
        if a.p_vaddr + a.p_memsz > b.p_vaddr {
            return Err(ElfError::Overlap(format!(
                "[{:#x}+{:#x}) and [{:#x}+{:#x})",
                a.p_vaddr, a.p_memsz, b.p_vaddr, b.p_memsz
            )));
        }
        if page_up(a.p_vaddr + a.p_memsz).unwrap_or(u64::MAX) > page_down(b.p_vaddr) {
            return Err(ElfError::Overlap(format!(
                "[{:#x}+{:#x}) and [{:#x}+{:#x}) share a page",
                a.p_vaddr, a.p_memsz, b.p_vaddr, b.p_memsz
            )));
        }
    }
    let entry = h.e_entry.wrapping_add(bias);
    let in_exec = loads.iter().any(|p| {
        p.p_flags & program_header::PF_X != 0
            && entry >= p.p_vaddr + bias
            && entry < p.p_vaddr + bias + p.p_memsz
    });
    if !in_exec {
        return Err(ElfError::BadEntry(format!(
            "{:#x} is not inside an executable segment",
            h.e_entry
        )));
    }
    // Where the program headers are in memory.
    let phdr = loads
        .iter()
        .find(|p| h.e_phoff >= p.p_offset && ph_end <= p.p_offset + p.p_filesz)
        .map(|p| p.p_vaddr + bias + (h.e_phoff - p.p_offset))
        .ok_or_else(|| {
            ElfError::Malformed("the program headers are not inside a loadable segment".into())
        })?;

    let mut regions = Vec::new();
    let mut loadable_pages = 0;
    let mut ro_seen = 0;
    for p in &loads {
        let prot = Prot::of(p.p_flags);
        let vstart = p.p_vaddr + bias;
        let start = page_down(vstart);
        let file_end = vstart + p.p_filesz;
        let mem_end = page_up(vstart + p.p_memsz).unwrap_or(USER_END);
        let file_pages_end = page_up(file_end).unwrap_or(USER_END).min(mem_end);
        let name = if prot.x {
            "text".into()
        } else if prot.w {
            "data".into()
        } else {
            ro_seen += 1;
            if ro_seen == 1 {
                "rodata".into()
            } else {
                format!("rodata{ro_seen}")
            }
        };
        if p.p_filesz > 0 {
            let size = file_pages_end - start;
            loadable_pages += size / PAGE;
            // A read-only segment whose last page is partly bss cannot be
            // shared: the rest of that page must read as zeros.
            let partial = p.p_memsz > p.p_filesz && file_end % PAGE != 0;
            regions.push(RegionPlan {
                start,
                size,
                prot,
                file: Some((page_down(p.p_offset), file_end - start)),
                private: prot.w || partial,
                name,
            });
        }
        // Zero-filled memory: after the file's pages, or the whole segment
        // (from its first page) when nothing of it is in the file.
        let anon_start = if p.p_filesz > 0 {
            file_pages_end
        } else {
            start
        };
        if mem_end > anon_start {
            regions.push(RegionPlan {
                start: anon_start,
                size: mem_end - anon_start,
                prot,
                file: None,
                private: true,
                name: if p.p_filesz > 0 {
                    "bss".into()
                } else {
                    format!("{}-bss", regions.len())
                },
            });
        }
    }
    let lo = regions.first().map(|r| r.start).unwrap_or(0);
    let hi = regions.last().map(|r| r.start + r.size).unwrap_or(0);
    Ok(Plan {
        pie,
        bias,
        entry,
        phdr,
        phnum: phnum as u64,
        phent: 56,
        regions,
        loadable_pages,
        brk: hi,
        span: (lo, hi),
        interp,
    })
}

/// Number of `DT_NEEDED` entries of a `PT_DYNAMIC` segment, if any.
fn needed_libraries(bytes: &[u8], phdrs: &[ProgramHeader]) -> Option<usize> {
    let d = phdrs
        .iter()
        .find(|p| p.p_type == program_header::PT_DYNAMIC)?;
    let s = d.p_offset as usize;
    let e = s.checked_add(d.p_filesz as usize)?.min(bytes.len());
    let data = bytes.get(s..e)?;
    let mut n = 0;
    for entry in data.chunks_exact(16) {
        let tag = u64::from_le_bytes(entry[..8].try_into().ok()?);
        match tag {
            0 => break,
            1 => n += 1, // DT_NEEDED
            _ => {}
        }
    }
    (n > 0).then_some(n)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal static ELF: header, `phnum` program headers, code.
    pub(crate) fn tiny(ty: u16, segs: &[(u32, u64, u64, u64, u64)], entry: u64) -> Vec<u8> {
        let phoff = 64u64;
        let mut b = vec![0u8; 0x3000];
        b[..4].copy_from_slice(b"\x7fELF");
        b[4] = 2;
        b[5] = 1;
        b[6] = 1;
        b[16..18].copy_from_slice(&ty.to_le_bytes());
        b[18..20].copy_from_slice(&62u16.to_le_bytes());
        b[20..24].copy_from_slice(&1u32.to_le_bytes());
        b[24..32].copy_from_slice(&entry.to_le_bytes());
        b[32..40].copy_from_slice(&phoff.to_le_bytes());
        b[52..54].copy_from_slice(&64u16.to_le_bytes());
        b[54..56].copy_from_slice(&56u16.to_le_bytes());
        b[56..58].copy_from_slice(&(segs.len() as u16).to_le_bytes());
        for (i, (flags, off, vaddr, filesz, memsz)) in segs.iter().enumerate() {
            let p = 64 + i * 56;
            b[p..p + 4].copy_from_slice(&1u32.to_le_bytes());
            b[p + 4..p + 8].copy_from_slice(&flags.to_le_bytes());
            b[p + 8..p + 16].copy_from_slice(&off.to_le_bytes());
            b[p + 16..p + 24].copy_from_slice(&vaddr.to_le_bytes());
            b[p + 24..p + 32].copy_from_slice(&vaddr.to_le_bytes());
            b[p + 32..p + 40].copy_from_slice(&filesz.to_le_bytes());
            b[p + 40..p + 48].copy_from_slice(&memsz.to_le_bytes());
            b[p + 48..p + 56].copy_from_slice(&0x1000u64.to_le_bytes());
        }
        b
    }

    const RX: u32 = 5;
    const RW: u32 = 6;

    fn good() -> Vec<u8> {
        tiny(
            2,
            &[
                (RX, 0, 0x40_0000, 0x1800, 0x1800),
                (RW, 0x2000, 0x40_3000, 0x100, 0x5000),
            ],
            0x40_0100,
        )
    }

    #[test]
    fn static_program_planned() {
        let p = plan(&good(), 0).unwrap();
        assert!(!p.pie);
        assert_eq!(p.entry, 0x40_0100);
        assert_eq!(p.phdr, 0x40_0040);
        assert_eq!(p.regions.len(), 3);
        let t = &p.regions[0];
        assert_eq!(
            (t.start, t.size, t.file, t.private),
            (0x40_0000, 0x2000, Some((0, 0x1800)), false)
        );
        let d = &p.regions[1];
        assert_eq!(
            (d.start, d.size, d.file, d.private),
            (0x40_3000, 0x1000, Some((0x2000, 0x100)), true)
        );
        let b = &p.regions[2];
        assert_eq!((b.start, b.size, b.file), (0x40_4000, 0x4000, None));
        assert_eq!(p.loadable_pages, 3);
        assert_eq!(p.brk, 0x40_8000);
    }

    #[test]
    fn segment_of_bss_only_covers_its_first_page() {
        // What gcc makes of a program without initialized data: the RW
        // segment starts inside a page and has nothing in the file.
        let f = tiny(
            2,
            &[
                (RX, 0, 0x40_0000, 0x1800, 0x1800),
                (RW, 0x280, 0x40_3280, 0, 0x2_0000),
            ],
            0x40_0100,
        );
        let p = plan(&f, 0).unwrap();
        assert_eq!(p.regions.len(), 2);
        let b = &p.regions[1];
        assert_eq!(
            (b.start, b.size, b.file, b.private),
            (0x40_3000, 0x2_1000, None, true)
        );
        assert_eq!(p.loadable_pages, 2);
    }

    #[test]
    fn static_pie_is_relocated() {
        let mut e = good();
        e[16] = 3; // ET_DYN
        let p = plan(&e, 0x2000_0000_0000).unwrap();
        assert!(p.pie);
        assert_eq!(p.entry, 0x2000_0040_0100);
        assert_eq!(p.regions[0].start, 0x2000_0040_0000);
    }

    fn err(b: &[u8]) -> String {
        format!("{}", plan(b, 0x1000_0000).unwrap_err())
    }

    #[test]
    fn bad_files_refused_with_clear_messages() {
        assert!(err(b"hello").contains("not an ELF"));
        assert!(err(&good()[..40]).contains("truncated"));
        let mut e = good();
        e[18] = 183; // aarch64
        assert!(err(&e).contains("machine"), "{}", err(&e));
        let mut e = good();
        e[4] = 1;
        assert!(err(&e).contains("32-bit"));
        let mut e = good();
        e[16] = 1;
        assert!(err(&e).contains("relocatable"));
        // Overlapping segments.
        let e = tiny(
            2,
            &[
                (RX, 0, 0x40_0000, 0x1800, 0x1800),
                (RW, 0x1000, 0x40_1000, 0x100, 0x100),
            ],
            0x40_0100,
        );
        assert!(err(&e).contains("overlap"), "{}", err(&e));
        // Absurd size.
        let e = tiny(2, &[(RX, 0, 0x40_0000, 0x1800, 1 << 50)], 0x40_0100);
        assert!(err(&e).contains("absurd"), "{}", err(&e));
        // Data beyond the end of the file.
        let e = tiny(2, &[(RX, 0, 0x40_0000, 0x10_0000, 0x10_0000)], 0x40_0100);
        assert!(err(&e).contains("beyond the end"), "{}", err(&e));
        // Entry in a non-executable segment.
        let e = tiny(
            2,
            &[
                (RX, 0, 0x40_0000, 0x1800, 0x1800),
                (RW, 0x2000, 0x40_3000, 0x100, 0x100),
            ],
            0x40_3000,
        );
        assert!(err(&e).contains("entry"), "{}", err(&e));
        // Misaligned segment.
        let e = tiny(2, &[(RX, 0, 0x40_0010, 0x1800, 0x1800)], 0x40_0100);
        assert!(err(&e).contains("modulo"), "{}", err(&e));
        // Below the minimum address.
        let e = tiny(2, &[(RX, 0, 0x1000, 0x1800, 0x1800)], 0x1100);
        assert!(err(&e).contains("outside"), "{}", err(&e));
        // File size above memory size.
        let e = tiny(2, &[(RX, 0, 0x40_0000, 0x1800, 0x100)], 0x40_0010);
        assert!(err(&e).contains("exceeds"), "{}", err(&e));
    }

    #[test]
    fn dynamic_programs_refused() {
        let mut e = tiny(
            2,
            &[
                (RX, 0, 0x40_0000, 0x1800, 0x1800),
                (4, 0x1000, 0x40_1000, 0x20, 0x20),
            ],
            0x40_0100,
        );
        // Turn the second header into PT_INTERP naming ld.so.
        let p = 64 + 56;
        e[p..p + 4].copy_from_slice(&3u32.to_le_bytes());
        e[0x1000..0x1000 + 28].copy_from_slice(b"/lib64/ld-linux-x86-64.so.2\0");
        let m = err(&e);
        assert!(
            m.contains("dynamically linked") && m.contains("ld-linux"),
            "{m}"
        );
    }

    #[test]
    fn fuzzed_headers_never_panic() {
        let base = good();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let (mut ok, mut bad) = (0, 0);
        for i in 0..20_000 {
            let mut e = base.clone();
            let n = 1 + rnd() % 6;
            for _ in 0..n {
                // Mutate the headers mostly: bytes, words, truncation.
                let at = (rnd() % (64 + 2 * 56 + 8)) as usize;
                match rnd() % 4 {
                    0 => e[at] = rnd() as u8,
                    1 => e[at] ^= 1 << (rnd() % 8),
                    2 => {
                        let v = rnd().to_le_bytes();
                        let end = (at + 8).min(e.len());
                        e[at..end].copy_from_slice(&v[..end - at]);
                    }
                    _ => e[at] = 0xff,
                }
            }
            if i % 10 == 0 {
                let cut = (rnd() % e.len() as u64) as usize;
                e.truncate(cut);
            }
            match plan(&e, 0x1000_0000) {
                Ok(p) => {
                    ok += 1;
                    // Whatever is accepted is consistent.
                    assert!(
                        p.regions
                            .windows(2)
                            .all(|w| w[0].start + w[0].size <= w[1].start)
                    );
                    assert!(
                        p.regions
                            .iter()
                            .all(|r| r.start % PAGE == 0 && r.size % PAGE == 0 && r.size > 0)
                    );
                    assert!(
                        p.regions
                            .iter()
                            .any(|r| r.prot.x && p.entry >= r.start && p.entry < r.start + r.size)
                    );
                }
                Err(_) => bad += 1,
            }
        }
        assert!(ok > 100 && bad > 1000, "ok {ok} bad {bad}");
    }
}
