//! The long-running fuzz driver: every target of `daemonic::fuzz` (each
//! decoder of bytes another process writes) in turn, on inputs mutated from
//! valid encodings, for as long as asked. Reports executions and crashes
//! per target.
//!
//! ```text
//! cargo bench -p daemonic --bench fuzz -- --secs 3600 [--seed N] [--target NAME]...
//! cargo bench -p daemonic --bench fuzz -- --dump-seeds fuzz/corpus
//! ```
//!
//! `--dump-seeds DIR` writes every target's seeds as a starting corpus for
//! the coverage-guided targets in `fuzz/`: `DIR/<target>/` for one target,
//! `DIR/all/` with the target's index as the first byte.
//!
//! A panic is caught and counted; an abort (a stack overflow, a failed
//! allocation) ends the process, so the work runs in a child process and
//! this one, the supervisor, counts the abort, saves the input the child
//! was running, and starts a new child for the time left. The child keeps
//! its counters and the input it runs in a shared file mapping, so nothing
//! is lost with it. Crashing inputs are saved under
//! `target/fuzz-crashes/<target>-<n>`.

use daemonic::fuzz::{self, alloc::Tracking, gen::Rng, Target};
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

/// Time given to one target before moving on to the next: each target gets
/// the same share of the run, whatever its speed.
const SLICE: Duration = Duration::from_millis(250);

/// Bytes per target in the shared file: executions, panics, nanoseconds.
const PER_TARGET: usize = 24;

struct Args {
    secs: u64,
    seed: u64,
    only: Vec<String>,
    child: Option<PathBuf>,
    dump: Option<PathBuf>,
}

fn args() -> Args {
    let mut args = Args {
        secs: 60,
        seed: 1,
        only: Vec::new(),
        child: None,
        dump: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |what: &str| it.next().unwrap_or_else(|| panic!("{arg} needs {what}"));
        match arg.as_str() {
            "--secs" => args.secs = value("a number").parse().expect("--secs N"),
            "--seed" => args.seed = value("a number").parse().expect("--seed N"),
            "--target" => args.only.push(value("a name")),
            "--child" => args.child = Some(value("a path").into()),
            "--dump-seeds" => args.dump = Some(value("a directory").into()),
            // `cargo bench` passes `--bench`.
            _ => {}
        }
    }
    args
}

fn selected(only: &[String]) -> Vec<Target> {
    let all = fuzz::targets();
    if only.is_empty() {
        return all;
    }
    let names: Vec<_> = all.iter().map(|t| t.name).collect();
    for name in only {
        assert!(
            names.contains(&name.as_str()),
            "no target {name}: {names:?}"
        );
    }
    all.into_iter()
        .filter(|t| only.iter().any(|o| o == t.name))
        .collect()
}

/// The file the child shares with the supervisor: per target, executions,
/// panics and time spent (u64 each); then the target and the input being
/// run.
struct Shared {
    map: *mut u8,
    targets: usize,
    size: usize,
}

fn layout(targets: &[Target]) -> (usize, usize) {
    let counters = targets.len() * PER_TARGET;
    let max = targets.iter().map(|t| t.max_len).max().unwrap_or(0);
    (counters, counters + 16 + max)
}

impl Shared {
    fn map(path: &PathBuf, targets: &[Target]) -> Shared {
        let (_, size) = layout(targets);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .expect("shared file");
        // SAFETY: a shared mapping of a file of `size` bytes that only this
        // process writes while it lives.
        let map = unsafe {
            nix::sys::mman::mmap(
                None,
                std::num::NonZeroUsize::new(size).expect("non-empty"),
                nix::sys::mman::ProtFlags::PROT_READ | nix::sys::mman::ProtFlags::PROT_WRITE,
                nix::sys::mman::MapFlags::MAP_SHARED,
                &file,
                0,
            )
        }
        .expect("mmap");
        Shared {
            map: map.as_ptr().cast(),
            targets: targets.len(),
            size,
        }
    }

    fn put_u64(&self, at: usize, value: u64) {
        assert!(at + 8 <= self.size);
        // SAFETY: within the mapping (checked above).
        unsafe { std::ptr::copy_nonoverlapping(value.to_le_bytes().as_ptr(), self.map.add(at), 8) }
    }

    fn get_u64(&self, at: usize) -> u64 {
        assert!(at + 8 <= self.size);
        let mut bytes = [0u8; 8];
        // SAFETY: within the mapping (checked above).
        unsafe { std::ptr::copy_nonoverlapping(self.map.add(at), bytes.as_mut_ptr(), 8) };
        u64::from_le_bytes(bytes)
    }

    fn add(&self, target: usize, field: usize, n: u64) {
        let at = target * PER_TARGET + field * 8;
        self.put_u64(at, self.get_u64(at) + n);
    }

    fn running(&self, target: usize, input: &[u8]) {
        let base = self.targets * PER_TARGET;
        self.put_u64(base, target as u64);
        self.put_u64(base + 8, input.len() as u64);
        assert!(base + 16 + input.len() <= self.size);
        // SAFETY: within the mapping (checked above).
        unsafe {
            std::ptr::copy_nonoverlapping(input.as_ptr(), self.map.add(base + 16), input.len())
        }
    }
}

/// Reads what a child left in the shared file.
fn read_shared(path: &PathBuf, targets: &[Target]) -> (Vec<[u64; 3]>, usize, Vec<u8>) {
    let bytes = std::fs::read(path).expect("shared file");
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let counts = (0..targets.len())
        .map(|t| {
            let at = t * PER_TARGET;
            [u64_at(at), u64_at(at + 8), u64_at(at + 16)]
        })
        .collect();
    let base = targets.len() * PER_TARGET;
    let target = u64_at(base) as usize;
    let len = (u64_at(base + 8) as usize).min(bytes.len() - base - 16);
    (counts, target, bytes[base + 16..base + 16 + len].to_vec())
}

fn crash_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("target")
        .join("fuzz-crashes");
    std::fs::create_dir_all(&dir).expect("crash directory");
    dir
}

fn save_crash(target: &str, input: &[u8], how: &str) {
    let dir = crash_dir();
    let n = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
    let path = dir.join(format!("{target}-{n}"));
    let _ = std::fs::write(&path, input);
    eprintln!(
        "CRASH ({how}) in {target}: {} bytes saved to {}: {}",
        input.len(),
        path.display(),
        fuzz::hex(&input[..input.len().min(256)])
    );
}

fn dump_seeds(dir: &std::path::Path) {
    for (index, target) in fuzz::targets().iter().enumerate() {
        let one = dir.join(target.name);
        let all = dir.join("all");
        std::fs::create_dir_all(&one).expect("corpus directory");
        std::fs::create_dir_all(&all).expect("corpus directory");
        for (n, seed) in (target.seeds)().iter().enumerate() {
            std::fs::write(one.join(format!("seed-{n}")), seed).expect("write a seed");
            let mut prefixed = vec![index as u8];
            prefixed.extend_from_slice(seed);
            std::fs::write(all.join(format!("{}-{n}", target.name)), prefixed)
                .expect("write a seed");
        }
    }
}

/// The child: runs the targets until the deadline.
fn child(args: &Args, shared: &PathBuf) {
    let targets = selected(&args.only);
    let shared = Shared::map(shared, &targets);
    // Panics are counted and reported once per target, not printed each time.
    std::panic::set_hook(Box::new(|_| {}));
    let seeds: Vec<Vec<Vec<u8>>> = targets.iter().map(|t| (t.seeds)()).collect();
    let mut rng = Rng::new(args.seed);
    let deadline = Instant::now() + Duration::from_secs(args.secs);
    let mut reported = vec![0u32; targets.len()];
    let mut last_progress = Instant::now();
    while Instant::now() < deadline {
        for (i, target) in targets.iter().enumerate() {
            let began = Instant::now();
            while began.elapsed() < SLICE {
                let input = fuzz::gen::input(&mut rng, &seeds[i], target.max_len);
                shared.running(i, &input);
                let panicked = std::panic::catch_unwind(|| target.run(&input)).is_err();
                shared.add(i, 0, 1);
                if panicked {
                    shared.add(i, 1, 1);
                    if reported[i] < 5 {
                        reported[i] += 1;
                        save_crash(target.name, &input, "panic");
                    }
                }
            }
            shared.add(i, 2, began.elapsed().as_nanos() as u64);
        }
        if last_progress.elapsed() >= Duration::from_secs(60) {
            last_progress = Instant::now();
            let total: u64 = (0..targets.len())
                .map(|t| shared.get_u64(t * PER_TARGET))
                .sum();
            eprintln!("fuzz: {total} executions so far");
        }
    }
}

fn main() {
    let args = args();
    if let Some(dir) = &args.dump {
        dump_seeds(dir);
        return;
    }
    if let Some(shared) = &args.child {
        child(&args, shared);
        return;
    }
    let targets = selected(&args.only);
    let (_, size) = layout(&targets);
    let shared = crash_dir().join(format!(".shared-{}", std::process::id()));
    let start = Instant::now();
    let deadline = start + Duration::from_secs(args.secs);
    // Executions, panics, nanoseconds, aborts.
    let mut totals = vec![[0u64; 4]; targets.len()];
    let mut seed = args.seed;
    let mut children = 0;
    while Instant::now() < deadline {
        let file = std::fs::File::create(&shared).expect("shared file");
        file.set_len(size as u64).expect("size the shared file");
        drop(file);
        let left = deadline
            .saturating_duration_since(Instant::now())
            .as_millis()
            .div_ceil(1000);
        let mut cmd = Command::new(std::env::current_exe().expect("own binary"));
        cmd.arg("--child").arg(&shared).args([
            "--secs",
            &left.to_string(),
            "--seed",
            &seed.to_string(),
        ]);
        for name in &args.only {
            cmd.args(["--target", name]);
        }
        let status = cmd.status().expect("start the fuzzing child");
        children += 1;
        let (counts, current, input) = read_shared(&shared, &targets);
        for (total, count) in totals.iter_mut().zip(counts) {
            for field in 0..3 {
                total[field] += count[field];
            }
        }
        if !status.success() {
            if let Some(t) = totals.get_mut(current) {
                t[0] += 1;
                t[3] += 1;
                save_crash(targets[current].name, &input, &format!("abort: {status}"));
            }
        }
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
    }
    let _ = std::fs::remove_file(&shared);
    let secs = start.elapsed().as_secs_f64();
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "\nfuzz: {secs:.0} s, seed {}, {children} child process(es)\n",
        args.seed
    );
    let _ = writeln!(
        out,
        "| target | executions | seconds | exec/s | panics | aborts |\n|---|---:|---:|---:|---:|---:|"
    );
    let (mut all, mut bad) = (0, 0);
    for (target, [execs, panics, nanos, aborts]) in targets.iter().zip(&totals) {
        all += execs;
        bad += panics + aborts;
        let busy = *nanos as f64 / 1e9;
        let _ = writeln!(
            out,
            "| {} | {execs} | {busy:.0} | {:.0} | {panics} | {aborts} |",
            target.name,
            *execs as f64 / busy.max(1e-9)
        );
    }
    let _ = writeln!(
        out,
        "| **all** | {all} | {secs:.0} | {:.0} | {bad} crashes | |",
        all as f64 / secs
    );
    if bad > 0 {
        std::process::exit(1);
    }
}
