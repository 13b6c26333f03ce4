//! Run-time choices for checks that must run on any device and from any folder: which device a
//! test uses (`RNN_TEST_DEVICE`) and where committed files such as the PyTorch fixtures are
//! (`RNN_FIXTURES_DIR`, else a path relative to the repository or the executable).
//!
//! A test executable built on one machine can then be carried to a GPU machine and run there:
//!
//! ```sh
//! RNN_TEST_DEVICE=cuda RNN_TEST_REQUIRE_DEVICE=1 RNN_FIXTURES_DIR=kit/fixtures kit/bin/pytorch_parity
//! ```
//!
//! On CUDA, f32 matrix products run in full f32 (TF32 off): [`device`] switches Candle's reduced
//! precision off, so the tests' 1e-5 tolerance against PyTorch means what it says.

use candle_core::Device;
use std::path::{Path, PathBuf};

/// Environment variable naming the device of a test run: `cpu` (default), `cuda`, `cuda:N`,
/// `metal` or `metal:N`.
pub const DEVICE_VAR: &str = "RNN_TEST_DEVICE";

/// Environment variable that turns "no such device here" from a skip into a failure (`1`), for
/// runs on a machine that must have the device.
pub const REQUIRE_VAR: &str = "RNN_TEST_REQUIRE_DEVICE";

/// Environment variable naming the folder of the committed fixtures (the folder holding
/// `pytorch/cases.json`).
pub const FIXTURES_VAR: &str = "RNN_FIXTURES_DIR";

/// What [`DEVICE_VAR`] asks for, before any device is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRequest {
    /// The spec as given (`cpu` when the variable is unset or empty).
    pub spec: String,
    /// Whether [`REQUIRE_VAR`] is `1`.
    pub required: bool,
}

impl DeviceRequest {
    /// Reads [`DEVICE_VAR`] and [`REQUIRE_VAR`].
    pub fn from_env() -> Self {
        let spec = std::env::var(DEVICE_VAR)
            .ok()
            .map(|s| s.trim().to_ascii_lowercase())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "cpu".to_string());
        let required = std::env::var(REQUIRE_VAR).is_ok_and(|v| v.trim() == "1");
        Self { spec, required }
    }

    /// Opens the device, or says why the test is skipped.
    ///
    /// `Ok(None)` means "skip": the build has the device kind but this machine has no such device
    /// (and the device is not required). A spec this build cannot serve (a kind not compiled in,
    /// a typo) or a required device that cannot be opened is an `Err`: those are mistakes in the
    /// run's set-up that a skip would hide.
    pub fn open(&self) -> Result<Option<Device>, String> {
        let kind = self.spec.split(':').next().unwrap_or_default();
        let compiled = match kind {
            "cpu" => true,
            "cuda" => cfg!(feature = "cuda"),
            "metal" => cfg!(feature = "metal"),
            _ => false,
        };
        match crate::device::select(&self.spec) {
            Ok(device) => {
                if device.is_cuda() {
                    // Full-precision f32 GEMMs (no TF32), as PyTorch with TF32 off.
                    candle_core::cuda::set_gemm_reduced_precision_f32(false);
                }
                Ok(Some(device))
            }
            Err(e) if !compiled => Err(format!("{DEVICE_VAR}={}: {e}", self.spec)),
            Err(e) if self.required => Err(format!(
                "{DEVICE_VAR}={} with {REQUIRE_VAR}=1, but the device cannot be opened: {e}",
                self.spec
            )),
            Err(e) => {
                let what = if kind == "cuda" { "CUDA" } else { "Metal" };
                eprintln!(
                    "skipped: no {what} device ({DEVICE_VAR}={}): {e}",
                    self.spec
                );
                Ok(None)
            }
        }
    }
}

/// The device a test runs on, from [`DEVICE_VAR`] (default: the CPU); `None` when the test is to
/// be skipped because this machine lacks the device (a line saying so goes to stderr).
///
/// Panics on a set-up mistake: a device kind this build was not compiled for, an unknown spec, or
/// a device required by [`REQUIRE_VAR`] that cannot be opened.
pub fn device() -> Option<Device> {
    DeviceRequest::from_env()
        .open()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Finds a committed folder at run time, in this order:
///
/// 1. the environment variable `var`, when set (it must name an existing folder);
/// 2. `repo_relative` under the crate folder that cargo names in `CARGO_MANIFEST_DIR` while
///    running tests;
/// 3. `kit_name` beside the running executable or beside its folder (`bin/../fixtures`, the
///    GPU kit's layout);
/// 4. `repo_relative` under any folder above the executable (a build inside the repository);
/// 5. `repo_relative` under `compile_time_manifest_dir` (the crate folder at build time).
///
/// `repo_relative` is relative to the crate that owns the files, e.g. `tests/fixtures`.
pub fn locate_dir(
    var: &str,
    repo_relative: &str,
    kit_name: &str,
    compile_time_manifest_dir: &str,
) -> Result<PathBuf, String> {
    if let Some(dir) = std::env::var_os(var).filter(|v| !v.is_empty()) {
        let dir = PathBuf::from(dir);
        return if dir.is_dir() {
            Ok(dir)
        } else {
            Err(format!("{var}={}: no such folder", dir.display()))
        };
    }
    let mut tried = Vec::new();
    let mut candidates = Vec::new();
    if let Some(m) = std::env::var_os("CARGO_MANIFEST_DIR") {
        candidates.push(PathBuf::from(m).join(repo_relative));
    }
    if let Some(exe_dir) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_path_buf))
    {
        candidates.push(exe_dir.join(kit_name));
        if let Some(up) = exe_dir.parent() {
            candidates.push(up.join(kit_name));
        }
        let crate_name = Path::new(compile_time_manifest_dir)
            .file_name()
            .map(Path::new)
            .unwrap_or(Path::new(""));
        for up in exe_dir.ancestors().skip(1) {
            candidates.push(up.join("crates").join(crate_name).join(repo_relative));
            candidates.push(up.join(repo_relative));
        }
    }
    candidates.push(Path::new(compile_time_manifest_dir).join(repo_relative));
    for c in candidates {
        if c.is_dir() {
            return Ok(c);
        }
        tried.push(c.display().to_string());
    }
    Err(format!(
        "cannot find the folder `{repo_relative}`: set {var}; looked in {}",
        tried.join(", ")
    ))
}

/// The folder of rnn-core's committed fixtures (holding `pytorch/cases.json`), found at run time
/// by [`locate_dir`] with [`FIXTURES_VAR`]; panics with the places it looked when it is missing.
pub fn fixtures_dir() -> PathBuf {
    locate_dir(
        FIXTURES_VAR,
        "tests/fixtures",
        "fixtures",
        env!("CARGO_MANIFEST_DIR"),
    )
    .unwrap_or_else(|e| panic!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(spec: &str, required: bool) -> DeviceRequest {
        DeviceRequest {
            spec: spec.into(),
            required,
        }
    }

    #[test]
    fn cpu_opens_everywhere() {
        assert!(request("cpu", true).open().unwrap().unwrap().is_cpu());
    }

    #[test]
    fn kinds_not_compiled_in_and_typos_are_errors_not_skips() {
        if !cfg!(feature = "cuda") {
            let e = request("cuda", false).open().unwrap_err();
            assert!(
                e.contains("RNN_TEST_DEVICE=cuda") && e.contains("--features cuda"),
                "{e}"
            );
        }
        let e = request("tpu", false).open().unwrap_err();
        assert!(e.contains("tpu"), "{e}");
    }

    #[test]
    fn a_missing_device_is_a_skip_unless_required() {
        // With the kind compiled in and no such device on this machine: skip, or fail when
        // required. (Without the feature there is nothing to probe.)
        if cfg!(feature = "cuda") && Device::new_cuda(0).is_err() {
            assert!(request("cuda", false).open().unwrap().is_none());
            let e = request("cuda", true).open().unwrap_err();
            assert!(e.contains("RNN_TEST_REQUIRE_DEVICE=1"), "{e}");
        }
    }

    #[test]
    fn fixtures_are_found_at_run_time_and_a_miss_says_where_it_looked() {
        let d = fixtures_dir();
        assert!(d.join("pytorch/cases.json").is_file(), "{}", d.display());
        let tmp = std::env::temp_dir();
        let found = locate_dir(
            "RNN_TESTING_UNIT_TEST_DIR_UNSET",
            "tests/fixtures",
            "fixtures",
            env!("CARGO_MANIFEST_DIR"),
        )
        .unwrap();
        assert_eq!(found.canonicalize().unwrap(), d.canonicalize().unwrap());
        let e = locate_dir(
            "RNN_TESTING_UNIT_TEST_DIR_UNSET",
            "no/such/folder",
            "no-such-kit-folder",
            tmp.to_str().unwrap(),
        )
        .unwrap_err();
        assert!(
            e.contains("RNN_TESTING_UNIT_TEST_DIR_UNSET") && e.contains("no/such/folder"),
            "{e}"
        );
    }
}
