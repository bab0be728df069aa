//! What it costs to wake a sleeping thread: two threads hand a token back and forth through a
//! mutex and condvar (a futex wake each way), with a 200 µs pause between round trips so that the
//! other thread is asleep each time, as between requests at concurrency 1.
//!
//!   wake-cost          the kernel places both threads (it usually keeps them on one CPU)
//!   wake-cost same     both threads pinned to CPU 0
//!   wake-cost split    one thread on CPU 0, the other on CPU 1
//!
//! Prints the round trip's p50 and p90 (two wake-ups).

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

const ROUND_TRIPS: u64 = 20_000;

fn pin_to(cpu: usize) {
    // SAFETY: a zeroed cpu_set_t with one CPU set, for the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn main() {
    let mode = std::env::args().nth(1).unwrap_or_default();
    let (main_cpu, other_cpu) = match mode.as_str() {
        "same" => (Some(0), Some(0)),
        "split" => (Some(0), Some(1)),
        _ => (None, None),
    };
    if let Some(cpu) = main_cpu {
        pin_to(cpu);
    }
    // Odd: the other thread's turn; even: ours. 2 × ROUND_TRIPS + 1 ends it.
    let token = Arc::new((Mutex::new(0u64), Condvar::new()));
    let theirs = token.clone();
    let other = std::thread::spawn(move || {
        if let Some(cpu) = other_cpu {
            pin_to(cpu);
        }
        let (lock, turn) = &*theirs;
        let mut value = lock.lock().unwrap();
        loop {
            while *value % 2 == 0 {
                value = turn.wait(value).unwrap();
            }
            if *value > 2 * ROUND_TRIPS {
                break;
            }
            *value += 1;
            turn.notify_one();
        }
    });
    let (lock, turn) = &*token;
    let mut micros = Vec::with_capacity(ROUND_TRIPS as usize);
    for i in 0..ROUND_TRIPS {
        let started = Instant::now();
        let mut value = lock.lock().unwrap();
        *value = 2 * i + 1;
        turn.notify_one();
        while *value % 2 == 1 {
            value = turn.wait(value).unwrap();
        }
        drop(value);
        micros.push(started.elapsed().as_micros() as u64);
        std::thread::sleep(Duration::from_micros(200));
    }
    *lock.lock().unwrap() = 2 * ROUND_TRIPS + 1;
    turn.notify_one();
    other.join().unwrap();
    micros.sort_unstable();
    let at = |p: f64| micros[((micros.len() as f64) * p) as usize];
    println!(
        "{}: round trip (two wake-ups) p50 {} µs, p90 {} µs",
        if mode.is_empty() {
            "placed by the kernel"
        } else {
            &mode
        },
        at(0.5),
        at(0.9)
    );
}
