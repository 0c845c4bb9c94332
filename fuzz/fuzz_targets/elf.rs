//! ELF validation: `loader::elf::plan` and `plan_dynamic` over arbitrary
//! files. A plan that validates must describe a loadable layout.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loader::elf::{MIN_ADDR, PAGE, USER_END, plan, plan_dynamic};

const PIE_BASE: u64 = 0x5555_5555_4000;

fn check(p: &loader::elf::Plan) {
    let mut end = 0;
    for r in &p.regions {
        assert_eq!(r.start % PAGE, 0, "{p:?}");
        assert_eq!(r.size % PAGE, 0, "{p:?}");
        assert!(r.size > 0, "{p:?}");
        assert!(r.start >= end, "regions overlap or are unsorted: {p:?}");
        assert!(r.start >= MIN_ADDR, "{p:?}");
        end = r.start.checked_add(r.size).expect("region end overflows");
        assert!(end <= USER_END, "{p:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = plan(data, PIE_BASE) {
        check(&p);
    }
    if let Ok(p) = plan_dynamic(data, PIE_BASE) {
        check(&p);
    }
});
