//! Compiles `src/harness.cpp`, which includes the CUDA kernels' per-element header
//! (`crates/rnn-core/cuda/recurrence.cuh`) with the host C++ compiler.

fn main() {
    let header_dir = "../rnn-core/cuda";
    println!("cargo:rerun-if-changed=src/harness.cpp");
    println!("cargo:rerun-if-changed={header_dir}/recurrence.cuh");
    cc::Build::new()
        .cpp(true)
        .file("src/harness.cpp")
        .include(header_dir)
        .flag_if_supported("-std=c++14")
        .flag_if_supported("-Wall")
        .flag_if_supported("-Wextra")
        // Plain IEEE arithmetic, as the Rust CPU op computes it.
        .flag_if_supported("-ffp-contract=off")
        .opt_level(2)
        .compile("rnn_cuda_host");
}
