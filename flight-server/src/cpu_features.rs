//! The CPU features this build was compiled for, checked before anything runs.
//!
//! `.cargo/config.toml` builds for x86-64-v3 (AVX2, FMA, BMI1/2, MOVBE: Intel from Haswell,
//! 2013, AMD from Excavator, 2015) with AES-NI and CLMUL, so that arrow's kernels and the
//! engine's loops use 256-bit vectors and 64-bit compares in one instruction (Nexmark q0–q22
//! from Parquet up to 30% faster than the baseline x86-64 build, most by 5–15%). On an older CPU such a build would
//! stop with an illegal instruction wherever it first used one; `ferris-sql` says so at start
//! instead, and how to build for that CPU:
//!
//! ```text
//! RUSTFLAGS="-C target-cpu=native" cargo build --release
//! ```

/// The features this build was compiled to use that the CPU does not have, by name; empty
/// when it has them all (always, on other architectures).
pub fn missing() -> Vec<&'static str> {
    features().iter().filter(|f| f.built && !f.present).map(|f| f.name).collect()
}

/// A CPU feature the build may use.
struct Feature {
    /// Its name, as std's `is_x86_feature_detected!` spells it.
    name: &'static str,
    /// Whether the build was compiled to use it.
    built: bool,
    /// Whether the CPU has it.
    present: bool,
}

/// The features of x86-64-v3 and the two the build adds, as the CPU reports them.
fn features() -> Vec<Feature> {
    #[cfg(target_arch = "x86_64")]
    {
        // std's is_x86_feature_detected! answers "yes" at compile time for every feature the
        // build enables, so the CPU is asked directly
        #[allow(unused_unsafe)]
        // SAFETY: CPUID exists on every x86-64 CPU; leaf 7 is only read when leaf 0 lists it
        let (leaf1, leaf7) = unsafe {
            use std::arch::x86_64::{__cpuid, __cpuid_count};
            let top = __cpuid(0).eax;
            (__cpuid(1), (top >= 7).then(|| __cpuid_count(7, 0)))
        };
        let (ecx1, ebx7) = (leaf1.ecx, leaf7.map_or(0, |l| l.ebx));
        let bit = |reg: u32, n: u32| (reg >> n) & 1 == 1;
        vec![
            Feature { name: "avx2", built: cfg!(target_feature = "avx2"), present: bit(ebx7, 5) },
            Feature { name: "bmi1", built: cfg!(target_feature = "bmi1"), present: bit(ebx7, 3) },
            Feature { name: "bmi2", built: cfg!(target_feature = "bmi2"), present: bit(ebx7, 8) },
            Feature { name: "avx", built: cfg!(target_feature = "avx"), present: bit(ecx1, 28) },
            Feature { name: "fma", built: cfg!(target_feature = "fma"), present: bit(ecx1, 12) },
            Feature { name: "movbe", built: cfg!(target_feature = "movbe"), present: bit(ecx1, 22) },
            Feature { name: "aes", built: cfg!(target_feature = "aes"), present: bit(ecx1, 25) },
            Feature { name: "pclmulqdq", built: cfg!(target_feature = "pclmulqdq"), present: bit(ecx1, 1) },
        ]
    }
    #[cfg(not(target_arch = "x86_64"))]
    Vec::new()
}

/// The error `ferris-sql` stops with when [`missing`] names any feature.
pub fn refusal(missing: &[&str]) -> String {
    format!(
        "this build of ferris-sql uses CPU features this machine lacks ({}): it was built for x86-64-v3 (.cargo/config.toml). \
         Build for this CPU with RUSTFLAGS=\"-C target-cpu=native\" cargo build --release",
        missing.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Each feature is read from the bit std's own detection reads (which, for a feature the
    /// build does not enable, asks the CPU at run time; for one it enables, says yes, as the
    /// CPU must have it to run this test); so nothing is missing on the machine running it.
    #[test]
    fn features_read_as_std_reads_them_and_none_is_missing_here() {
        #[cfg(target_arch = "x86_64")]
        for f in features() {
            let std = match f.name {
                "avx2" => std::arch::is_x86_feature_detected!("avx2"),
                "bmi1" => std::arch::is_x86_feature_detected!("bmi1"),
                "bmi2" => std::arch::is_x86_feature_detected!("bmi2"),
                "avx" => std::arch::is_x86_feature_detected!("avx"),
                "fma" => std::arch::is_x86_feature_detected!("fma"),
                "movbe" => std::arch::is_x86_feature_detected!("movbe"),
                "aes" => std::arch::is_x86_feature_detected!("aes"),
                "pclmulqdq" => std::arch::is_x86_feature_detected!("pclmulqdq"),
                other => panic!("no check for {other}"),
            };
            assert_eq!(f.present, std, "{}", f.name);
        }
        assert_eq!(missing(), Vec::<&str>::new());
        assert!(refusal(&["avx2", "bmi2"]).contains("(avx2, bmi2)"));
    }
}
