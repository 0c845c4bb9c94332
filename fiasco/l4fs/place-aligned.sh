#!/bin/sh
# Lays one file of an ext2 image (4 KiB blocks) out in contiguous blocks
# that start at a 2 MiB boundary of the image, so that l4fs can map it to
# clients straight from the image in 2 MiB flexpages (docs/l4fs.md,
# "Direct mapping"). mke2fs -d puts ext2's indirect blocks between the
# data blocks (after the 12th, then every 1024th), which leaves no run
# longer than 4 MiB and shifts each run off the alignment.
#   place-aligned.sh IMAGE PATH SOURCE
# PATH names an empty regular file in IMAGE (made by mke2fs -d); SOURCE
# is the content to give it. The data blocks are marked in use, the
# indirect blocks allocated by debugfs below the data, the block map set
# block by block, the content written with dd, the free counts corrected;
# the result must pass e2fsck -fn.
set -eu
img=$1
path=$2
src=$3
PATH=$PATH:/sbin:/usr/sbin
fail() { echo "place-aligned.sh: $*" >&2; exit 1; }
command -v debugfs >/dev/null || fail "debugfs not found (Debian: e2fsprogs)"
dbg() { debugfs -w -R "$1" "$img" 2>/dev/null; }

bs=$(dumpe2fs -h "$img" 2>/dev/null | sed -n 's/^Block size: *//p')
count=$(dumpe2fs -h "$img" 2>/dev/null | sed -n 's/^Block count: *//p')
[ "$bs" = 4096 ] || fail "$img: block size $bs, not 4096"
size=$(wc -c < "$src")
blocks=$(( (size + 4095) / 4096 ))
[ "$blocks" -gt 0 ] || fail "$src is empty"
per=1024                      # block pointers per 4 KiB block
align=512                     # blocks per 2 MiB
# The logical blocks whose mapping needs a new pointer block: the single
# indirect one (12), then each block the double indirect block's pointer
# blocks start with.
meta_at=""
l=12
while [ "$l" -lt "$blocks" ] ; do
  meta_at="$meta_at $l"
  l=$(( l + per ))
done
[ "$blocks" -le $(( 12 + per + per * per )) ] || fail "$src: too large"

# The data starts at the first 2 MiB boundary past the used blocks and
# room for the pointer blocks.
free=$(dbg "ffb 1" | sed -n 's/^Free blocks found: *\([0-9]*\).*/\1/p')
[ -n "$free" ] || fail "$img: no free block"
first=$(( (free + 8 + align - 1) / align * align ))
[ $(( first + blocks )) -le "$count" ] || fail "$img: too small for $src at a 2 MiB boundary ($count blocks)"
if dbg "testb $first $blocks" | grep -q "marked in use" ; then
  fail "$img: blocks $first..$((first + blocks - 1)) are not free (image too small?)"
fi
dbg "setb $first $blocks" >/dev/null

# Pointer blocks: debugfs allocates them (below the data, which is taken)
# together with a data block each, given back at once.
meta=0
for l in $meta_at ; do
  junk=$(dbg "bmap -a $path $l" | tail -n 1)
  case $junk in ''|*[!0-9]*) fail "bmap -a $path $l: $junk" ;; esac
  dbg "freeb $junk" >/dev/null
  meta=$(( meta + 1 ))
  # The double indirect block comes with the first of its pointer blocks.
  [ "$l" -eq $(( 12 + per )) ] && meta=$(( meta + 1 ))
done
cmds=$(mktemp)
trap 'rm -f "$cmds"' EXIT
i=0
while [ "$i" -lt "$blocks" ] ; do
  echo "bmap $path $i $(( first + i ))"
  i=$(( i + 1 ))
done > "$cmds"
echo "sif $path size $size" >> "$cmds"
echo "sif $path blocks $(( (blocks + meta) * 8 ))" >> "$cmds"
debugfs -w -f "$cmds" "$img" >/dev/null 2>&1
dd if="$src" of="$img" bs=4096 seek="$first" conv=notrunc status=none

# setb and freeb leave the free counts alone: take e2fsck's.
e2fsck -fn "$img" 2>/dev/null | sed -n \
  -e 's/^Free blocks count wrong for group #\([0-9]*\) ([0-9]*, counted=\([0-9]*\)).*/set_bg \1 free_blocks_count \2/p' \
  -e 's/^Free blocks count wrong ([0-9]*, counted=\([0-9]*\)).*/ssv free_blocks_count \1/p' > "$cmds"
debugfs -w -f "$cmds" "$img" >/dev/null 2>&1
e2fsck -fn "$img" >/dev/null 2>&1 || { e2fsck -fn "$img" 2>&1 | head -n 20 >&2 ; fail "$img is not consistent"; }
map=$(debugfs -R "stat $path" "$img" 2>/dev/null | grep -A1 '^BLOCKS:' | tail -n 1)
echo "place-aligned.sh: $path at block $first (2 MiB boundary): $map"
