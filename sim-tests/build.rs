//! Tells the tests whether they were built optimised (the `sim` profile),
//! so that the long runs (hundreds of seeds) run there and are skipped, with
//! a reason, in the unoptimised dev build that `cargo test --workspace`
//! uses, where one seed takes ten times longer.
//!
//! Also compiles `src/ld.c`, HINCRBYFLOAT's long-double arithmetic for the
//! simulated Redis (see there for why it is C).

fn main() {
    println!("cargo:rustc-check-cfg=cfg(sim_optimized)");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=src/ld.c");
    let level = std::env::var("OPT_LEVEL").unwrap_or_default();
    if level != "0" {
        println!("cargo:rustc-cfg=sim_optimized");
    }
    cc::Build::new().file("src/ld.c").compile("em_ld");
}
