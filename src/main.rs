//! The `sluice` binary: parse the command line, run it, exit with its code.

/// mimalloc instead of glibc malloc: records built on the data-plane threads are freed on the
/// audit writer's thread, and glibc paid arena locks (futex) and heap growth (mprotect) for it.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    std::process::exit(sluice::cli::run());
}
