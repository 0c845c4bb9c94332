#!/bin/sh
# Makes the ext2 test image l4fs serves under Fiasco (a build product: the
# BID Makefile writes it into the L4Re build directory's bin/, never into
# the repository).
#   mkimage.sh OUTPUT.img
# Files (the clients check them):
#   hello.txt            HELLO text (fiasco::client::HELLO, l4fs-stock)
#   sub/dir/nested.txt   "nested file\n"
#   rw.bin               64 KiB of pattern bytes
#   big.bin              1 MiB of pattern bytes (larger than the test pool)
#   direct.bin           2 MiB of pattern bytes, in contiguous blocks from a
#                        2 MiB boundary of the image (place-aligned.sh): l4fs
#                        maps it straight from the image
# Pattern byte i = (i & 255) ^ ((i >> 12) * 31 & 255), as pattern_byte().
set -eu
out=$1
PATH=$PATH:/sbin:/usr/sbin
command -v mke2fs >/dev/null || { echo "mkimage.sh: mke2fs not found (Debian: e2fsprogs)" >&2; exit 1; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
mkdir -p "$dir/sub/dir"
printf 'Hello from l4fs, an ext2 image served by a Rust server on Fiasco.OC!\n' > "$dir/hello.txt"
printf 'nested file\n' > "$dir/sub/dir/nested.txt"
pattern() {
  perl -e 'my $n = shift; my $s = ""; for my $i (0 .. $n - 1) { $s .= chr(($i & 255) ^ ((($i >> 12) * 31) & 255)) } print $s' "$1"
}
pattern 65536 > "$dir/rw.bin"
pattern 1048576 > "$dir/big.bin"
: > "$dir/direct.bin"
rm -f "$out.tmp"
mke2fs -q -F -t ext2 -b 4096 -d "$dir" "$out.tmp" 8M
data=$(mktemp)
pattern 2097152 > "$data"
sh "$(dirname "$0")/place-aligned.sh" "$out.tmp" direct.bin "$data" || { rm -f "$data"; exit 1; }
rm -f "$data"
mv "$out.tmp" "$out"
