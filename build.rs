// pgrx would otherwise pass `-Wl,--no-gc-sections` through RUSTFLAGS for the library
// build only, which makes `cargo pgrx test` compile the whole dependency tree twice.
// Giving the flag to the cdylib link alone keeps one build (see README, "Building").
fn main() {
    println!("cargo::rustc-cdylib-link-arg=-Wl,--no-gc-sections");
}
