# This repository is also an L4Re package (see README, "Building for
# Fiasco"): built against an existing L4Re build directory with
#
#     make O=/path/to/l4re/build-dir      (or L4RE_OBJ=..., or nothing for
#                                          the conventional /opt/l4re/build-amd64)
#
# fiasco/ holds the L4Re programs (Rust staticlibs linked by BID Makefiles),
# test/ the tests for L4Re's harness (`make test` in the build directory).
# Host builds do not use this file: they are plain cargo.
PKGDIR ?= .
include $(PKGDIR)/fiasco/mk/l4re.mk

TARGET      = fiasco
TARGET_test = test

include $(L4DIR)/mk/subdir.mk

test: fiasco
