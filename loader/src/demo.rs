//! The bundled demo program: a static x86-64 ELF file generated here, so
//! that `loader demo` (and the tests) run something on a machine without
//! a C compiler.
//!
//! It prints a line, reads one byte from every 16th page of its 64 pages of
//! read-only data and writes one byte to every 4th page of its 256 KiB of
//! bss, then exits with status 0: a demand-paged run touches 4 of the 65
//! pages of its text segment.

use alloc::vec::Vec;

/// The line the demo prints.
pub const MESSAGE: &[u8] =
    b"hello from the loader's demo: a static program, demand-paged from the filesystem server\n";

/// The demo's bytes.
pub fn image() -> Vec<u8> {
    const TEXT: u64 = 0x40_0000;
    const RO_PAGES: u64 = 64;
    let data_off = 0x1000 * (1 + RO_PAGES);
    let data_va = TEXT + data_off;
    let bss = data_va + 0x1000;
    let bss_len = 0x4_0000u64;
    let mut f = alloc::vec![0u8; (data_off + 0x1000) as usize];
    // ELF header.
    f[..16].copy_from_slice(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0");
    let put16 =
        |f: &mut Vec<u8>, at: usize, v: u16| f[at..at + 2].copy_from_slice(&v.to_le_bytes());
    let put32 =
        |f: &mut Vec<u8>, at: usize, v: u32| f[at..at + 4].copy_from_slice(&v.to_le_bytes());
    let put64 =
        |f: &mut Vec<u8>, at: usize, v: u64| f[at..at + 8].copy_from_slice(&v.to_le_bytes());
    put16(&mut f, 16, 2); // ET_EXEC
    put16(&mut f, 18, 62); // x86-64
    put32(&mut f, 20, 1);
    put64(&mut f, 24, TEXT + 0xb0); // entry
    put64(&mut f, 32, 64); // phoff
    put16(&mut f, 52, 64);
    put16(&mut f, 54, 56);
    put16(&mut f, 56, 2);
    // Program headers: text + rodata (r-x), data + bss (rw-).
    let ph = |f: &mut Vec<u8>, i: usize, flags: u32, off: u64, va: u64, filesz: u64, memsz: u64| {
        let p = 64 + i * 56;
        f[p..p + 4].copy_from_slice(&1u32.to_le_bytes());
        f[p + 4..p + 8].copy_from_slice(&flags.to_le_bytes());
        for (k, v) in [off, va, va, filesz, memsz, 0x1000].iter().enumerate() {
            f[p + 8 + 8 * k..p + 16 + 8 * k].copy_from_slice(&v.to_le_bytes());
        }
    };
    ph(&mut f, 0, 5, 0, TEXT, data_off, data_off);
    ph(&mut f, 1, 6, data_off, data_va, 0x1000, 0x1000 + bss_len);
    // Code.
    let mut c: Vec<u8> = Vec::new();
    let imm = |c: &mut Vec<u8>, v: u32| c.extend_from_slice(&v.to_le_bytes());
    c.push(0xb8);
    imm(&mut c, 1); // mov eax, 1 (write)
    c.push(0xbf);
    imm(&mut c, 1); // mov edi, 1
    c.push(0xbe);
    imm(&mut c, data_va as u32); // mov esi, msg
    c.push(0xba);
    imm(&mut c, MESSAGE.len() as u32); // mov edx, len
    c.extend_from_slice(&[0x0f, 0x05]); // syscall
    c.extend_from_slice(&[0x31, 0xc9]); // xor ecx, ecx
    c.push(0xbe);
    imm(&mut c, (TEXT + 0x1000) as u32); // mov esi, rodata
    c.extend_from_slice(&[0x02, 0x0e]); // add cl, [rsi]
    c.extend_from_slice(&[0x81, 0xc6]);
    imm(&mut c, 0x1_0000); // add esi, 16 pages
    c.extend_from_slice(&[0x81, 0xfe]);
    imm(&mut c, data_va as u32); // cmp esi, end of rodata
    c.extend_from_slice(&[0x72, 0xf0]); // jb loop
    c.push(0xbf);
    imm(&mut c, bss as u32); // mov edi, bss
    c.extend_from_slice(&[0x88, 0x0f]); // mov [rdi], cl
    c.extend_from_slice(&[0x81, 0xc7]);
    imm(&mut c, 0x4000); // add edi, 4 pages
    c.extend_from_slice(&[0x81, 0xff]);
    imm(&mut c, (bss + bss_len) as u32); // cmp edi, end of bss
    c.extend_from_slice(&[0x72, 0xf0]); // jb loop
    c.push(0xb8);
    imm(&mut c, 231); // mov eax, 231 (exit_group)
    c.extend_from_slice(&[0x31, 0xff]); // xor edi, edi
    c.extend_from_slice(&[0x0f, 0x05]); // syscall
    f[0xb0..0xb0 + c.len()].copy_from_slice(&c);
    // Read-only data: a pattern.
    for (i, b) in f[0x1000..data_off as usize].iter_mut().enumerate() {
        *b = (i % 251) as u8 | 1;
    }
    // Data: the message.
    let d = data_off as usize;
    f[d..d + MESSAGE.len()].copy_from_slice(MESSAGE);
    f
}

/// Writes the demo as `dir/demo` (executable).
#[cfg(feature = "std")]
pub fn write(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    let p = dir.join("demo");
    std::fs::write(&p, image())?;
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))
}

#[cfg(test)]
mod tests {
    #[test]
    fn demo_is_a_valid_static_program() {
        let p = crate::elf::plan(&super::image(), 0).unwrap();
        assert!(!p.pie);
        assert_eq!(p.entry, 0x40_00b0);
        assert_eq!(p.loadable_pages, 66);
        assert_eq!(p.regions.len(), 3);
    }
}
