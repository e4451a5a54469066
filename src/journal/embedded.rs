//! The embedded journal: the segment log on local files, fed by a
//! sequencer and written by one committer thread (group commit).
//!
//! Concurrent requests queue their events; whoever gets the turn sequences
//! every queued request at once under the sequencer lock (stamp, dedup,
//! place, route) and the requests then wait, each on its own, for the frame
//! holding their events to be durable. The committer takes the open group
//! whenever it is free, writes it as one frame and fdatasyncs it: while it
//! syncs, the next group fills. Alerts and dead letters join the open group
//! the same way, so they are durable in the same sync as the events around
//! them, and published only after it ([`DurableGroup`]).
//!
//! # Invariants
//! - Places (`lsn`, index) are assigned and events routed under the
//!   sequencer lock, in journal order.
//! - A frame is durable before anything it holds is acknowledged or
//!   published, and the id log only ever records ids of durable frames.
//! - While the replay after a start has not caught up, appends do not
//!   route: the replay routes them, in order, when it reaches them.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration as StdDuration, Instant};

use tokio::sync::{oneshot, watch};

use crate::event::Event;
use crate::journal::dedup::{Fingerprint, IdIndex, IdLog};
use crate::journal::file::{JournalFs, OsFs};
use crate::journal::frame::{seal_frame, FRAME_HEADER};
use crate::journal::partition::partition_of;
use crate::journal::records::{
    self, AlertEntry, EncodedEvents, LetterEntry, Payload, PayloadBuilder, Wanted,
};
use crate::journal::segment::{SegmentConfig, SegmentLog};
use crate::journal::{
    Appended, DurableGroup, EventSink, Journal, JournalError, JournalFuture, Progress, Submission,
};
use crate::telemetry::{self, Stage};
use crate::time::{wall_now, Duration, Timestamp};

/// How the embedded journal is set up.
#[derive(Debug, Clone)]
pub struct JournalConfig {
    /// The journal's directory (segments in it, the id log in `ids/`).
    pub dir: PathBuf,
    /// Partitions of the key space (fixed per data directory).
    pub partitions: u16,
    /// Segment sizes.
    pub segments: SegmentConfig,
    /// How long an event id is remembered per key.
    pub dedup_horizon: Duration,
    /// Most event ids remembered; beyond it the oldest are forgotten early
    /// (counted).
    pub max_remembered_ids: usize,
    /// Longest wait for a frame to become durable before the waiter is
    /// answered with an error.
    pub durable_timeout: StdDuration,
    /// LSN of the first frame of a new journal (a migrated directory starts
    /// after its old log's records).
    pub first_lsn: u64,
}

/// Events the replay routes between two calls of its pacing function.
const REPLAY_SLICE: usize = 64;

/// A request waiting for its turn.
struct Pending {
    submission: Submission,
    /// Its events encoded, and their id fingerprints, made before the turn.
    encoded: EncodedEvents,
    fingerprints: Vec<Option<Fingerprint>>,
    done: oneshot::Sender<Result<Appended, JournalError>>,
}

/// The group being filled.
struct OpenGroup {
    lsn: u64,
    payload: PayloadBuilder,
    /// The group's events, kept until the frame is written: a replay
    /// catching up routes them from here.
    events: Vec<Arc<Event>>,
    /// Ids of its events, for the id log once the frame is durable.
    ids: Vec<(Fingerprint, Timestamp)>,
}

impl OpenGroup {
    fn new(lsn: u64) -> OpenGroup {
        OpenGroup::with_buffer(lsn, Vec::new())
    }

    /// A group whose events go into `buffer` (a previous group's, reused:
    /// growing a fresh one for every group had the kernel zeroing new pages
    /// for a tenth of the server's time).
    fn with_buffer(lsn: u64, buffer: Vec<u8>) -> OpenGroup {
        OpenGroup {
            lsn,
            payload: PayloadBuilder::with_buffer(buffer),
            events: Vec::new(),
            ids: Vec::new(),
        }
    }
}

/// What the sequencer lock guards.
struct Sequencer {
    open: OpenGroup,
    /// The group the committer took and has not written yet.
    in_flight: Option<(u64, Vec<Arc<Event>>)>,
    /// The last acceptance time: never goes back.
    last_accepted_at: Timestamp,
    index: IdIndex,
    /// The replay after the start has not caught up: appends do not route.
    replaying: bool,
    /// An events buffer of a written group, for the next group.
    spare: Option<Vec<u8>>,
    closing: bool,
}

/// What the committer hands to the id-log thread.
enum IdWork {
    /// Ids of a durable frame.
    Frame(u64, Vec<(Fingerprint, Timestamp)>),
    /// Sync the id log, then answer.
    Sync(oneshot::Sender<Result<u64, JournalError>>),
    /// Forget files older than this.
    Expire(Timestamp),
}

/// The embedded journal.
pub struct EmbeddedJournal {
    log: Arc<SegmentLog>,
    config: JournalConfig,
    queue: Mutex<Vec<Pending>>,
    turn: tokio::sync::Mutex<()>,
    sequencer: Mutex<Sequencer>,
    /// Wakes the committer.
    work: Condvar,
    progress: watch::Sender<Progress>,
    durable_groups: Mutex<Option<std::sync::mpsc::Sender<DurableGroup>>>,
    ids_loaded: watch::Sender<bool>,
    id_work: Mutex<std::sync::mpsc::Sender<IdWork>>,
    /// The newest LSN whose ids the id log holds durably.
    ids_synced: Arc<AtomicU64>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// What opening the journal found.
pub struct OpenReport {
    /// LSN of the oldest frame held.
    pub first: u64,
    /// LSN of the next frame.
    pub next: u64,
    /// Bytes of a torn last frame cut off.
    pub torn_bytes: u64,
}

impl EmbeddedJournal {
    /// Opens (or creates) the journal on the real file system. Returns the
    /// journal and the receiver of durable groups (alerts and dead letters
    /// to publish).
    pub fn open(
        config: JournalConfig,
    ) -> Result<
        (
            Arc<EmbeddedJournal>,
            std::sync::mpsc::Receiver<DurableGroup>,
            OpenReport,
        ),
        JournalError,
    > {
        EmbeddedJournal::open_on(Arc::new(OsFs), config)
    }

    /// As [`EmbeddedJournal::open`], on `fs`.
    pub fn open_on(
        fs: Arc<dyn JournalFs>,
        config: JournalConfig,
    ) -> Result<
        (
            Arc<EmbeddedJournal>,
            std::sync::mpsc::Receiver<DurableGroup>,
            OpenReport,
        ),
        JournalError,
    > {
        let (log, opened) = SegmentLog::open(
            Arc::clone(&fs),
            &config.dir,
            config.segments,
            config.first_lsn,
        )?;
        let log = Arc::new(log);
        if opened.torn_bytes > 0 {
            tracing::warn!(
                bytes = opened.torn_bytes,
                "the journal's last frame was torn by a crash and was cut off (it was never acknowledged)"
            );
        }
        let now = wall_now();
        let since = now.minus(config.dedup_horizon);
        let ids_dir = config.dir.join("ids");
        let (mut id_log, contents) = IdLog::open(Arc::clone(&fs), &ids_dir, since)?;
        // NB: ids of frames after what the id log covers are read back from
        // the journal now and written to the id log before anything new, so
        // the id log never skips a frame.
        let mut catch_up = Vec::new();
        let end = opened.next.saturating_sub(1);
        let mut frames_scanned = 0u64;
        for frame in log.read(contents.lsn + 1, end) {
            let frame = frame?;
            frames_scanned += 1;
            let pairs =
                records::event_ids(&frame.payload).map_err(|reason| JournalError::Corrupt {
                    path: config.dir.clone(),
                    offset: 0,
                    reason: format!("frame {}: {reason}", frame.lsn),
                })?;
            let at = Timestamp(frame.written_at);
            let fps: Vec<_> = pairs
                .iter()
                .map(|(key, id)| (Fingerprint::of(key, id), at))
                .collect();
            id_log.append(frame.lsn, &fps)?;
            catch_up.extend(fps);
        }
        if frames_scanned > 0 || end > id_log.written_lsn() {
            id_log.append(end, &[])?;
            id_log.sync()?;
        }
        let ids_synced = Arc::new(AtomicU64::new(id_log.written_lsn()));
        let (durable_tx, durable_rx) = std::sync::mpsc::channel();
        let (id_tx, id_rx) = std::sync::mpsc::channel();
        let journal = Arc::new(EmbeddedJournal {
            log: Arc::clone(&log),
            queue: Mutex::new(Vec::new()),
            turn: tokio::sync::Mutex::new(()),
            sequencer: Mutex::new(Sequencer {
                open: OpenGroup::new(opened.next),
                in_flight: None,
                last_accepted_at: Timestamp::MIN,
                index: IdIndex::new(config.dedup_horizon, config.max_remembered_ids),
                replaying: false,
                spare: None,
                closing: false,
            }),
            work: Condvar::new(),
            progress: watch::Sender::new(Progress {
                durable: end,
                stalled: None,
                failed: None,
            }),
            durable_groups: Mutex::new(Some(durable_tx)),
            ids_loaded: watch::Sender::new(false),
            id_work: Mutex::new(id_tx),
            ids_synced: Arc::clone(&ids_synced),
            threads: Mutex::new(Vec::new()),
            config,
        });
        let committer = {
            let journal = Arc::clone(&journal);
            std::thread::Builder::new()
                .name("cepheus-journal".into())
                .spawn(move || journal.commit_loop())
                .map_err(|e| JournalError::Io(format!("cannot start the committer: {e}")))?
        };
        let id_thread = std::thread::Builder::new()
            .name("cepheus-ids".into())
            .spawn(move || id_log_loop(id_log, id_rx, ids_synced))
            .map_err(|e| JournalError::Io(format!("cannot start the id log: {e}")))?;
        let loader = {
            let journal = Arc::clone(&journal);
            std::thread::Builder::new()
                .name("cepheus-ids-load".into())
                .spawn(move || journal.load_ids(contents.entries, catch_up))
                .map_err(|e| JournalError::Io(format!("cannot start the id load: {e}")))?
        };
        journal
            .threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend([committer, id_thread, loader]);
        let report = OpenReport {
            first: opened.first,
            next: opened.next,
            torn_bytes: opened.torn_bytes,
        };
        Ok((journal, durable_rx, report))
    }

    fn lock(&self) -> MutexGuard<'_, Sequencer> {
        self.sequencer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Builds the id index from the id log and the frames it did not cover,
    /// then lets requests carrying ids in.
    fn load_ids(
        &self,
        logged: Vec<(Fingerprint, Timestamp)>,
        caught_up: Vec<(Fingerprint, Timestamp)>,
    ) {
        let started = std::time::Instant::now();
        let mut index = IdIndex::new(self.config.dedup_horizon, self.config.max_remembered_ids);
        let count = logged.len() + caught_up.len();
        for (fp, at) in logged.into_iter().chain(caught_up) {
            index.remember(fp, at);
        }
        index.expire(wall_now());
        let forgotten = index.take_forgotten();
        if forgotten > 0 {
            telemetry::dedup_ids_forgotten(forgotten);
        }
        {
            let mut sequencer = self.lock();
            // NB: no request with ids was sequenced before this (they wait
            // for it), so the built index is complete.
            sequencer.index = index;
        }
        self.ids_loaded.send_replace(true);
        tracing::info!(
            ids = count,
            seconds = started.elapsed().as_secs_f64(),
            "event ids remembered again"
        );
    }

    /// The journal's directory.
    pub fn dir(&self) -> &Path {
        &self.config.dir
    }

    /// Appends a request's events (and its dead letters) together with
    /// whatever other requests are waiting, routing the events to `sink`;
    /// returns once they are durable.
    async fn append_events(
        &self,
        submission: Submission,
        sink: &dyn EventSink,
    ) -> Result<Appended, JournalError> {
        self.refuse_if_unwell()?;
        if submission.events.iter().any(|e| e.id.is_some()) {
            // Requests carrying ids wait for the index of ids accepted before.
            let mut loaded = self.ids_loaded.subscribe();
            if loaded.wait_for(|loaded| *loaded).await.is_err() {
                return Err(JournalError::Closed);
            }
        }
        let (done, mut answer) = oneshot::channel();
        // NB: the encoding and hashing happen here, on the request's own
        // thread; under the sequencer lock the events are only copied.
        let partitions = self.config.partitions;
        let encoded =
            EncodedEvents::encode(&submission.events, |key| partition_of(key, partitions));
        let fingerprints = submission
            .events
            .iter()
            .map(|e| e.id.as_ref().map(|id| Fingerprint::of(&e.key, id)))
            .collect();
        let queued = Instant::now();
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Pending {
                submission,
                encoded,
                fingerprints,
                done,
            });
        let appended = {
            let _turn = self.turn.lock().await;
            telemetry::stage(Stage::SequencerWait, queued.elapsed());
            match answer.try_recv() {
                Ok(result) => result,
                Err(_) => {
                    let group =
                        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|p| p.into_inner()));
                    let started = Instant::now();
                    self.sequence(group, sink);
                    telemetry::stage(Stage::Sequence, started.elapsed());
                    answer.await.unwrap_or(Err(JournalError::Closed))
                }
            }
        }?;
        let sequenced = Instant::now();
        self.wait_durable(appended.lsn).await?;
        telemetry::stage(Stage::CommitWait, sequenced.elapsed());
        Ok(appended)
    }

    /// Refuses new work while the journal cannot write.
    fn refuse_if_unwell(&self) -> Result<(), JournalError> {
        let progress = self.progress.borrow();
        if let Some(reason) = &progress.failed {
            return Err(JournalError::Failed(reason.clone()));
        }
        if let Some(reason) = &progress.stalled {
            return Err(JournalError::Stalled(reason.clone()));
        }
        Ok(())
    }

    /// Under the sequencer: stamps, deduplicates, places and routes the
    /// requests' events, and answers each request.
    fn sequence(&self, group: Vec<Pending>, sink: &dyn EventSink) {
        let mut sequencer = self.lock();
        if sequencer.closing {
            for p in group {
                let _ = p.done.send(Err(JournalError::Closed));
            }
            return;
        }
        // NB: the acceptance time is taken under the lock and never goes
        // back, and events sent without `time` get it, so their times follow
        // journal order (see docs/decisions.md, "An event without `time`").
        let accepted_at = wall_now().max(sequencer.last_accepted_at);
        sequencer.last_accepted_at = accepted_at;
        let lsn = sequencer.open.lsn;
        let first = sequencer.open.events.len() as u32;
        let mut answers = Vec::with_capacity(group.len());
        for Pending {
            submission,
            mut encoded,
            fingerprints,
            done,
        } in group
        {
            let Submission {
                mut events,
                untimed,
                letters,
            } = submission;
            for i in untimed {
                if let Some(event) = events.get_mut(i) {
                    event.time = accepted_at;
                    encoded.set_time(i, accepted_at);
                }
            }
            let mut accepted = 0;
            let mut duplicates = 0;
            for (i, (event, fp)) in events.into_iter().zip(fingerprints).enumerate() {
                if let Some(fp) = fp {
                    if sequencer.index.check_and_remember(fp, accepted_at) {
                        duplicates += 1;
                        continue;
                    }
                    sequencer.open.ids.push((fp, accepted_at));
                }
                sequencer.open.payload.push_encoded(encoded.event(i));
                sequencer.open.events.push(Arc::new(event));
                accepted += 1;
            }
            for letter in letters {
                sequencer.open.payload.push_letter(letter);
            }
            answers.push((
                done,
                Appended {
                    accepted,
                    duplicates,
                    lsn,
                },
            ));
        }
        let forgotten = sequencer.index.take_forgotten();
        if forgotten > 0 {
            telemetry::dedup_ids_forgotten(forgotten);
        }
        if !sequencer.replaying && sequencer.open.events.len() as u32 > first {
            sink.accepted(lsn, first, &sequencer.open.events[first as usize..]);
        }
        // NB: a request of duplicates only waits for the frame its originals
        // may still be in, so its 202 also means they are durable.
        let has_work = !sequencer.open.payload.is_empty();
        let needed = if has_work { lsn } else { lsn - 1 };
        drop(sequencer);
        if has_work {
            self.work.notify_one();
        }
        for (done, mut appended) in answers {
            appended.lsn = needed;
            let _ = done.send(Ok(appended));
        }
    }

    /// Waits until frame `lsn` is durable, at most `durable_timeout`.
    pub async fn wait_durable(&self, lsn: u64) -> Result<(), JournalError> {
        let mut progress = self.progress.subscribe();
        let wait = async {
            progress
                .wait_for(|p| p.durable >= lsn || p.failed.is_some())
                .await
                .map(|p| match &p.failed {
                    Some(reason) if p.durable < lsn => Err(JournalError::Failed(reason.clone())),
                    _ => Ok(()),
                })
        };
        match tokio::time::timeout(self.config.durable_timeout, wait).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(JournalError::Closed),
            Err(_) => {
                let stalled = self.progress.borrow().stalled.clone();
                Err(match stalled {
                    Some(reason) => JournalError::Stalled(reason),
                    None => JournalError::Timeout(self.config.durable_timeout.as_secs()),
                })
            }
        }
    }

    /// Watches the durable LSN and health.
    pub fn watch_progress(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// Whether requests carrying ids are served (the id index is built).
    pub fn ids_loaded(&self) -> bool {
        *self.ids_loaded.borrow()
    }

    /// Number of event ids remembered.
    pub fn remembered_ids(&self) -> usize {
        self.lock().index.len()
    }

    /// The newest LSN whose ids the id log holds durably.
    pub fn ids_synced(&self) -> u64 {
        self.ids_synced.load(Ordering::Acquire)
    }

    /// Makes the id log durable; returns the LSN it covers.
    pub async fn sync_ids(&self) -> Result<u64, JournalError> {
        let (tx, rx) = oneshot::channel();
        self.id_work
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(IdWork::Sync(tx))
            .map_err(|_| JournalError::Closed)?;
        rx.await.unwrap_or(Err(JournalError::Closed))
    }

    /// The committer: writes and syncs one group at a time.
    fn commit_loop(self: Arc<Self>) {
        let mut backoff = StdDuration::from_millis(10);
        let mut frame = Vec::new();
        loop {
            let group = {
                let mut sequencer = self.lock();
                loop {
                    if !sequencer.open.payload.is_empty() {
                        break;
                    }
                    if sequencer.closing {
                        return;
                    }
                    sequencer = self.work.wait(sequencer).unwrap_or_else(|p| p.into_inner());
                }
                let spare = sequencer.spare.take().unwrap_or_default();
                let next = OpenGroup::with_buffer(sequencer.open.lsn + 1, spare);
                let mut group = std::mem::replace(&mut sequencer.open, next);
                sequencer.in_flight = Some((group.lsn, std::mem::take(&mut group.events)));
                group
            };
            let written_at = wall_now().millis();
            frame.clear();
            frame.resize(FRAME_HEADER, 0);
            if let Err(e) = group.payload.finish_into(&mut frame) {
                self.fail(format!("cannot encode frame {}: {e}", group.lsn));
                return;
            }
            seal_frame(&mut frame, group.lsn, written_at);
            let started = Instant::now();
            loop {
                match self.log.write_frame(group.lsn, written_at, &frame) {
                    Ok(()) => break,
                    Err(JournalError::Failed(reason)) => {
                        self.fail(reason);
                        return;
                    }
                    Err(e) => {
                        // NB: nothing of the frame counts as written; the
                        // same frame is written again (disk full: until
                        // space is freed). New work is refused meanwhile.
                        tracing::warn!(error = %e, lsn = group.lsn, "cannot write to the journal; retrying");
                        self.progress
                            .send_modify(|p| p.stalled = Some(e.to_string()));
                        if self.lock().closing && backoff >= StdDuration::from_secs(1) {
                            return;
                        }
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(StdDuration::from_secs(1));
                    }
                }
            }
            backoff = StdDuration::from_millis(10);
            let synced = Instant::now();
            telemetry::stage(Stage::Write, synced - started);
            if let Err(e) = self.log.sync() {
                self.fail(e.to_string());
                return;
            }
            telemetry::stage(Stage::Fsync, synced.elapsed());
            let (alerts, letters, buffer) = group.payload.into_parts();
            {
                let mut sequencer = self.lock();
                sequencer.in_flight = None;
                sequencer.spare = Some(buffer);
            }
            self.progress.send_modify(|p| {
                p.durable = group.lsn;
                p.stalled = None;
            });
            // NB: every group, also those with nothing to publish: the
            // publisher's position says how far the store's copies follow.
            if let Some(tx) = &*self
                .durable_groups
                .lock()
                .unwrap_or_else(|p| p.into_inner())
            {
                let _ = tx.send(DurableGroup {
                    lsn: group.lsn,
                    alerts,
                    letters,
                    letters_at: None,
                });
            }
            let _ = self
                .id_work
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .send(IdWork::Frame(group.lsn, group.ids));
        }
    }

    fn fail(&self, reason: String) {
        tracing::error!(reason = %reason, "the journal stopped; restart cepheus");
        self.progress.send_modify(|p| p.failed = Some(reason));
    }
}

impl Journal for EmbeddedJournal {
    fn partitions(&self) -> u16 {
        self.config.partitions
    }

    fn append<'a>(
        &'a self,
        submission: Submission,
        sink: &'a dyn EventSink,
    ) -> JournalFuture<'a, Appended> {
        Box::pin(self.append_events(submission, sink))
    }

    fn append_records(
        &self,
        alerts: Vec<AlertEntry>,
        letters: Vec<LetterEntry>,
    ) -> Result<u64, JournalError> {
        if let Some(reason) = &self.progress.borrow().failed {
            return Err(JournalError::Failed(reason.clone()));
        }
        let mut sequencer = self.lock();
        for alert in alerts {
            sequencer.open.payload.push_alert(alert);
        }
        for letter in letters {
            sequencer.open.payload.push_letter(letter);
        }
        let lsn = sequencer.open.lsn;
        drop(sequencer);
        self.work.notify_one();
        Ok(lsn)
    }

    fn routed_through(&self) -> u64 {
        self.lock().open.lsn - 1
    }

    fn sync_routed(&self) -> JournalFuture<'_, ()> {
        let lsn = {
            let sequencer = self.lock();
            if sequencer.open.payload.is_empty() {
                sequencer.open.lsn - 1
            } else {
                sequencer.open.lsn
            }
        };
        Box::pin(self.wait_durable(lsn))
    }

    fn progress(&self) -> Progress {
        self.progress.borrow().clone()
    }

    fn read(
        &self,
        from: u64,
        through: u64,
        wanted: Wanted,
    ) -> Box<dyn Iterator<Item = Result<(u64, Timestamp, Payload), JournalError>> + Send + '_> {
        let through = through.min(self.progress.borrow().durable);
        let dir = self.config.dir.clone();
        Box::new(self.log.read(from, through).map(move |frame| {
            let frame = frame?;
            let payload = records::decode(&frame.payload, wanted).map_err(|reason| {
                JournalError::Corrupt {
                    path: dir.clone(),
                    offset: 0,
                    reason: format!("frame {}: {reason}", frame.lsn),
                }
            })?;
            Ok((frame.lsn, Timestamp(frame.written_at), payload))
        }))
    }

    fn first_lsn(&self) -> u64 {
        self.log.first_lsn()
    }

    fn durable_lsn(&self) -> u64 {
        self.progress.borrow().durable
    }

    fn bytes(&self) -> u64 {
        self.log.bytes()
    }

    fn begin_replay(&self) {
        self.lock().replaying = true;
    }

    fn replay(
        &self,
        from: u64,
        sink: &dyn EventSink,
        pace: &mut dyn FnMut(),
    ) -> Result<u64, JournalError> {
        let events_only = Wanted {
            events: true,
            alerts: false,
            letters: false,
        };
        let mut next = from.max(self.first_lsn());
        let mut routed = 0u64;
        loop {
            let durable = self.durable_lsn();
            if next > durable {
                break;
            }
            for frame in self.read(next, durable, events_only) {
                let (lsn, _, payload) = frame?;
                let events: Vec<Arc<Event>> = payload.events.into_iter().map(Arc::new).collect();
                // NB: in slices, so a large frame cannot take the service
                // far past a limit before `pace` is asked again.
                for (i, slice) in events.chunks(REPLAY_SLICE).enumerate() {
                    pace();
                    sink.accepted(lsn, (i * REPLAY_SLICE) as u32, slice);
                }
                routed += events.len() as u64;
                next = lsn + 1;
            }
        }
        // The last pass holds the sequencer: nothing is placed meanwhile.
        // Frames written but not yet durable are read from the log, the
        // group being written and the open one from memory.
        let mut sequencer = self.lock();
        let written = self.log.next_lsn() - 1;
        for frame in self.log.read(next, written) {
            let frame = frame?;
            let payload = records::decode(&frame.payload, events_only).map_err(|reason| {
                JournalError::Corrupt {
                    path: self.config.dir.clone(),
                    offset: 0,
                    reason: format!("frame {}: {reason}", frame.lsn),
                }
            })?;
            let events: Vec<Arc<Event>> = payload.events.into_iter().map(Arc::new).collect();
            if !events.is_empty() {
                sink.accepted(frame.lsn, 0, &events);
            }
            routed += events.len() as u64;
            next = frame.lsn + 1;
        }
        if let Some((lsn, events)) = &sequencer.in_flight {
            if *lsn >= next && !events.is_empty() {
                sink.accepted(*lsn, 0, events);
                routed += events.len() as u64;
            }
        }
        if !sequencer.open.events.is_empty() {
            sink.accepted(sequencer.open.lsn, 0, &sequencer.open.events);
            routed += sequencer.open.events.len() as u64;
        }
        sequencer.replaying = false;
        Ok(routed)
    }

    fn is_replaying(&self) -> bool {
        self.lock().replaying
    }

    fn retain(
        &self,
        keep_from: u64,
        oldest: Timestamp,
        max_bytes: u64,
    ) -> Result<usize, JournalError> {
        let keep_from = keep_from.min(self.ids_synced() + 1);
        let mut bytes = self.log.bytes();
        let removed = self.log.remove_oldest(|segment, next| {
            let unneeded = next.base <= keep_from;
            let expired = next.first_written_at() < oldest.millis() || bytes > max_bytes;
            if unneeded && expired {
                bytes = bytes.saturating_sub(segment.bytes());
                true
            } else {
                false
            }
        })?;
        let _ = self
            .id_work
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(IdWork::Expire(wall_now().minus(self.config.dedup_horizon)));
        Ok(removed)
    }

    fn close(&self) {
        self.lock().closing = true;
        self.work.notify_all();
        self.ids_loaded.send_replace(true);
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        // NB: the committer ends once the open group is written; the id
        // thread once its channel closes, after the committer's last send.
        let mut threads = threads.into_iter();
        if let Some(committer) = threads.next() {
            let _ = committer.join();
        }
        let (closed, _) = std::sync::mpsc::channel();
        drop(std::mem::replace(
            &mut *self.id_work.lock().unwrap_or_else(|p| p.into_inner()),
            closed,
        ));
        for thread in threads {
            let _ = thread.join();
        }
    }
}

/// The id-log thread: appends the ids of durable frames, syncs on request
/// and about every second, forgets old files. A failed append is retried
/// (its frames wait, in order); the journal keeps every frame after what
/// the id log holds durably, so nothing is lost meanwhile.
fn id_log_loop(mut log: IdLog, work: std::sync::mpsc::Receiver<IdWork>, synced: Arc<AtomicU64>) {
    use std::collections::VecDeque;
    use std::sync::mpsc::RecvTimeoutError;
    let mut backlog: VecDeque<(u64, Vec<(Fingerprint, Timestamp)>)> = VecDeque::new();
    let mut unsynced = false;
    let mut last_sync = std::time::Instant::now();
    let flush = |log: &mut IdLog,
                 backlog: &mut VecDeque<(u64, Vec<(Fingerprint, Timestamp)>)>,
                 unsynced: &mut bool|
     -> Result<(), JournalError> {
        while let Some((lsn, ids)) = backlog.front() {
            log.append(*lsn, ids)?;
            *unsynced = true;
            backlog.pop_front();
        }
        Ok(())
    };
    let sync = |log: &IdLog, unsynced: &mut bool| -> Result<u64, JournalError> {
        log.sync()?;
        *unsynced = false;
        synced.store(log.written_lsn(), Ordering::Release);
        Ok(log.written_lsn())
    };
    loop {
        let message = work.recv_timeout(StdDuration::from_secs(1));
        let closing = matches!(message, Err(RecvTimeoutError::Disconnected));
        let quiet = !matches!(message, Ok(IdWork::Frame(..)));
        match message {
            Ok(IdWork::Frame(lsn, ids)) => backlog.push_back((lsn, ids)),
            Ok(IdWork::Sync(done)) => {
                let result = flush(&mut log, &mut backlog, &mut unsynced)
                    .and_then(|()| sync(&log, &mut unsynced));
                let _ = done.send(result);
                continue;
            }
            Ok(IdWork::Expire(oldest)) => {
                if let Err(e) = log.remove_older_than(oldest) {
                    tracing::warn!(error = %e, "cannot remove old id-log files");
                }
                continue;
            }
            Err(_) => {}
        }
        if let Err(e) = flush(&mut log, &mut backlog, &mut unsynced) {
            tracing::warn!(error = %e, "cannot append to the id log; retrying");
        }
        // NB: about once a second under a steady stream too: the journal
        // keeps every frame after what the id log holds durably.
        let due = last_sync.elapsed() >= StdDuration::from_secs(1);
        if unsynced && (quiet || closing || due) {
            match sync(&log, &mut unsynced) {
                Ok(_) => last_sync = std::time::Instant::now(),
                Err(e) => tracing::warn!(error = %e, "cannot sync the id log; retrying"),
            }
        }
        if closing {
            return;
        }
    }
}
