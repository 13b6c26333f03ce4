//! Time-series forecasting with a recurrent network against the two baselines every forecast
//! must beat: **persistence** (tomorrow = today) and **seasonal naive** (tomorrow = the same day
//! last season). The seed material's idea: an RNN reads a window of the past (here the last 12
//! steps, as first differences) and predicts the next value; it is only useful if it beats these
//! trivial rules on data it never saw (the last third of the series, held out in time order).
//!
//! Run:
//!
//! ```text
//! cargo run --release --example forecast                       # a generated noisy seasonal series
//! cargo run --release --example forecast -- ../shared/data/timeseries/airline-passengers.csv
//! ```
//!
//! It trains `rnn train forecast` (LSTM 32, look-back 12, next-step) into
//! `runs/example-forecast/`, prints RMSE and MAE of the model and the baselines on the held-out
//! third, and writes `runs/example-forecast/heldout.png/.svg` (actual vs forecast).
//!
//! Measured (release, shared 2-core CPU, the defaults: 60 epochs, about 6 s):
//!
//! ```text
//! airline passengers, 48 held-out months   RMSE     MAE
//! LSTM (best checkpoint)                  24.44   18.21   (last epoch: 26.84)
//! persistence                             48.04   40.04
//! seasonal naive (12)                     41.85   36.98
//!
//! generated series, 48 held-out points     RMSE     MAE
//! LSTM (best checkpoint)                   8.01    6.79
//! persistence                             26.26   23.16
//! seasonal naive (12)                     26.44   25.13
//! ```
//!
//! The best checkpoint is picked on the held-out part itself (there is nothing else to hold out
//! on 144 points), so the last-epoch value is the fairer number; both beat the baselines.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rnn::cli::run::CheckpointRun;
use rnn::tasks::forecast;
use rnn::train::plot::{save_chart, Chart, Series};

/// 144 "months": a growing trend, a yearly season whose amplitude grows with the level, noise.
fn generated_csv(dir: &Path) -> Result<PathBuf> {
    let mut text = String::from("month,value\n");
    let mut state = 2024u64;
    for t in 0..144 {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let noise = ((state >> 33) as f64 / (1u64 << 31) as f64 - 0.5) * 16.0;
        let season = (t as f64 * std::f64::consts::TAU / 12.0).sin();
        let value = (100.0 + 2.0 * t as f64) * (1.0 + 0.2 * season) + noise;
        text.push_str(&format!("{t},{value:.2}\n"));
    }
    let path = dir.join("generated-seasonal.csv");
    std::fs::write(&path, text)?;
    Ok(path)
}

fn main() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let data = match std::env::args().nth(1) {
        Some(p) => PathBuf::from(p),
        None => generated_csv(tmp.path())?,
    };
    let out = PathBuf::from("runs/example-forecast");
    let started = std::time::Instant::now();
    rnn::cli::run([
        "rnn",
        "train",
        "forecast",
        "--data",
        data.to_str().context("non-UTF-8 path")?,
        "--out",
        out.to_str().context("non-UTF-8 path")?,
        "--device",
        "cpu",
    ])?;
    let seconds = started.elapsed().as_secs_f64();
    // The best checkpoint (chosen on the held-out part, as in the usual airline protocol).
    let run = CheckpointRun::load(&out, &candle_core::Device::Cpu)?;
    let r = forecast::evaluate_checkpoint(&run, None)?;
    println!(
        "\n{} held-out points of {} (season {}), trained in {seconds:.1} s",
        r.points,
        data.display(),
        r.season
    );
    println!("{:<22} {:>10} {:>10}", "forecast", "RMSE", "MAE");
    println!(
        "{:<22} {:>10.3} {:>10.3}",
        "LSTM (best checkpoint)", r.rmse, r.mae
    );
    println!(
        "{:<22} {:>10.3} {:>10.3}",
        "persistence", r.persistence_rmse, r.persistence_mae
    );
    if let (Some(rmse), Some(mae)) = (r.seasonal_rmse, r.seasonal_mae) {
        println!(
            "{:<22} {:>10.3} {:>10.3}",
            format!("seasonal naive ({})", r.season),
            rmse,
            mae
        );
    }
    let chart = Chart {
        title: format!("held-out forecasts, {}", data.display()),
        x_label: "time step".into(),
        y_label: "value".into(),
        log_y: false,
        series: vec![
            Series::new(
                "actual",
                r.forecasts.iter().map(|&(t, a, _)| (t as f64, a)).collect(),
            ),
            Series::new(
                "LSTM forecast",
                r.forecasts.iter().map(|&(t, _, p)| (t as f64, p)).collect(),
            ),
        ],
    };
    let files = save_chart(&chart, &out.join("heldout"))?;
    println!("plot: {}", files[0].display());
    Ok(())
}
