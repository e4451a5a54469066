//! The segment log and the embedded journal against the fault-injecting
//! file system: torn and lost writes, failed syncs, full disks and power
//! cuts at every step.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration as StdDuration;

use crate::event::Event;
use crate::journal::memfs::{MemFs, XorShift};
use crate::journal::records::Wanted;
use crate::journal::segment::{SegmentConfig, SegmentLog};
use crate::journal::{
    EmbeddedJournal, EventSink, Journal, JournalConfig, JournalError, LetterEntry, LetterReason,
    Submission,
};
use crate::time::{Duration, Timestamp};

fn small() -> SegmentConfig {
    SegmentConfig {
        segment_bytes: 4_096,
        allocate_bytes: 1_024,
    }
}

fn open(fs: &MemFs) -> Result<(SegmentLog, crate::journal::segment::Opened), JournalError> {
    SegmentLog::open(Arc::new(fs.clone()), Path::new("/j"), small(), 1)
}

fn payload(lsn: u64) -> Vec<u8> {
    // Sizes vary so frames straddle allocation steps and segments.
    vec![(lsn % 251) as u8; 50 + (lsn as usize * 37) % 700]
}

fn read_all(log: &SegmentLog) -> Vec<(u64, Vec<u8>)> {
    log.read(0, u64::MAX)
        .map(|f| {
            let f = f.unwrap();
            (f.lsn, f.payload)
        })
        .collect()
}

#[test]
fn frames_read_back_across_segments_and_after_a_reopen() {
    let fs = MemFs::new();
    let (log, opened) = open(&fs).unwrap();
    assert_eq!((opened.first, opened.next), (1, 1));
    for lsn in 1..=60 {
        log.write(lsn, lsn as i64, &payload(lsn)).unwrap();
        log.sync().unwrap();
    }
    assert!(
        log.segments().len() > 3,
        "{} segments",
        log.segments().len()
    );
    let frames = read_all(&log);
    assert_eq!(frames.len(), 60);
    assert!(frames.iter().all(|(lsn, p)| *p == payload(*lsn)));
    // A read from the middle starts there.
    let middle: Vec<u64> = log.read(33, 40).map(|f| f.unwrap().lsn).collect();
    assert_eq!(middle, (33..=40).collect::<Vec<_>>());
    drop(log);
    let (log, opened) = open(&fs).unwrap();
    assert_eq!((opened.first, opened.next, opened.torn_bytes), (1, 61, 0));
    assert_eq!(read_all(&log), frames);
    log.write(61, 61, b"after the reopen").unwrap();
    log.sync().unwrap();
    assert_eq!(read_all(&log).len(), 61);
}

#[test]
fn a_power_cut_at_any_step_keeps_every_synced_frame_and_the_log_goes_on() {
    for seed in 1..=300u64 {
        let fs = MemFs::new();
        let mut rng = XorShift(seed);
        let (log, _) = open(&fs).unwrap();
        let mut synced = 0;
        let frames = 1 + rng.next_u64() % 30;
        for lsn in 1..=frames {
            log.write(lsn, 0, &payload(lsn)).unwrap();
            // Most frames are synced; the cut comes after the last write.
            if lsn < frames || rng.next_u64() % 2 == 0 {
                log.sync().unwrap();
                synced = lsn;
            }
        }
        drop(log);
        fs.crash(seed);
        let (log, opened) = open(&fs).unwrap_or_else(|e| panic!("seed {seed}: {e}"));
        let read = read_all(&log);
        assert!(
            read.len() as u64 >= synced && read.len() as u64 <= frames,
            "seed {seed}: {} frames read, {synced} synced",
            read.len()
        );
        for (i, (lsn, p)) in read.iter().enumerate() {
            assert_eq!(*lsn, i as u64 + 1, "seed {seed}");
            assert_eq!(*p, payload(*lsn), "seed {seed}");
        }
        assert_eq!(opened.next, read.len() as u64 + 1);
        // The log goes on after the cut, and a second cut keeps that too.
        log.write(opened.next, 0, b"next").unwrap();
        log.sync().unwrap();
        drop(log);
        fs.crash(seed + 1);
        let (log, _) = open(&fs).unwrap();
        assert_eq!(read_all(&log).len(), read.len() + 1, "seed {seed}");
    }
}

#[test]
fn damage_to_a_durable_frame_is_an_error_naming_the_file() {
    let fs = MemFs::new();
    let (log, _) = open(&fs).unwrap();
    for lsn in 1..=40 {
        log.write(lsn, 0, &payload(lsn)).unwrap();
        log.sync().unwrap();
    }
    let segments = log.segments();
    drop(log);
    // A flipped bit in a sealed segment: reading it fails, naming it.
    let sealed = segments[0].path.clone();
    let mut bytes = fs.read_file(&sealed).unwrap();
    bytes[100] ^= 0x10;
    fs.overwrite_file(&sealed, bytes);
    let (log, _) = open(&fs).unwrap();
    let error = log
        .read(0, u64::MAX)
        .find_map(Result::err)
        .expect("the damage is found");
    assert!(
        error.to_string().contains(&*sealed.to_string_lossy()),
        "{error}"
    );
    drop(log);
    // In the active segment, a damaged frame followed by a good one is not
    // a torn end: opening refuses.
    let fs = MemFs::new();
    let (log, _) = open(&fs).unwrap();
    for lsn in 1..=3 {
        log.write(lsn, 0, &payload(lsn)).unwrap();
        log.sync().unwrap();
    }
    let active = log.segments()[0].path.clone();
    drop(log);
    let mut bytes = fs.read_file(&active).unwrap();
    bytes[32 + 32 + 10] ^= 1; // inside frame 1's payload
    fs.overwrite_file(&active, bytes);
    let error = open(&fs).err().expect("refused");
    assert!(
        error.to_string().contains("00000000000000000001.seg"),
        "{error}"
    );
}

#[test]
fn a_segment_cut_off_while_being_created_is_removed() {
    let fs = MemFs::new();
    let (log, _) = open(&fs).unwrap();
    log.write(1, 0, b"one").unwrap();
    log.sync().unwrap();
    drop(log);
    // What a crash during creation leaves: an empty file.
    let path = Path::new("/j/00000000000000000002.seg");
    use crate::journal::file::JournalFs as _;
    fs.create(path).unwrap();
    fs.sync_dir(Path::new("/j")).unwrap();
    let (log, opened) = open(&fs).unwrap();
    assert_eq!(opened.next, 2);
    assert!(!fs.paths().iter().any(|p| p == path));
    log.write(2, 0, b"two").unwrap();
    log.sync().unwrap();
    assert_eq!(read_all(&log).len(), 2);
}

#[test]
fn a_full_disk_fails_the_write_and_the_same_frame_goes_in_later() {
    let fs = MemFs::new();
    let (log, _) = open(&fs).unwrap();
    fs.fill_disk();
    let mut lsn = 1;
    let failed = loop {
        match log.write(lsn, 0, &payload(lsn)) {
            Ok(()) => {
                log.sync().unwrap();
                lsn += 1;
            }
            Err(e) => break e,
        }
        assert!(lsn < 100, "the disk never filled");
    };
    assert!(failed.to_string().contains("space"), "{failed}");
    fs.heal();
    log.write(lsn, 0, &payload(lsn)).unwrap();
    log.sync().unwrap();
    assert_eq!(read_all(&log).len() as u64, lsn);
}

#[test]
fn a_failed_sync_stops_the_log() {
    let fs = MemFs::new();
    let (log, _) = open(&fs).unwrap();
    log.write(1, 0, b"one").unwrap();
    fs.fail_syncs();
    assert!(log.sync().is_err());
    fs.heal();
    // NB: the kernel may have dropped the pages; nothing more is written.
    assert!(matches!(
        log.write(2, 0, b"two"),
        Err(JournalError::Failed(_))
    ));
    assert!(matches!(log.sync(), Err(JournalError::Failed(_))));
}

#[test]
fn retention_removes_only_old_segments_no_longer_needed() {
    let fs = MemFs::new();
    let (log, _) = open(&fs).unwrap();
    for lsn in 1..=60 {
        log.write(lsn, lsn as i64 * 1_000, &payload(lsn)).unwrap();
        log.sync().unwrap();
    }
    let before = log.segments();
    // Keep everything from LSN 20 on: only segments wholly before it go.
    let removed = log.remove_oldest(|_, next| next.base <= 20).unwrap();
    assert!(removed > 0);
    let first = log.first_lsn();
    assert!(first <= 20 && first > 1, "first {first}");
    assert_eq!(log.segments().len(), before.len() - removed);
    let lsns: Vec<u64> = log.read(0, u64::MAX).map(|f| f.unwrap().lsn).collect();
    assert_eq!(lsns, (first..=60).collect::<Vec<_>>());
    drop(log);
    let (log, opened) = open(&fs).unwrap();
    assert_eq!((opened.first, opened.next), (first, 61));
    // The active segment always stays.
    assert!(log.remove_oldest(|_, _| true).unwrap() > 0);
    assert_eq!(log.segments().len(), 1);
}

// ---- the embedded journal ----

/// Records what was routed.
#[derive(Default)]
struct Recorder(Mutex<Vec<(u64, u32, String)>>);

impl EventSink for Recorder {
    fn accepted(&self, lsn: u64, first: u32, events: &[Arc<Event>]) {
        let mut seen = self.0.lock().unwrap();
        for (i, e) in events.iter().enumerate() {
            seen.push((lsn, first + i as u32, e.id.clone().unwrap_or_default()));
        }
    }
}

fn config() -> JournalConfig {
    JournalConfig {
        dir: "/j".into(),
        partitions: 4,
        segments: small(),
        dedup_horizon: Duration::from_secs(3600),
        max_remembered_ids: 1_000,
        durable_timeout: StdDuration::from_secs(5),
        first_lsn: 1,
    }
}

fn event(key: &str, id: Option<&str>) -> Event {
    Event {
        id: id.map(str::to_owned),
        key: key.into(),
        event_type: "t".into(),
        time: Timestamp(1_000),
        data: Default::default(),
    }
}

fn submission(events: Vec<Event>) -> Submission {
    Submission {
        events,
        ..Submission::default()
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn wait_loaded(journal: &EmbeddedJournal) {
    while !journal.ids_loaded() {
        std::thread::sleep(StdDuration::from_millis(1));
    }
}

#[test]
fn appended_events_are_durable_routed_in_order_and_ids_deduplicated_across_restarts() {
    let fs = MemFs::new();
    let rt = runtime();
    let sink = Recorder::default();
    {
        let (journal, _groups, _) =
            EmbeddedJournal::open_on(Arc::new(fs.clone()), config()).unwrap();
        wait_loaded(&journal);
        rt.block_on(async {
            let a = journal
                .append(
                    submission(vec![event("k1", Some("a")), event("k2", Some("b"))]),
                    &sink,
                )
                .await
                .unwrap();
            assert_eq!((a.accepted, a.duplicates), (2, 0));
            assert!(journal.durable_lsn() >= a.lsn);
            let b = journal
                .append(
                    submission(vec![
                        event("k1", Some("a")),
                        event("k2", Some("a")),
                        event("k3", None),
                    ]),
                    &sink,
                )
                .await
                .unwrap();
            assert_eq!((b.accepted, b.duplicates), (2, 1));
        });
        journal.close();
    }
    let routed = sink.0.lock().unwrap().clone();
    assert_eq!(
        routed.iter().map(|r| r.2.as_str()).collect::<Vec<_>>(),
        ["a", "b", "a", ""]
    );
    assert!(routed
        .windows(2)
        .all(|w| (w[0].0, w[0].1) < (w[1].0, w[1].1)));
    // A power cut now: everything answered survives, ids included.
    fs.crash(7);
    let (journal, _groups, _) = EmbeddedJournal::open_on(Arc::new(fs.clone()), config()).unwrap();
    wait_loaded(&journal);
    assert_eq!(journal.remembered_ids(), 3);
    let replayed = Recorder::default();
    journal.begin_replay();
    assert_eq!(journal.replay(0, &replayed, &mut || {}).unwrap(), 4);
    assert_eq!(*replayed.0.lock().unwrap(), routed);
    let sink = Recorder::default();
    rt.block_on(async {
        let c = journal
            .append(
                submission(vec![event("k2", Some("b")), event("k9", Some("b"))]),
                &sink,
            )
            .await
            .unwrap();
        assert_eq!((c.accepted, c.duplicates), (1, 1));
    });
    journal.close();
}

#[test]
fn ids_survive_the_journal_retention_through_the_id_log() {
    let fs = MemFs::new();
    let rt = runtime();
    let sink = Recorder::default();
    let (journal, _groups, _) = EmbeddedJournal::open_on(Arc::new(fs.clone()), config()).unwrap();
    wait_loaded(&journal);
    rt.block_on(async {
        for i in 0..200 {
            let id = format!("id-{i}");
            journal
                .append(submission(vec![event("k", Some(&id))]), &sink)
                .await
                .unwrap();
        }
        journal.sync_ids().await.unwrap();
    });
    // Everything is checkpointed: the journal may drop all but the active
    // segment.
    let removed = journal.retain(u64::MAX, Timestamp(i64::MAX), 0).unwrap();
    assert!(removed > 0);
    journal.close();
    drop(journal);
    let (journal, _groups, _) = EmbeddedJournal::open_on(Arc::new(fs.clone()), config()).unwrap();
    wait_loaded(&journal);
    rt.block_on(async {
        let again = journal
            .append(submission(vec![event("k", Some("id-3"))]), &sink)
            .await
            .unwrap();
        assert_eq!(again.duplicates, 1);
    });
    journal.close();
}

#[test]
fn alerts_and_letters_are_published_only_once_durable() {
    let fs = MemFs::new();
    let (journal, groups, _) = EmbeddedJournal::open_on(Arc::new(fs.clone()), config()).unwrap();
    let letter = LetterEntry {
        identity: None,
        reason: LetterReason::Invalid,
        error: "bad".into(),
        key: None,
        received_at: Timestamp(0),
        event: "{}".into(),
    };
    let lsn = journal
        .append_records(vec![], vec![letter.clone()])
        .unwrap();
    let group = groups
        .recv_timeout(StdDuration::from_secs(5))
        .expect("published");
    assert_eq!(group.lsn, lsn);
    assert_eq!(group.letters, vec![letter]);
    assert!(journal.durable_lsn() >= lsn);
    let read: Vec<_> = journal
        .read(0, u64::MAX, Wanted::ALL)
        .map(|f| f.unwrap().2.letters.len())
        .collect();
    assert_eq!(read, vec![1]);
    journal.close();
}

#[test]
fn a_failed_sync_refuses_new_work_with_a_clear_error() {
    let fs = MemFs::new();
    let rt = runtime();
    let sink = Recorder::default();
    let (journal, _groups, _) = EmbeddedJournal::open_on(Arc::new(fs.clone()), config()).unwrap();
    fs.fail_syncs();
    rt.block_on(async {
        let error = journal
            .append(submission(vec![event("k", None)]), &sink)
            .await
            .unwrap_err();
        assert!(matches!(error, JournalError::Failed(_)), "{error}");
        let error = journal
            .append(submission(vec![event("k", None)]), &sink)
            .await
            .unwrap_err();
        assert!(error.to_string().contains("fdatasync"), "{error}");
    });
    assert!(journal.progress().failed.is_some());
    journal.close();
}

#[test]
fn a_replay_catches_up_with_appends_made_while_it_runs() {
    let fs = MemFs::new();
    let rt = runtime();
    {
        let (journal, _groups, _) =
            EmbeddedJournal::open_on(Arc::new(fs.clone()), config()).unwrap();
        rt.block_on(async {
            for i in 0..20 {
                journal
                    .append(
                        submission(vec![event(&format!("k{i}"), None)]),
                        &Recorder::default(),
                    )
                    .await
                    .unwrap();
            }
        });
        journal.close();
    }
    let (journal, _groups, _) = EmbeddedJournal::open_on(Arc::new(fs.clone()), config()).unwrap();
    journal.begin_replay();
    let live = Recorder::default();
    let replayed = Recorder::default();
    std::thread::scope(|scope| {
        scope.spawn(|| {
            rt.block_on(async {
                for i in 20..60 {
                    journal
                        .append(submission(vec![event(&format!("k{i}"), None)]), &live)
                        .await
                        .unwrap();
                }
            })
        });
        let mut paced = 0;
        journal
            .replay(0, &replayed, &mut || {
                paced += 1;
                if paced % 5 == 0 {
                    std::thread::sleep(StdDuration::from_millis(2));
                }
            })
            .unwrap();
    });
    // Appends during the replay are routed by it, once, in order; after
    // it they route themselves.
    let mut all = replayed.0.lock().unwrap().clone();
    all.extend(live.0.lock().unwrap().iter().cloned());
    assert_eq!(all.len(), 60);
    assert!(all.windows(2).all(|w| (w[0].0, w[0].1) < (w[1].0, w[1].1)));
    journal.close();
}
