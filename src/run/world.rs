//! Data-parallel launch detection: is this process one rank of several started by an MPI
//! launcher (`mpirun`, `mpiexec`, `srun --mpi=...`), and if so, its [`Collective`].
//!
//! Launchers announce the rank and the world size in the environment before MPI is initialised,
//! so a binary built without the `mpi` feature can still tell that it was started as one of N
//! ranks, and refuse, instead of silently training N independent copies of the model into the
//! same output directory. [`detect_launch`] reads the variables (a pure function, tested below);
//! [`collective_from_env`] acts on them.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::{bail, Context};
use rnn_train::collective::Collective;

/// The launcher that started this process, as told by its environment variables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    /// Open MPI's `mpirun`/`mpiexec` (`OMPI_COMM_WORLD_RANK`, `OMPI_COMM_WORLD_SIZE`).
    OpenMpi,
    /// A PMI-1/PMI-2 launcher: MPICH's and Intel MPI's Hydra `mpiexec`, `srun --mpi=pmi2`
    /// (`PMI_RANK`, `PMI_SIZE`).
    Pmi,
    /// A PMIx launcher (`PMIX_RANK`), e.g. `srun --mpi=pmix` or PRRTE's `prterun`; the size
    /// comes from the first of `PMIX_SIZE`, `SLURM_STEP_NUM_TASKS`, `SLURM_NTASKS` that is set.
    Pmix,
}

impl Launcher {
    /// How the launcher is usually started, for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Launcher::OpenMpi => "Open MPI's mpirun",
            Launcher::Pmi => "a PMI launcher (MPICH/Intel MPI mpiexec, srun --mpi=pmi2)",
            Launcher::Pmix => "a PMIx launcher (srun --mpi=pmix, prterun)",
        }
    }
}

/// What the launcher's environment says about this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// Who started the process.
    pub launcher: Launcher,
    /// This process's rank, in `0..world_size` when the size is known.
    pub rank: usize,
    /// The number of ranks; `None` for a PMIx launch that exports no size variable (MPI then
    /// tells).
    pub world_size: Option<usize>,
    /// The variable the size came from, for messages (`"OMPI_COMM_WORLD_SIZE"`, ...).
    pub size_var: &'static str,
}

fn parse_var(env: &HashMap<String, String>, name: &str) -> anyhow::Result<Option<usize>> {
    match env.get(name) {
        None => Ok(None),
        Some(v) => v.trim().parse::<usize>().map(Some).with_context(|| {
            format!("the launcher's environment variable {name}={v:?} is not a whole number")
        }),
    }
}

/// Reads the launcher's variables from `env` (the process environment in
/// [`collective_from_env`]): `Ok(None)` when no MPI launcher started this process.
///
/// Slurm's own `SLURM_NTASKS` is read only for a PMIx launch (`srun --mpi=pmix` sets
/// `PMIX_RANK`): inside an `sbatch` script it describes the allocation, not this process, and
/// `srun` without `--mpi` starts independent processes that cannot communicate.
///
/// Errors name the variable at fault: a value that is not a number, a size of 0, a rank not
/// below the size, a rank without a size.
pub fn detect_launch(env: &HashMap<String, String>) -> anyhow::Result<Option<Launch>> {
    let found = if let Some(rank) = parse_var(env, "OMPI_COMM_WORLD_RANK")? {
        let size = parse_var(env, "OMPI_COMM_WORLD_SIZE")?.with_context(|| {
            "OMPI_COMM_WORLD_RANK is set but OMPI_COMM_WORLD_SIZE is not: a broken Open MPI launch"
        })?;
        (Launcher::OpenMpi, rank, Some(size), "OMPI_COMM_WORLD_SIZE")
    } else if let Some(rank) = parse_var(env, "PMI_RANK")? {
        let size = parse_var(env, "PMI_SIZE")?.with_context(|| {
            "PMI_RANK is set but PMI_SIZE is not: a broken PMI launch (MPICH mpiexec, srun --mpi=pmi2)"
        })?;
        (Launcher::Pmi, rank, Some(size), "PMI_SIZE")
    } else if let Some(rank) = parse_var(env, "PMIX_RANK")? {
        let mut size = (None, "PMIX_SIZE");
        for var in ["PMIX_SIZE", "SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"] {
            if let Some(n) = parse_var(env, var)? {
                size = (Some(n), var);
                break;
            }
        }
        (Launcher::Pmix, rank, size.0, size.1)
    } else {
        return Ok(None);
    };
    let (launcher, rank, world_size, size_var) = found;
    if let Some(n) = world_size {
        if n == 0 {
            bail!("the launcher's {size_var} is 0: a world needs at least one rank");
        }
        if rank >= n {
            bail!(
                "the launcher says this is rank {rank} of {size_var}={n}: a rank must be below \
                 the size"
            );
        }
    }
    Ok(Some(Launch {
        launcher,
        rank,
        world_size,
        size_var,
    }))
}

/// The error of a binary built without the `mpi` feature that finds itself one of several ranks.
pub fn refusal(launch: &Launch) -> anyhow::Error {
    let ranks = match launch.world_size {
        Some(n) => format!("one of {n} ranks ({}={n})", launch.size_var),
        None => "one of several ranks (PMIX_RANK is set)".to_string(),
    };
    let copies = match launch.world_size {
        Some(n) => format!("{n}"),
        None => "several".to_string(),
    };
    anyhow::anyhow!(
        "this process is rank {} and {ranks} started by {}, but this `rnn` binary was built \
         without the `mpi` feature: the ranks cannot communicate, so they would train {copies} \
         independent copies of the model into the same output directory. Rebuild with \
         `cargo build --release --features mpi` (needs an MPI library such as libopenmpi-dev, \
         and libclang), or run a single process without the launcher",
        launch.rank,
        launch.launcher.describe(),
    )
}

/// This process's data-parallel group when an MPI launcher started it as one of several ranks.
///
/// `Ok(None)`: no launcher, or a world of one (train as a single process). With more ranks and
/// the `mpi` feature: MPI is initialised (once per process; the returned handle owns it and
/// finalises it when the last clone is dropped) and its world size must equal the launcher's,
/// which catches a binary linked against another MPI library than the launcher's (each process
/// would then be a world of one). Without the feature: [`refusal`]. After a successful run, call
/// [`all_done`] on every rank before dropping the handle.
pub fn collective_from_env() -> anyhow::Result<Option<Arc<dyn Collective>>> {
    // Variables that are not UTF-8 cannot be launcher variables; skip them rather than panic.
    let env: HashMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    match detect_launch(&env)? {
        None => Ok(None),
        Some(launch) if launch.world_size == Some(1) => Ok(None),
        Some(launch) => connect(&launch),
    }
}

/// Waits, with no time limit, until every rank has called it: call it on every rank after its
/// work succeeded (rank 0's test scores and files included), before the handle is dropped.
///
/// Dropping an MPI handle waits only `RNN_MPI_EXIT_WAIT_S` seconds (default 120) for the other
/// ranks, so that a rank whose run failed does not wait forever for ranks blocked in an
/// all-reduce it will never join. Ranks that finish early (data-parallel ranks other than 0
/// end after training) must therefore not reach that drop long before rank 0: this barrier
/// holds them until rank 0 is done too. A rank that fails skips it and drops its handle, and the
/// job ends within the wait.
pub fn all_done(c: &dyn Collective) -> anyhow::Result<()> {
    let mut token = [0.0f64];
    c.all_reduce_sum_f64(&mut token)
        .context("waiting for every data-parallel rank to finish")?;
    Ok(())
}

#[cfg(feature = "mpi")]
fn connect(launch: &Launch) -> anyhow::Result<Option<Arc<dyn Collective>>> {
    use rnn_train::collective::MpiCollective;

    let c = MpiCollective::init().context("initialising MPI for data-parallel training")?;
    match launch.world_size {
        Some(n) if c.world_size() != n => bail!(
            "the launcher ({}) started {n} ranks ({}={n}) but MPI sees a world of {}: this \
             binary's MPI library ({}) is not the launcher's; build with the MPI library whose \
             mpirun you use",
            launch.launcher.describe(),
            launch.size_var,
            c.world_size(),
            MpiCollective::library_version()
                .lines()
                .next()
                .unwrap_or_default()
        ),
        _ if c.rank() != launch.rank => bail!(
            "the launcher says this is rank {} but MPI says rank {}",
            launch.rank,
            c.rank()
        ),
        _ if c.world_size() == 1 => Ok(None),
        _ => Ok(Some(Arc::new(c))),
    }
}

#[cfg(not(feature = "mpi"))]
fn connect(launch: &Launch) -> anyhow::Result<Option<Arc<dyn Collective>>> {
    Err(refusal(launch))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn no_launcher_variables_means_no_launch() {
        assert_eq!(detect_launch(&env(&[("PATH", "/bin")])).unwrap(), None);
        // An sbatch script's allocation, or srun without --mpi: not a rank of an MPI world.
        let slurm = env(&[("SLURM_NTASKS", "4"), ("SLURM_PROCID", "0")]);
        assert_eq!(detect_launch(&slurm).unwrap(), None);
    }

    #[test]
    fn each_launcher_is_recognised() {
        let l = detect_launch(&env(&[
            ("OMPI_COMM_WORLD_RANK", "1"),
            ("OMPI_COMM_WORLD_SIZE", "2"),
            // Open MPI wins over the PMIx variables it also exports.
            ("PMIX_RANK", "1"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            (l.launcher, l.rank, l.world_size),
            (Launcher::OpenMpi, 1, Some(2))
        );
        let l = detect_launch(&env(&[("PMI_RANK", "3"), ("PMI_SIZE", "4")]))
            .unwrap()
            .unwrap();
        assert_eq!(
            (l.launcher, l.rank, l.world_size),
            (Launcher::Pmi, 3, Some(4))
        );
        let l = detect_launch(&env(&[
            ("PMIX_RANK", "2"),
            ("SLURM_STEP_NUM_TASKS", "8"),
            ("SLURM_NTASKS", "16"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            (l.launcher, l.rank, l.world_size, l.size_var),
            (Launcher::Pmix, 2, Some(8), "SLURM_STEP_NUM_TASKS")
        );
        let l = detect_launch(&env(&[("PMIX_RANK", "0")])).unwrap().unwrap();
        assert_eq!((l.launcher, l.world_size), (Launcher::Pmix, None));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let msg = |pairs: &[(&str, &str)]| format!("{:#}", detect_launch(&env(pairs)).unwrap_err());
        let m = msg(&[("OMPI_COMM_WORLD_RANK", "x"), ("OMPI_COMM_WORLD_SIZE", "2")]);
        assert!(m.contains("OMPI_COMM_WORLD_RANK=\"x\""), "{m}");
        let m = msg(&[("OMPI_COMM_WORLD_RANK", "0")]);
        assert!(m.contains("OMPI_COMM_WORLD_SIZE is not"), "{m}");
        let m = msg(&[("PMI_RANK", "2"), ("PMI_SIZE", "2")]);
        assert!(m.contains("rank 2 of PMI_SIZE=2"), "{m}");
        let m = msg(&[("PMIX_RANK", "0"), ("SLURM_NTASKS", "0")]);
        assert!(m.contains("SLURM_NTASKS is 0"), "{m}");
    }

    #[test]
    fn the_refusal_says_what_would_happen_and_how_to_rebuild() {
        let launch = Launch {
            launcher: Launcher::OpenMpi,
            rank: 1,
            world_size: Some(2),
            size_var: "OMPI_COMM_WORLD_SIZE",
        };
        let m = refusal(&launch).to_string();
        for part in [
            "rank 1 and one of 2 ranks (OMPI_COMM_WORLD_SIZE=2)",
            "mpirun",
            "without the `mpi` feature",
            "train 2 independent copies",
            "cargo build --release --features mpi",
        ] {
            assert!(m.contains(part), "{part:?} missing from: {m}");
        }
    }

    #[test]
    fn all_done_returns_once_every_rank_has_called_it() {
        use rnn_train::collective::ThreadCollective;
        let (tx, rx) = std::sync::mpsc::channel();
        let mut ranks = ThreadCollective::group(2).unwrap().into_iter();
        let (r0, r1) = (ranks.next().unwrap(), ranks.next().unwrap());
        let waiter = std::thread::spawn(move || {
            all_done(&r1).unwrap();
            tx.send(()).unwrap();
        });
        // Rank 1 waits while rank 0 is still busy...
        assert!(rx
            .recv_timeout(std::time::Duration::from_millis(200))
            .is_err());
        // ...and returns once rank 0 is done.
        all_done(&r0).unwrap();
        rx.recv_timeout(std::time::Duration::from_secs(10)).unwrap();
        waiter.join().unwrap();
    }

    #[cfg(not(feature = "mpi"))]
    #[test]
    fn without_the_mpi_feature_a_multi_rank_launch_is_refused() {
        let launch = detect_launch(&env(&[("PMI_RANK", "0"), ("PMI_SIZE", "3")]))
            .unwrap()
            .unwrap();
        let m = connect(&launch).err().unwrap().to_string();
        assert!(m.contains("train 3 independent copies"), "{m}");
    }
}
