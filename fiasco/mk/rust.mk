# Builds a Rust crate of this workspace as a staticlib and links it into the
# L4Re program(s) of the including BID Makefile. Include it after setting
#   RUST_PACKAGE   cargo package to build (its lib target), e.g. l4re-fiasco-progs
# and optionally
#   RUST_FEATURES  cargo features (default: fiasco), built with
#                  --no-default-features
# then include $(L4DIR)/mk/prog.mk (or test.mk) as usual.
#
# cargo runs on every make (it is quick when nothing changed) with:
#   target     the Rust target of the L4Re architecture (amd64:
#              x86_64-unknown-linux-gnu; the stock toolchain, no build-std)
#   profile    release, panic=abort (CARGO_PROFILE_RELEASE_PANIC)
#   target dir inside the L4Re build directory (ext-pkg/…/cargo), never in
#              the repository
#   L4RE_OBJ / L4DIR / L4RE_ARCH of this build, for l4-sys's bindgen run.
# The program is relinked when the staticlib changes (LIBDEPS).

RUST_FEATURES   ?= fiasco
CARGO           ?= cargo
RUST_TARGET_amd64 := x86_64-unknown-linux-gnu
RUST_TARGET_arm64 := aarch64-unknown-linux-gnu
RUST_TARGET_riscv := riscv64gc-unknown-linux-gnu

ifneq ($(SYSTEM),)
# Keep BID's `all` the default goal (the rules below come before prog.mk's).
all::

RUST_WORKSPACE   = $(PKGDIR_ABS)
RUST_TARGET      = $(RUST_TARGET_$(ARCH))
RUST_TARGET_DIR  = $(PKGDIR_OBJ)/cargo
# The staticlib of package $(1).
rust_staticlib   = $(RUST_TARGET_DIR)/$(RUST_TARGET)/release/lib$(subst -,_,$(1)).a
RUST_LIB         = $(call rust_staticlib,$(RUST_PACKAGE))

LIBS    += $(RUST_LIB)
LIBDEPS += $(RUST_LIB)

# The rule for the staticlib of package $(1) with features $(2); for a
# staticlib the program is not linked with (e.g. a freestanding program
# built next to it): $(eval $(call RUST_STATICLIB_RULE,pkg,features)).
define RUST_STATICLIB_RULE
$(call rust_staticlib,$(1)): rust-staticlib-always
	@echo -e "  [$$(PKGNAME_DIRNAME)] ==> cargo: $(1) ($(2)) for $$(RUST_TARGET)"
	$$(VERBOSE)$$(if $$(RUST_TARGET),,echo "No Rust target known for ARCH=$$(ARCH)" >&2; exit 1;) \
	cd $$(RUST_WORKSPACE) && \
	env L4RE_OBJ=$$(OBJ_BASE) L4DIR=$$(L4DIR_ABS) L4RE_ARCH=$$(ARCH) \
	    CARGO_TARGET_DIR=$$(RUST_TARGET_DIR) CARGO_PROFILE_RELEASE_PANIC=abort \
	    CARGO_PROFILE_RELEASE_LTO=fat CARGO_PROFILE_RELEASE_CODEGEN_UNITS=1 \
	    $$(CARGO) rustc --quiet -p $(1) --lib --release \
	      --target $$(RUST_TARGET) --no-default-features --features "$(2)" \
	      --crate-type staticlib
endef

$(eval $(call RUST_STATICLIB_RULE,$(RUST_PACKAGE),$(RUST_FEATURES)))

.PHONY: rust-staticlib-always
rust-staticlib-always:
endif
