//! Tells the tests whether they were built optimised (the `sim` profile),
//! so that the long runs (hundreds of seeds) run there and are skipped, with
//! a reason, in the unoptimised dev build that `cargo test --workspace`
//! uses, where one seed takes ten times longer.

fn main() {
    println!("cargo:rustc-check-cfg=cfg(sim_optimized)");
    println!("cargo:rerun-if-changed=build.rs");
    let level = std::env::var("OPT_LEVEL").unwrap_or_default();
    if level != "0" {
        println!("cargo:rustc-cfg=sim_optimized");
    }
}
