//! Build script of `l4-sys`.
//!
//! Without the `fiasco` feature (the host platform) it does nothing: no
//! bindgen, no C compiler, no L4Re tree, no libclang.
//!
//! With `fiasco` it finds an L4Re build tree (see `ffi/README.md`), runs
//! bindgen over `ffi/wrapper.h` with the tree's include paths and defines,
//! and compiles the C file bindgen writes for the API's `static inline`
//! functions (`wrap_static_fns`) together with `ffi/shims.c` into a static
//! library that is linked into whatever L4Re program uses this crate.

fn main() {
    // Without this line cargo would re-run the script (and rebuild the
    // crate) whenever any file of the package changes.
    println!("cargo:rerun-if-changed=build.rs");
    // Host platform (no `fiasco`): nothing to generate, nothing to compile.
    if std::env::var_os("CARGO_FEATURE_FIASCO").is_some() {
        #[cfg(feature = "fiasco")]
        fiasco::build();
    }
}

#[cfg(feature = "fiasco")]
mod fiasco {
    use std::collections::{HashMap, HashSet};
    use std::env;
    use std::fs;
    use std::path::{Path, PathBuf};

    /// Where an L4Re build directory is looked for when `L4RE_OBJ` is unset;
    /// `{arch}` is replaced by the architecture.
    const CONVENTIONAL_OBJ: &str = "/opt/l4re/build-{arch}";
    /// Architecture (L4Re's name) used when `L4RE_ARCH` is unset.
    const DEFAULT_ARCH: &str = "amd64";
    /// The file of compiler definitions L4Re writes into every build
    /// directory for builds outside its own build system.
    const L4DEFS: &str = "l4defs.sh.inc";

    /// A located and checked L4Re build tree.
    struct Tree {
        /// The build directory (`O=` of the L4Re build).
        obj: PathBuf,
        /// The source directory (L4DIR, the `mk` checkout).
        src: PathBuf,
        /// Variables of the build directory's `l4defs.sh.inc`.
        defs: HashMap<String, String>,
    }

    pub fn build() {
        for var in ["L4RE_OBJ", "L4DIR", "L4RE_ARCH"] {
            println!("cargo:rerun-if-env-changed={var}");
        }
        let tree = match locate() {
            Ok(tree) => tree,
            Err(msg) => fail(&msg),
        };
        let manifest =
            PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
        let out = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
        let ffi = manifest.join("ffi");
        let wrapper = ffi.join("wrapper.h");
        let shims = ffi.join("shims.c");
        let start_checks = ffi.join("l4re_start_checks.h");
        for path in [
            &wrapper,
            &shims,
            &start_checks,
            &tree.obj.join(L4DEFS),
            &tree.obj.join(".config"),
        ] {
            println!("cargo:rerun-if-changed={}", path.display());
        }

        let cppflags = tree.var("L4_CPPFLAGS");
        let cflags = tree.var("L4_CFLAGS");
        generate(&tree, &cppflags, &wrapper, &out);
        compile(&tree, &cppflags, &cflags, &shims, &out);
    }

    /// Runs bindgen over `wrapper` and writes `bindings.rs` and, for the
    /// `static inline` functions, `static_fns.c` into `out`.
    fn generate(tree: &Tree, cppflags: &[String], wrapper: &Path, out: &Path) {
        let mut args = clang_args(tree, cppflags);
        args.push("-DL4SYS_BINDGEN".into());
        let pattern = "l4_.*|L4_.*|l4re_.*|L4RE_.*|l4sys_.*";
        let target = bindgen::RustTarget::stable(85, 0)
            .unwrap_or_else(|e| fail(&format!("bindgen rejects Rust 1.85 as target: {e}")));
        let bindings = bindgen::Builder::default()
            .header(wrapper.to_string_lossy())
            .clang_args(&args)
            .rust_target(target)
            .rust_edition(bindgen::RustEdition::Edition2024)
            .use_core()
            .ctypes_prefix("core::ffi")
            .allowlist_function(pattern)
            .allowlist_type(pattern)
            .allowlist_var(pattern)
            .default_enum_style(bindgen::EnumVariation::Consts)
            .prepend_enum_name(false)
            .layout_tests(false)
            .derive_default(true)
            .generate_comments(true)
            .wrap_static_fns(true)
            .wrap_static_fns_path(out.join("static_fns"))
            .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
            .parse_callbacks(Box::new(SkipMacros(replaced_macros(wrapper))))
            .parse_callbacks(Box::new(DoxygenAsText))
            .generate()
            .unwrap_or_else(|e| {
                fail(&format!(
                    "bindgen failed on {} with the tree at {} (sources {}): {e}",
                    wrapper.display(),
                    tree.obj.display(),
                    tree.src.display()
                ))
            });
        bindings
            .write_to_file(out.join("bindings.rs"))
            .unwrap_or_else(|e| fail(&format!("cannot write bindings.rs: {e}")));
    }

    /// The macros `wrapper.h` redefines as typed constants (its
    /// `L4SYS_CONST(type, NAME)`-style lines): bindgen must not emit its own,
    /// wrongly typed, constant for them.
    fn replaced_macros(wrapper: &Path) -> HashSet<String> {
        let text = fs::read_to_string(wrapper)
            .unwrap_or_else(|e| fail(&format!("cannot read {}: {e}", wrapper.display())));
        text.lines()
            .filter(|l| l.starts_with("L4SYS_"))
            .filter_map(|l| {
                let args = l.split_once('(')?.1.rsplit_once(')')?.0;
                Some(args.rsplit(',').next()?.trim().to_string())
            })
            .collect()
    }

    /// bindgen callback: skip the macros in the set.
    #[derive(Debug)]
    struct SkipMacros(HashSet<String>);

    /// bindgen callback: keep the headers' Doxygen comments as preformatted
    /// text. As Markdown they would be mangled, and their indented lines
    /// would become doctests that `cargo test` tries to compile.
    #[derive(Debug)]
    struct DoxygenAsText;

    impl bindgen::callbacks::ParseCallbacks for DoxygenAsText {
        fn process_comment(&self, comment: &str) -> Option<String> {
            let text = comment.trim_matches('\n');
            // A fence longer than any backtick run inside the comment.
            let mut fence = String::from("```");
            while text.contains(fence.as_str()) {
                fence.push('`');
            }
            Some(format!("{fence}text\n{text}\n{fence}"))
        }
    }

    impl bindgen::callbacks::ParseCallbacks for SkipMacros {
        fn will_parse_macro(&self, name: &str) -> bindgen::callbacks::MacroParsingBehavior {
            if self.0.contains(name) {
                bindgen::callbacks::MacroParsingBehavior::Ignore
            } else {
                bindgen::callbacks::MacroParsingBehavior::Default
            }
        }
    }

    /// Compiles bindgen's `static_fns.c` and `shims` into `libl4sys_c.a`.
    fn compile(tree: &Tree, cppflags: &[String], cflags: &[String], shims: &Path, out: &Path) {
        let mut build = cc::Build::new();
        if !cc_overridden() {
            if let Some(cc) = tree.compiler() {
                build.compiler(cc);
            }
        }
        // The tree's preprocessor flags as they are (include paths, defines,
        // -nostdinc with the compiler's own header directory, -include
        // l4/bid_config.h), then its C flags without warnings, debug and
        // optimisation levels (the cargo profile decides those).
        for flag in cppflags
            .iter()
            .chain(cflags.iter().filter(|f| keep_cflag(f)))
        {
            build.flag(flag);
        }
        // The wrappers are one-line calls: they need no stack protector, and
        // without it they need no `__stack_chk_*` symbols (L4Re's own
        // "minimal" flags make the same choice).
        build.flag("-fno-stack-protector");
        // Freestanding programs have no TLS (no libc sets up fs).
        if env::var_os("CARGO_FEATURE_SINGLE_THREADED").is_some() {
            build.define("L4RE_RS_SINGLE_THREADED", None);
        }
        build
            .file(out.join("static_fns.c"))
            .file(shims)
            .include(shims.parent().unwrap_or(Path::new(".")))
            // The tree's headers are not system headers here: with warnings
            // on, every wrapper of a deprecated or unused-parameter inline
            // function would print a few lines on each build.
            .warnings(false)
            .compile("l4sys_c");
    }

    /// Flags for libclang: the tree's preprocessor flags, except that the C
    /// compiler's own header directory is replaced by clang's (`-nostdlibinc`
    /// keeps clang's builtin headers and still drops the host's).
    fn clang_args(tree: &Tree, cppflags: &[String]) -> Vec<String> {
        let mut args = Vec::new();
        let mut it = cppflags.iter();
        while let Some(flag) = it.next() {
            match flag.as_str() {
                "-nostdinc" => args.push("-nostdlibinc".into()),
                "-isystem" => {
                    if let Some(dir) = it.next() {
                        if Path::new(dir).starts_with(&tree.obj) {
                            args.push(flag.clone());
                            args.push(dir.clone());
                        }
                    }
                }
                f if f.starts_with("-fmacro-prefix-map") => {}
                _ => args.push(flag.clone()),
            }
        }
        args
    }

    /// Whether a token of the tree's `L4_CFLAGS` is passed to the C compiler.
    fn keep_cflag(flag: &str) -> bool {
        !(flag.starts_with("-W")
            || flag.starts_with("-g")
            || flag.starts_with("-O")
            || flag.starts_with("-fstack-protector")
            || flag.starts_with("-fno-stack-protector"))
    }

    /// Whether the user chose the C compiler through cc's environment.
    fn cc_overridden() -> bool {
        let target = env::var("TARGET").unwrap_or_default();
        [
            "CC".to_string(),
            "TARGET_CC".into(),
            format!("CC_{target}"),
            format!("CC_{}", target.replace('-', "_")),
        ]
        .iter()
        .any(|v| env::var_os(v).is_some())
    }

    impl Tree {
        /// The whitespace-separated words of an `l4defs.sh.inc` variable.
        fn var(&self, name: &str) -> Vec<String> {
            match self.defs.get(name) {
                Some(v) => v.split_whitespace().map(str::to_owned).collect(),
                None => fail(&format!(
                    "{} defines no {name}: is the L4Re build tree at {} complete?",
                    L4DEFS,
                    self.obj.display()
                )),
            }
        }

        /// The tree's C compiler (`L4_CC`), without a ccache-like launcher.
        fn compiler(&self) -> Option<String> {
            let words = self.var("L4_CC");
            let first = words.first()?;
            let launcher = ["ccache", "sccache", "distcc"]
                .iter()
                .any(|l| Path::new(first).file_name().is_some_and(|n| n == *l));
            if launcher {
                words.get(1).cloned()
            } else {
                Some(first.clone())
            }
        }
    }

    /// Finds the build directory, its source directory and its definitions.
    fn locate() -> Result<Tree, String> {
        let arch = env::var("L4RE_ARCH").unwrap_or_else(|_| DEFAULT_ARCH.to_string());
        let conventional = PathBuf::from(CONVENTIONAL_OBJ.replace("{arch}", &arch));
        let obj = match env::var_os("L4RE_OBJ") {
            Some(dir) => PathBuf::from(dir),
            None if conventional.is_dir() => conventional.clone(),
            None => {
                return Err(format!(
                    "no L4Re build tree found: set L4RE_OBJ to an L4Re build directory \
                     (e.g. {}), or build L4Re there (L4RE_ARCH, default {DEFAULT_ARCH}, \
                     picks the architecture; L4DIR names the source tree if the build \
                     directory does not record it)",
                    conventional.display()
                ));
            }
        };
        let obj = obj.canonicalize().map_err(|e| {
            format!(
                "L4Re build directory {} (from L4RE_OBJ): {e}",
                obj.display()
            )
        })?;

        let config = fs::read_to_string(obj.join(".config")).map_err(|e| {
            format!(
                "{} is no configured L4Re build directory (no .config: {e}); set L4RE_OBJ",
                obj.display()
            )
        })?;
        let tree_arch = config
            .lines()
            .find_map(|l| l.strip_prefix("CONFIG_BUILD_ARCH="))
            .map(|v| v.trim_matches('"').to_string());
        if tree_arch.as_deref() != Some(arch.as_str()) {
            return Err(format!(
                "the L4Re build directory {} is configured for {:?}, not for L4RE_ARCH={arch}",
                obj.display(),
                tree_arch.unwrap_or_default()
            ));
        }
        let target_arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
        let expected = match arch.as_str() {
            "amd64" => "x86_64",
            "x86" => "x86",
            "arm64" => "aarch64",
            "arm" => "arm",
            "riscv" => "riscv64",
            "mips" => "mips64",
            other => other,
        };
        if target_arch != expected {
            return Err(format!(
                "L4Re architecture {arch} needs a Rust target for {expected}, but cargo builds for {target_arch}"
            ));
        }

        let src = source_dir(&obj)?;
        let defs_path = obj.join(L4DEFS);
        let text = fs::read_to_string(&defs_path).map_err(|e| {
            format!(
                "{}: {e}; the L4Re build tree at {} is not built yet (run `make` there)",
                defs_path.display(),
                obj.display()
            )
        })?;
        let defs = parse_sh_defs(&text);
        let probe = obj.join("include/l4/sys/types.h");
        if !probe.exists() {
            return Err(format!(
                "{} is missing: the L4Re build tree is not built yet",
                probe.display()
            ));
        }
        Ok(Tree { obj, src, defs })
    }

    /// The tree's source directory: `L4DIR`, else what the build directory
    /// records (its `source` symlink, else `SRC :=` in its Makefile).
    fn source_dir(obj: &Path) -> Result<PathBuf, String> {
        let candidate = if let Some(dir) = env::var_os("L4DIR") {
            PathBuf::from(dir)
        } else if let Ok(dir) = fs::read_link(obj.join("source")) {
            obj.join(dir)
        } else {
            let makefile = fs::read_to_string(obj.join("Makefile")).unwrap_or_default();
            match makefile.lines().find_map(|l| l.strip_prefix("SRC :=")) {
                Some(dir) => PathBuf::from(dir.trim()),
                None => {
                    return Err(format!(
                        "cannot tell the L4Re source tree of {}: set L4DIR",
                        obj.display()
                    ));
                }
            }
        };
        if !candidate.join("mk/Makeconf").is_file() {
            return Err(format!(
                "{} (from L4DIR or the build directory {}) is no L4Re source tree: no mk/Makeconf",
                candidate.display(),
                obj.display()
            ));
        }
        let src = candidate
            .canonicalize()
            .map_err(|e| format!("{}: {e}", candidate.display()))?;
        // The build directory's headers are links into its own source tree:
        // an L4DIR naming another tree is most likely a mistake.
        if let Ok(recorded) = obj.join("source").canonicalize() {
            if recorded != src {
                println!(
                    "cargo:warning=L4DIR={} differs from the source tree {} recorded by {}",
                    src.display(),
                    recorded.display(),
                    obj.display()
                );
            }
        }
        Ok(src)
    }

    /// Parses the `NAME="value"` lines of `l4defs.sh.inc`.
    fn parse_sh_defs(text: &str) -> HashMap<String, String> {
        let mut defs = HashMap::new();
        for line in text.lines() {
            let Some((name, value)) = line.split_once('=') else {
                continue;
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let Some(value) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) else {
                continue;
            };
            defs.insert(name.to_string(), value.to_string());
        }
        defs
    }

    /// Stops the build with `msg` and the variables that steer the search.
    fn fail(msg: &str) -> ! {
        let arch = env::var("L4RE_ARCH").unwrap_or_else(|_| DEFAULT_ARCH.into());
        let text = format!(
            "l4-sys (feature `fiasco`): {msg}\n  L4RE_OBJ  = {:?}\n  L4DIR     = {:?}\n  \
             L4RE_ARCH = {:?}\n  conventional location: {}",
            env::var_os("L4RE_OBJ"),
            env::var_os("L4DIR"),
            env::var_os("L4RE_ARCH"),
            CONVENTIONAL_OBJ.replace("{arch}", &arch)
        );
        // Not a panic: the message is all there is to say, no backtrace.
        eprintln!("error: {text}");
        std::process::exit(1);
    }
}
