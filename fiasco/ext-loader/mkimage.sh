#!/bin/sh
# Makes the ext2 image ext-loader's programs come from (a build product:
# the BID Makefile writes it into the L4Re build directory's bin/, never
# into the repository).
#   mkimage.sh OUTPUT.img PROGRAM...
# Each PROGRAM lands in the image's bin/ under its own name; data/shared
# is the file the sharing test maps.
set -eu
out=$1
shift
PATH=$PATH:/sbin:/usr/sbin
command -v mke2fs >/dev/null || { echo "mkimage.sh: mke2fs not found (Debian: e2fsprogs)" >&2; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/bin"
for p in "$@" ; do cp "$p" "$dir/bin/" ; done
printf 'not an ELF file\n' > "$dir/bin/notelf"
# What itas-mmap reads through the namespace "fs" (as in l4fs.img).
printf 'Hello from l4fs, an ext2 image served by a Rust server on Fiasco.OC!\n' > "$dir/hello.txt"
perl -e 'my $s = ""; for my $i (0 .. 1048575) { $s .= chr(($i & 255) ^ ((($i >> 12) * 31) & 255)) } print $s' > "$dir/big.bin"
# Two pages of zeros that sharewrite and shareread map shared.
mkdir -p "$dir/data"
head -c 8192 /dev/zero > "$dir/data/shared"
rm -f "$out.tmp"
mke2fs -q -F -t ext2 -b 4096 -d "$dir" "$out.tmp" 16M
mv "$out.tmp" "$out"
