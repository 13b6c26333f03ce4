//! The seed and counter protocol of every random source in the workspace, in one place.
//!
//! A random source (a dropout layer, teacher forcing, fresh parameters) holds a `u64` seed and,
//! where it draws repeatedly, a call counter. Draw `k` of the source with seed `s` comes from
//! [`rng`]`(s, k)`: ChaCha8 seeded with `s` on stream `k`. A model saves its counters in a
//! checkpoint ([`Stochastic::rng_counters`]) and restores them on resume, so the resumed run draws
//! exactly the numbers the uninterrupted run would have.
//!
//! Seeds of the sources inside one model are derived from the model's seed by the functions here;
//! each is a fixed formula that saved checkpoints and tests depend on, so none may change.

use candle_core::Result;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The SplitMix64 increment, `2^64 / φ` rounded to odd.
pub const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// The SplitMix64 finaliser (Stafford's Mix13): a bijection of `u64` that spreads every input
/// bit over the output.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One SplitMix64 output for state `z`: `mix64(z + GOLDEN_GAMMA)`. Derives unrelated seeds from
/// small integers or from one another (`splitmix64(seed ^ splitmix64(i))`).
pub fn splitmix64(z: u64) -> u64 {
    mix64(z.wrapping_add(GOLDEN_GAMMA))
}

/// The seed of random source `stream` of a model seeded with `seed`:
/// `mix64(seed ^ (stream + 1) * GOLDEN_GAMMA)`, so the sources of one model draw unrelated numbers.
pub fn derive_seed(seed: u64, stream: u64) -> u64 {
    mix64(seed ^ stream.wrapping_add(1).wrapping_mul(GOLDEN_GAMMA))
}

/// The seed of epoch `epoch`'s data order in a run seeded with `seed`:
/// `seed * GOLDEN_GAMMA + epoch * spread`. Every task shuffles with this; `spread` is the task's
/// fixed odd constant ([`EPOCH_SPREAD`] where the task has no reason for another), kept per task
/// because it fixes the batch order of the task's published runs.
pub fn epoch_seed(seed: u64, epoch: u64, spread: u64) -> u64 {
    seed.wrapping_mul(GOLDEN_GAMMA)
        .wrapping_add(epoch.wrapping_mul(spread))
}

/// The default `spread` of [`epoch_seed`]: consecutive epochs get consecutive seeds, which
/// ChaCha8's seed expansion turns into unrelated streams.
pub const EPOCH_SPREAD: u64 = 1;

/// The seed of layer `layer`'s inter-layer dropout in [`crate::Rnn`] with dropout seed `seed`:
/// `seed ^ layer.rotate_left(32)`.
pub fn layer_seed(seed: u64, layer: usize) -> u64 {
    seed ^ (layer as u64).rotate_left(32)
}

/// The seed of mask kind `kind` (see `crate::regularize`) for index `index` (a layer or a
/// layer-direction) of an [`crate::Rnn`] with dropout seed `seed`:
/// `derive_seed(seed, (kind << 32) | index)`. Draw `k` is [`rng`]`(mask_seed(..), k)` with `k` the
/// layer's dropout call counter.
pub fn mask_seed(seed: u64, kind: u64, index: usize) -> u64 {
    derive_seed(seed, (kind << 32) | index as u64)
}

/// The stream of a named random source (FNV-1a of the name), e.g. one parameter of
/// [`crate::init::seeded_var_builder`].
pub fn name_stream(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The generator of draw `stream` of the source seeded with `seed`: ChaCha8 seeded with `seed`,
/// on stream `stream`.
pub fn rng(seed: u64, stream: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(stream);
    rng
}

/// Models whose training forward draws random numbers (dropout). The trainer seeds them at the
/// start of a run and saves / restores the counters in checkpoints, so a resumed run draws the
/// same masks as an uninterrupted one.
pub trait Stochastic {
    /// Reseeds every random source of the model and restarts its sequences.
    fn set_seed(&mut self, seed: u64);
    /// The position of every random source (e.g. [`crate::dropout::SeededDropout::calls`] and
    /// [`crate::Rnn::dropout_calls`]), in a fixed order.
    fn rng_counters(&self) -> Vec<u64>;
    /// Restores what [`Stochastic::rng_counters`] returned; an error if the count differs.
    fn set_rng_counters(&self, counters: &[u64]) -> Result<()>;
}

/// Checks `counters` has `expected` entries (for [`Stochastic::set_rng_counters`]); the error
/// names `model`.
pub fn check_counters(model: &str, counters: &[u64], expected: usize) -> Result<()> {
    if counters.len() != expected {
        return Err(candle_core::Error::Msg(format!(
            "{model}: expected {expected} random-number counters, got {} (checkpoint from another model?)",
            counters.len()
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The formulas are pinned: checkpoints and tests replay streams drawn with them.
    #[test]
    fn seed_formulas_are_pinned() {
        // SplitMix64 from state 0 gives 0xE220A8397B1DCDAF (Vigna's reference sequence).
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(derive_seed(0, 0), mix64(GOLDEN_GAMMA));
        assert_eq!(layer_seed(5, 1), 5 ^ (1 << 32));
        assert_eq!(name_stream(""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(mask_seed(5, 2, 3), derive_seed(5, (2 << 32) | 3));
        // The batch orders of the tasks' runs before the formula moved here.
        assert_eq!(epoch_seed(7, 3, EPOCH_SPREAD), 0x5384_5412_7b09_6496);
        assert_eq!(
            epoch_seed(7, 3, 0xBF58_476D_1CE4_E5B9),
            0x918d_2a59_d1b8_15be
        );
        let e = check_counters("M", &[1, 2], 3).unwrap_err().to_string();
        assert!(e.starts_with("M: expected 3"), "{e}");
    }
}
