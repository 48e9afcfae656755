//! The CPU features this build was compiled for, checked before anything else runs.
//!
//! `.cargo/config.toml` builds for x86-64-v3 (AVX2, FMA, BMI1/2, MOVBE: Intel from Haswell,
//! 2013, AMD from Excavator, 2015) with AES-NI and CLMUL, so that arrow's kernels and the
//! engine's loops use 256-bit vectors and 64-bit compares in one instruction (Nexmark q0–q22
//! from Parquet up to 30% faster than the baseline x86-64 build, most by 5–15%). On an older
//! CPU such a build would stop with an illegal instruction wherever it first used one;
//! `ferris-sql` says so at start instead, and how to build for that CPU:
//!
//! ```text
//! RUSTFLAGS="-C target-cpu=native" cargo build --release
//! ```
//!
//! The check is one block of assembly: any Rust around it is compiled for the features being
//! checked, and even a copy of a 16-byte value may then be an AVX instruction (std's
//! `is_x86_feature_detected!` is no help either: it answers "yes" at compile time for every
//! feature the build enables). Under `qemu-x86_64 -cpu Nehalem`, code in Rust stopped with an
//! illegal instruction in the debug build before a word came out.

/// The CPUID leaf 1 ECX bits of the features the build was compiled to use.
const LEAF1_ECX: u32 = bit(cfg!(target_feature = "pclmulqdq"), 1)
    | bit(cfg!(target_feature = "fma"), 12)
    | bit(cfg!(target_feature = "movbe"), 22)
    | bit(cfg!(target_feature = "aes"), 25)
    | bit(cfg!(target_feature = "avx"), 28);

/// The CPUID leaf 7 (subleaf 0) EBX bits of the features the build was compiled to use.
const LEAF7_EBX: u32 = bit(cfg!(target_feature = "bmi1"), 3) | bit(cfg!(target_feature = "avx2"), 5) | bit(cfg!(target_feature = "bmi2"), 8);

/// `1 << n` when `on`.
const fn bit(on: bool, n: u32) -> u32 {
    if on {
        1 << n
    } else {
        0
    }
}

/// What `ferris-sql` writes to standard error before it exits with code 2 on such a CPU.
pub const REFUSAL: &[u8] = b"error: this build of ferris-sql uses CPU features this machine lacks: it was built for x86-64-v3 (AVX2, FMA, BMI1/2, MOVBE) with AES-NI and CLMUL (.cargo/config.toml). Build for this CPU with RUSTFLAGS=\"-C target-cpu=native\" cargo build --release\n";

/// Exits the process with code 2 after writing [`REFUSAL`] to standard error when the CPU
/// lacks a feature the build was compiled to use; returns otherwise (always, when built
/// without any of them or on another architecture).
pub fn check() {
    #[cfg(all(target_arch = "x86_64", target_os = "linux"))]
    // SAFETY: CPUID exists on every x86-64 CPU, and leaf 7 is read only when leaf 0 lists it;
    // rbx, which CPUID writes and LLVM reserves, is saved and restored; every other register
    // written is declared; the two system calls are write(2) of a static buffer and
    // exit_group(2), after which nothing runs.
    unsafe {
        std::arch::asm!(
            "mov {save}, rbx",
            "xor eax, eax",
            "xor ecx, ecx",
            "cpuid",
            "mov {top:e}, eax",
            "mov eax, 1",
            "xor ecx, ecx",
            "cpuid",
            "and ecx, {leaf1}",
            "cmp ecx, {leaf1}",
            "jne 3f",
            "xor ebx, ebx",
            "cmp {top:e}, 7",
            "jb 2f",
            "mov eax, 7",
            "xor ecx, ecx",
            "cpuid",
            "2:",
            "and ebx, {leaf7}",
            "cmp ebx, {leaf7}",
            "je 4f",
            "3:",
            // write(2, REFUSAL, its length), then exit_group(2)
            "mov eax, 1",
            "mov edi, 2",
            "mov rsi, {msg}",
            "mov edx, {len}",
            "syscall",
            "mov eax, 231",
            "mov edi, 2",
            "syscall",
            "4:",
            "mov rbx, {save}",
            save = out(reg) _,
            top = out(reg) _,
            msg = in(reg) REFUSAL.as_ptr(),
            leaf1 = const LEAF1_ECX,
            leaf7 = const LEAF7_EBX,
            len = const REFUSAL.len(),
            out("eax") _,
            out("ecx") _,
            out("edx") _,
            out("edi") _,
            out("esi") _,
            out("r11") _,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The masks hold the CPUID bit of each feature the build enables, and the check returns
    /// on the machine running the tests (which runs what they build). That it refuses an older CPU is the e2e test `cli::a_cpu_without_the_…`.
    #[test]
    fn the_check_passes_here_and_asks_for_what_the_build_enables() {
        check();
        assert_eq!(LEAF7_EBX & (1 << 5) != 0, cfg!(target_feature = "avx2"));
        assert_eq!(LEAF1_ECX & (1 << 25) != 0, cfg!(target_feature = "aes"));
        assert_eq!(LEAF1_ECX & (1 << 28) != 0, cfg!(target_feature = "avx"));
        assert!(String::from_utf8_lossy(REFUSAL).ends_with("RUSTFLAGS=\"-C target-cpu=native\" cargo build --release\n"));
    }
}
