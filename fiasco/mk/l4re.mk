# Finds the L4Re tree for the BID Makefiles of this package. Included first
# by every Makefile of the package, before anything of L4Re's mk/.
#
# The build directory comes from (first match):
#   O=<dir> on the command line (as for every L4Re package),
#   L4RE_OBJ in the environment,
#   the conventional /opt/l4re/build-$(L4RE_ARCH)   (L4RE_ARCH default amd64).
# The source tree (L4DIR) from L4DIR, else from the build directory's
# `source` link (every L4Re build directory has one).
# Nothing of L4Re is part of this repository.

ifeq ($(origin _L4RE_RUST_L4RE_MK),undefined)
_L4RE_RUST_L4RE_MK := y

L4RE_ARCH ?= amd64
L4RE_OBJ  ?= /opt/l4re/build-$(L4RE_ARCH)

ifeq ($(O)$(OBJ_BASE),)
  ifeq ($(wildcard $(L4RE_OBJ)/.config),)
    $(error No L4Re build directory: give O=<l4re build dir>, or set L4RE_OBJ (tried $(L4RE_OBJ)))
  endif
  O := $(L4RE_OBJ)
endif

ifeq ($(L4DIR),)
  L4DIR := $(realpath $(or $(O),$(OBJ_BASE))/source)
  ifeq ($(L4DIR),)
    $(error Cannot find the L4Re source tree of $(or $(O),$(OBJ_BASE)) (no `source` link): set L4DIR)
  endif
endif

# This package's name in the build tree (test group, ext-pkg directory).
PKGNAME := l4re-rust-native

endif
