//! With the `cuda` feature: compiles the fused recurrence's kernels (`cuda/recurrence.cu`) with
//! nvcc into one fatbin, embedded by `src/ops/cuda/`: machine code for the GPU's compute
//! capability (`CUDA_COMPUTE_CAP`, default 90 = H100/H200) plus PTX of the same capability for
//! newer GPUs. The PTX is built at build time by the nvcc found here, so it must be no newer than
//! the driver of the machine it runs on (the GPU kit uses nvcc 13.0 for driver 580). `ptxas -v`
//! runs on every build; a kernel that spills registers fails the build.
//!
//! nvcc: `NVCC`, else `$CUDA_HOME/bin/nvcc` / `$CUDA_PATH/bin/nvcc`, else `nvcc` on `PATH`.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=cuda/recurrence.cu");
    println!("cargo:rerun-if-changed=cuda/recurrence.cuh");
    for var in ["NVCC", "CUDA_HOME", "CUDA_PATH", "CUDA_COMPUTE_CAP"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    let cap = std::env::var("CUDA_COMPUTE_CAP")
        .ok()
        .map(|c| c.trim().replace('.', ""))
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "90".to_string());
    if !cap.chars().all(|c| c.is_ascii_digit()) {
        panic!("CUDA_COMPUTE_CAP={cap}: expected a number such as 90");
    }
    let nvcc = std::env::var_os("NVCC")
        .map(PathBuf::from)
        .or_else(|| {
            ["CUDA_HOME", "CUDA_PATH"].iter().find_map(|v| {
                let p = PathBuf::from(std::env::var_os(v)?).join("bin/nvcc");
                p.exists().then_some(p)
            })
        })
        .unwrap_or_else(|| PathBuf::from("nvcc"));
    let fatbin = out_dir.join("recurrence.fatbin");
    let output = Command::new(&nvcc)
        .args(["-O3", "-std=c++14", "-fatbin", "-Xptxas", "-v"])
        .arg(format!("-gencode=arch=compute_{cap},code=sm_{cap}"))
        .arg(format!("-gencode=arch=compute_{cap},code=compute_{cap}"))
        .arg("-o")
        .arg(&fatbin)
        .arg("cuda/recurrence.cu")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "the `cuda` feature compiles cuda/recurrence.cu with nvcc, but `{}` could not be \
                 started ({e}); install the CUDA toolkit or set NVCC",
                nvcc.display()
            )
        });
    let log = String::from_utf8_lossy(&output.stderr).into_owned();
    std::fs::write(out_dir.join("ptxas.log"), &log).expect("write ptxas.log");
    if !output.status.success() {
        panic!("nvcc failed on cuda/recurrence.cu:\n{log}");
    }
    let spills: Vec<&str> = log
        .lines()
        .filter(|l| {
            l.contains("spill") && !l.contains(" 0 bytes spill stores, 0 bytes spill loads")
        })
        .collect();
    if !spills.is_empty() {
        panic!(
            "cuda/recurrence.cu spills registers (ptxas -v):\n{}",
            spills.join("\n")
        );
    }
    let version = Command::new(&nvcc)
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .last()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default();
    println!("cargo:rustc-env=RNN_CUDA_KERNELS_NVCC={version}");
    println!("cargo:rustc-env=RNN_CUDA_KERNELS_CAP={cap}");
}
