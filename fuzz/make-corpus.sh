#!/usr/bin/env bash
# Makes the seed corpora under fuzz/corpus/<target>/:
#  * message, control and ELF seeds: the `make-seeds` program (valid
#    requests written by l4re's own encoder, a START payload, ELF files laid
#    out as the loader's tests make them);
#  * ELF files compiled by gcc (static, static-pie, dynamic; a few KiB
#    each, stripped), when gcc is present;
#  * ext2 images made by `mke2fs -d` from a small tree (not checked in:
#    64 KiB each), when mke2fs is present.
# Idempotent; run from anywhere.
set -euo pipefail
cd "$(dirname "$0")"
cargo run --quiet --release --bin make-seeds -- corpus

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

if command -v gcc >/dev/null; then
    cat >"$tmp/p.c" <<'C'
static char buf[64] = "data";
static char bss[8192];
void _start(void) {
    bss[100] = buf[1];
    __asm__ volatile("mov $60, %%eax; xor %%edi, %%edi; syscall" ::: "memory");
    for (;;) {}
}
C
    cat >"$tmp/d.c" <<'C'
#include <stdio.h>
int main(void) { puts("hi"); return 0; }
C
    gcc -Os -s -nostdlib -static -o corpus/elf/gcc-static "$tmp/p.c"
    gcc -Os -s -nostdlib -static-pie -fpie -o corpus/elf/gcc-static-pie "$tmp/p.c"
    gcc -Os -s -o corpus/elf/gcc-dynamic "$tmp/d.c"
fi

if command -v mke2fs >/dev/null; then
    mkdir -p "$tmp/tree/d/e" corpus/ext2
    printf 'hello\n' >"$tmp/tree/a"
    head -c 20000 /dev/zero | tr '\0' 'x' >"$tmp/tree/d/f"
    printf 'deep\n' >"$tmp/tree/d/e/g"
    ln -s a "$tmp/tree/link"
    # 64 blocks of 1 KiB, 32 inodes (a 13th block of d/f uses the single
    # indirect block).
    for rev in 0 1; do
        img=corpus/ext2/tree-r$rev.img
        rm -f "$img"
        mke2fs -q -F -t ext2 -r $rev -b 1024 -N 32 -m 0 -d "$tmp/tree" "$img" 64 2>/dev/null \
            || mke2fs -q -F -t ext2 -b 1024 -N 32 -m 0 -d "$tmp/tree" "$img" 64
        truncate -s 64K "$img"
    done
fi
echo "corpora: $(for d in corpus/*; do printf '%s=%s ' "${d#corpus/}" "$(ls "$d" | wc -l)"; done)"
