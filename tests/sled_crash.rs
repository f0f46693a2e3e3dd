//! Real crash test of the durability promise in docs/design.md §10: a child process commits
//! checkpoints into a sled store and reports each one after `commit` returns; the parent kills it
//! with SIGKILL at a random moment, reopens the store and checks that
//! - every checkpoint reported as committed is there, whole;
//! - no checkpoint is there in part (atomicity across the crash);
//! - the store opens and verifies (no corrupt entry).

use concord::model::{ActorId, EntityId, Fields, InstanceId, SystemId, VectorClock, Version};
use concord::store::{SledStore, StateStore, Store};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PER_CHECKPOINT: u64 = 50;
const CHILD_ENV: &str = "CONCORD_SLED_CRASH_CHILD";

fn sys() -> SystemId {
    SystemId::new("erp").unwrap()
}

fn entity(seq: u64, i: u64) -> EntityId {
    EntityId::derive(&sys(), &format!("{seq}-{i}"))
}

fn version(seq: u64, i: u64) -> Version {
    let mut c = VectorClock::new();
    c.set(ActorId(1), seq + 1);
    let f = Fields::new()
        .with("seq", seq as i64)
        .with("i", i as i64)
        .with("payload", "x".repeat(200));
    Version::new(Some(f), c, None, None)
}

fn open(dir: &std::path::Path) -> StateStore {
    let s: Arc<dyn Store> = Arc::new(SledStore::open(dir).unwrap());
    StateStore::open(s, InstanceId::new("crash").unwrap()).unwrap()
}

/// The child: commits checkpoint after checkpoint until killed.
#[test]
#[ignore]
fn sled_crash_child() {
    let Ok(dir) = std::env::var(CHILD_ENV) else {
        return;
    };
    let st = open(std::path::Path::new(&dir));
    let mut seq = 0u64;
    loop {
        let mut cp = st.checkpoint();
        for i in 0..PER_CHECKPOINT {
            cp.put_snapshot(&sys(), &entity(seq, i), &version(seq, i));
        }
        cp.put_cursor("job", &sys(), &seq.to_be_bytes());
        st.commit(cp).unwrap();
        println!("committed {seq}");
        seq += 1;
    }
}

#[test]
fn checkpoints_survive_sigkill_whole_or_not_at_all() {
    let trials: u64 = std::env::var("CONCORD_CRASH_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(6);
    let exe = std::env::current_exe().unwrap();
    for trial in 0..trials {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(&exe)
            .args([
                "--ignored",
                "--exact",
                "sled_crash::sled_crash_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        // Kill after a pseudo-random number of reported commits (3..40), at a random moment.
        let target = 3 + (trial * 7919 + 13) % 38;
        let mut last = None;
        let start = Instant::now();
        while let Some(Ok(line)) = lines.next() {
            if let Some(n) = line.strip_prefix("committed ") {
                last = Some(n.trim().parse::<u64>().unwrap());
                if last.unwrap() >= target {
                    break;
                }
            }
            assert!(start.elapsed() < Duration::from_secs(60), "child too slow");
        }
        std::thread::sleep(Duration::from_micros((trial * 1237) % 3000));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let last = last.expect("child reported no commit");

        let st = open(dir.path());
        st.verify().expect("store verifies after the crash");
        let mut seq = 0u64;
        loop {
            let present: Vec<bool> = (0..PER_CHECKPOINT)
                .map(|i| st.snapshot(&sys(), &entity(seq, i)).unwrap().is_some())
                .collect();
            let n = present.iter().filter(|p| **p).count() as u64;
            assert!(
                n == 0 || n == PER_CHECKPOINT,
                "trial {trial}: checkpoint {seq} is partly there ({n}/{PER_CHECKPOINT})"
            );
            if n == 0 {
                break;
            }
            assert_eq!(
                st.snapshot(&sys(), &entity(seq, 0)).unwrap(),
                Some(version(seq, 0))
            );
            seq += 1;
        }
        assert!(
            seq > last,
            "trial {trial}: checkpoint {last} was reported committed but is missing (found {seq})"
        );
        let cursor = st.cursor("job", &sys()).unwrap().expect("cursor");
        assert_eq!(
            u64::from_be_bytes(cursor.try_into().unwrap()),
            seq - 1,
            "cursor matches the last whole checkpoint"
        );
    }
}
