#!/bin/sh
# Makes the ext2 image ext-loader's programs come from (a build product:
# the BID Makefile writes it into the L4Re build directory's bin/, never
# into the repository).
#   mkimage.sh OUTPUT.img PROGRAM...
# Each PROGRAM lands in the image's bin/ under its own name; data/shared
# is the file the sharing test maps. With BENCH_DATA=1 (the benchmark's
# image, bench.img) the image also holds data/pf-bench.data, the same
# 16 MiB as the boot module pf-bench.data, which faultbench touches
# through l4fs, in contiguous blocks from a 2 MiB boundary of the image
# (../l4fs/place-aligned.sh).
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
size=16M
if [ "${BENCH_DATA:-0}" = 1 ] ; then
    # Made empty here, then laid out contiguously at a 2 MiB boundary of
    # the image (place-aligned.sh), so that l4fs maps it straight from the
    # image in 2 MiB flexpages.
    : > "$dir/data/pf-bench.data"
    size=40M
fi
rm -f "$out.tmp"
mke2fs -q -F -t ext2 -b 4096 -d "$dir" "$out.tmp" $size
if [ "${BENCH_DATA:-0}" = 1 ] ; then
    data=$(mktemp)
    head -c 16777216 /dev/zero | tr '\0' 'x' > "$data"
    sh "$(dirname "$0")/../l4fs/place-aligned.sh" "$out.tmp" data/pf-bench.data "$data" || { rm -f "$data"; exit 1; }
    rm -f "$data"
fi
mv "$out.tmp" "$out"
