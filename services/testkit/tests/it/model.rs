//! Model-based test (issue 15): seeded random sequences of put, overwrite, rm, re-put of
//! earlier content (dedup), get, peer kill (no goodbye) and restart (same data dir) and
//! manager rounds, run against one in-process cluster (four peers in two zones) and
//! checked after every step against a model: which names hold which content, so which
//! chunks are referenced and at what target.
//!
//! The manager runs in the background as in production (every 50 ms, GC grace 200 ms),
//! so its repairs, trims and collections interleave with the operations; a
//! `ManagerRound` waits, with a deadline, until it has nothing left to do. The peers'
//! chunk directories are read directly; a killed peer's directory is still its disk.
//! After every step (and every poll of a manager round):
//! - **I1** every chunk of every named file is on the disk of at least one *running*
//!   peer. This holds by construction only because at most one peer (R-1 for the
//!   smallest R, 2) is down at a time and every file has R >= 2: a commit needs two
//!   receipted copies, and repair and trim never leave fewer than the target.
//! - **I2** no referenced chunk is deleted: a chunk named after the step that vanished
//!   from some disk during it (trim removes copies above target, legitimately) still has
//!   its target number of copies on disk: min(target before, target after) if it was
//!   named before, else two (what a commit guarantees).
//! - **I3** the tracker lists no copy that is not on that peer's disk (read before and
//!   after the listing, so a trim or repair in between is no false alarm).
//! - every name of the sequence resolves to the model's content (id, chunk hashes as
//!   BLAKE3 of the content cut at the tracker's chunk size, replica target), and every
//!   other name of the sequence is NotFound.
//!
//! A put that fails is not one of these checks (it is availability, not loss): it is
//! counted and shown, and the checks after it see that it changed nothing. Two such
//! failures are open findings of this test: right after a kill an R=3 put over four peers
//! can run out of replacement targets ("no live peer outside the 3 that failed"), and a
//! re-put of content whose chunks GC is collecting can fail its commit ("durable on 1
//! peers, 2 required": placement counted the garbage copies as stored).
//! `SHOAL_MODEL_STRICT_PUTS=1` makes a failed put fatal.
//!
//! `SHOAL_MODEL_SEQUENCES` (default 500) and `SHOAL_MODEL_SEED` (default random, printed;
//! `make test` pins it so CI runs the same sequences) choose the run; sequence `i` has seed `SHOAL_MODEL_SEED + i`, so
//! `SHOAL_MODEL_SEED=<seed> SHOAL_MODEL_SEQUENCES=1` runs one again. A failing sequence is
//! printed, replayed on a fresh cluster and shrunk (ops dropped while it still fails).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use shoal_client::{Client, Progress, PutOptions, Quiet};
use shoal_testkit::procs::free_addr;
use shoal_testkit::{ClusterOptions, TestCluster};

const ZONES: [&str; 4] = ["a", "a", "b", "b"];
/// The harness's chunk size (`ClusterOptions::zones`): content is built from blocks of
/// this size so that files share chunks. The test reads the real chunk size from the
/// tracker's answers; a different one would only share less.
const BLOCK: usize = 64 << 10;
/// Names per sequence, and distinct block contents: small, so names collide and files
/// share chunks.
const NAMES: u8 = 4;
const BLOCK_SEEDS: u8 = 10;
/// Peers down at once: R-1 for the smallest R (2).
const MAX_DOWN: usize = 1;
/// How long a manager round may take to settle (killed peers declared dead first).
const SETTLE: Duration = Duration::from_secs(30);

fn quiet() -> Arc<dyn Progress> {
    Arc::new(Quiet)
}

// ---- operations and their generator ----------------------------------------------------

/// A file's content: whole blocks (by seed) and a tail of `tail` bytes.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Content {
    blocks: Vec<u8>,
    tail: u32,
}

impl fmt::Debug for Content {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}+{}", self.blocks, self.tail)
    }
}

fn block(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut v);
    v
}

impl Content {
    fn bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.blocks.len() * BLOCK + self.tail as usize);
        for &b in &self.blocks {
            out.extend(block(u64::from(b), BLOCK));
        }
        out.extend(block(1 << 32 | u64::from(self.tail), self.tail as usize));
        out
    }
}

/// Every operation is self-contained (content by value, not "the content of step 3"), so
/// a sequence with some operations dropped is still a valid sequence. Operations that do
/// not apply (kill beyond `MAX_DOWN`, restart of a running peer) do nothing.
#[derive(Clone, Debug)]
enum Op {
    /// Put without overwrite: refused when the name holds other content.
    Put {
        name: u8,
        content: Content,
        r: u32,
    },
    Overwrite {
        name: u8,
        content: Content,
        r: u32,
    },
    /// Overwrite with content seen earlier in the sequence (stored, or garbage awaiting GC).
    RePut {
        name: u8,
        content: Content,
        r: u32,
    },
    Rm {
        name: u8,
    },
    Get {
        name: u8,
    },
    Kill {
        peer: usize,
    },
    Restart {
        peer: usize,
    },
    ManagerRound,
}

impl Op {
    fn kind(&self) -> &'static str {
        match self {
            Op::Put { .. } => "put",
            Op::Overwrite { .. } => "overwrite",
            Op::RePut { .. } => "re-put",
            Op::Rm { .. } => "rm",
            Op::Get { .. } => "get",
            Op::Kill { .. } => "kill",
            Op::Restart { .. } => "restart",
            Op::ManagerRound => "manager round",
        }
    }
}

fn random_content(rng: &mut StdRng) -> Content {
    let tail = |rng: &mut StdRng| rng.random_range(1..BLOCK as u32);
    let (n, with_tail) = match rng.random_range(0..100) {
        0..5 => (0, false),
        5..30 => (0, true),
        30..50 => (1, false),
        50..70 => (1, true),
        _ => (rng.random_range(2..=3), rng.random_bool(0.5)),
    };
    Content {
        blocks: (0..n).map(|_| rng.random_range(0..BLOCK_SEEDS)).collect(),
        tail: if with_tail { tail(rng) } else { 0 },
    }
}

fn generate(seed: u64) -> Vec<Op> {
    let mut rng = StdRng::seed_from_u64(seed);
    let len = rng.random_range(5..=10);
    // What the generator believes (a put may be refused): enough to pick sensible ops.
    let mut named: BTreeSet<u8> = BTreeSet::new();
    let mut seen: Vec<Content> = Vec::new();
    let mut down: Option<usize> = None;
    let mut ops = Vec::with_capacity(len);
    while ops.len() < len {
        let some_name = |rng: &mut StdRng, named: &BTreeSet<u8>| {
            if !named.is_empty() && rng.random_bool(0.85) {
                let v: Vec<u8> = named.iter().copied().collect();
                v[rng.random_range(0..v.len())]
            } else {
                rng.random_range(0..NAMES)
            }
        };
        let r = rng.random_range(2..=3);
        let op = match rng.random_range(0..100) {
            0..25 => {
                let content = random_content(&mut rng);
                Op::Put {
                    name: rng.random_range(0..NAMES),
                    content,
                    r,
                }
            }
            25..37 => Op::Overwrite {
                name: some_name(&mut rng, &named),
                content: random_content(&mut rng),
                r,
            },
            37..52 if !seen.is_empty() => Op::RePut {
                name: rng.random_range(0..NAMES),
                content: seen[rng.random_range(0..seen.len())].clone(),
                r,
            },
            52..66 => Op::Rm {
                name: some_name(&mut rng, &named),
            },
            66..74 => Op::Get {
                name: some_name(&mut rng, &named),
            },
            74..84 => match down {
                None => Op::Kill {
                    peer: rng.random_range(0..ZONES.len()),
                },
                Some(peer) => Op::Restart { peer },
            },
            // A round while a peer is down waits for its death (3 s): half as often.
            84..100 if down.is_none() || rng.random_bool(0.5) => Op::ManagerRound,
            _ => continue,
        };
        match &op {
            Op::Put { name, content, .. }
            | Op::Overwrite { name, content, .. }
            | Op::RePut { name, content, .. } => {
                named.insert(*name);
                seen.push(content.clone());
            }
            Op::Rm { name } => {
                named.remove(name);
            }
            Op::Kill { peer } => down = Some(*peer),
            Op::Restart { .. } => down = None,
            Op::Get { .. } | Op::ManagerRound => {}
        }
        ops.push(op);
    }
    ops
}

// ---- the model ------------------------------------------------------------------------

/// Names to content, and each content's replica target (set by the put that stored it;
/// a later put of the same content only adds a name).
#[derive(Default)]
struct Model {
    names: BTreeMap<u8, Content>,
    target: HashMap<Content, u32>,
}

impl Model {
    fn bind(&mut self, name: u8, content: &Content, r: u32) {
        if !self.names.values().any(|c| c == content) {
            self.target.insert(content.clone(), r);
        }
        self.names.insert(name, content.clone());
        self.forget_unnamed();
    }

    fn unbind(&mut self, name: u8) {
        self.names.remove(&name);
        self.forget_unnamed();
    }

    fn forget_unnamed(&mut self) {
        let named: HashSet<&Content> = self.names.values().collect();
        self.target.retain(|c, _| named.contains(c));
    }
}

/// A content's id and chunk hashes, as the system computes them.
#[derive(Clone)]
struct Layout {
    id: String,
    chunks: Vec<String>,
}

fn layout(content: &Content, chunk_size: u64) -> Layout {
    let bytes = content.bytes();
    Layout {
        id: blake3::hash(&bytes).to_hex().to_string(),
        chunks: bytes
            .chunks(chunk_size as usize)
            .map(|c| blake3::hash(c).to_hex().to_string())
            .collect(),
    }
}

// ---- the harness ----------------------------------------------------------------------

/// What happened on the disks over the run (classified by the model).
#[derive(Default, Debug)]
struct Counts {
    steps: u64,
    /// Copies of unreferenced chunks that vanished from a disk (GC, or trim of garbage).
    gc_deleted: u64,
    /// Copies of referenced chunks that vanished from a disk (trim above target).
    trimmed: u64,
    /// Copies of referenced chunks that appeared on a disk outside a put (repair).
    repaired: u64,
    deduplicated_puts: u64,
    refused_puts: u64,
    settled_rounds: u64,
    deaths_waited: u64,
    kills: u64,
    /// Puts that failed (with a peer of the sequence down, or none), and the first
    /// errors (after the peers down).
    failed_puts_peer_down: u64,
    failed_puts_all_up: u64,
    failed_put_errors: Vec<String>,
    /// Wall time per kind of step (the operation and its checks).
    time: BTreeMap<&'static str, (u64, Duration)>,
}

impl Counts {
    fn add(&mut self, o: &Counts) {
        self.steps += o.steps;
        self.gc_deleted += o.gc_deleted;
        self.trimmed += o.trimmed;
        self.repaired += o.repaired;
        self.deduplicated_puts += o.deduplicated_puts;
        self.refused_puts += o.refused_puts;
        self.settled_rounds += o.settled_rounds;
        self.deaths_waited += o.deaths_waited;
        self.kills += o.kills;
        self.failed_puts_peer_down += o.failed_puts_peer_down;
        self.failed_puts_all_up += o.failed_puts_all_up;
        self.failed_put_errors
            .extend(o.failed_put_errors.iter().take(3).cloned());
        for (k, (n, d)) in &o.time {
            let e = self.time.entry(k).or_default();
            e.0 += n;
            e.1 += *d;
        }
    }
}

struct Harness {
    cluster: TestCluster,
    client: Client,
    ids: Vec<String>,
    work: tempfile::TempDir,
    chunk_size: Option<u64>,
    layouts: HashMap<Content, Layout>,
    counts: Counts,
    /// Per peer: the chunks on its disk when it last restarted, and when (see `MASKED`).
    restarted: Vec<Option<(Instant, HashSet<String>)>>,
}

/// One sequence's state: its names' prefix, the model, the peers it killed, the disks
/// after its last step.
struct Seq {
    prefix: String,
    model: Model,
    down: BTreeSet<usize>,
    disk: Vec<HashSet<String>>,
}

/// The tracker masks a copy in a peer's inventory for this long after ordering its
/// deletion (`shoal_tracker::state::DELETION_MASK`): a peer that was down when told to
/// delete keeps the copy, unknown to the tracker and so to GC, until then.
const MASKED: Duration = shoal_tracker::state::DELETION_MASK;

type Disk = Vec<HashSet<String>>;

fn cluster_options() -> ClusterOptions {
    let mut o = ClusterOptions::zones(&ZONES).replication(2);
    o.tracker.repair.interval = Duration::from_millis(50);
    // Short, so GC really deletes during a sequence; longer than a round, as the grace
    // is what covers a chunk reported between an upload's placement and its commit.
    o.tracker.repair.gc_grace = Duration::from_millis(200);
    o.tracker.metrics_addr = Some(free_addr());
    o
}

impl Harness {
    async fn start() -> anyhow::Result<Self> {
        let cluster = TestCluster::start(cluster_options()).await?;
        let client = cluster.client();
        let ids = (0..ZONES.len()).map(|i| cluster.peer_id(i)).collect();
        Ok(Self {
            cluster,
            client,
            ids,
            work: tempfile::tempdir()?,
            chunk_size: None,
            layouts: HashMap::new(),
            counts: Counts::default(),
            restarted: vec![None; ZONES.len()],
        })
    }

    fn disk(&self) -> Disk {
        (0..ZONES.len())
            .map(|i| self.cluster.chunks_on_disk(i))
            .collect()
    }

    fn layout(&mut self, content: &Content) -> Layout {
        let cs = self.chunk_size.unwrap_or(BLOCK as u64);
        self.layouts
            .entry(content.clone())
            .or_insert_with(|| layout(content, cs))
            .clone()
    }

    /// Referenced chunks and their targets (the largest R of the files naming them).
    fn referenced(&mut self, m: &Model) -> HashMap<String, u32> {
        let mut out: HashMap<String, u32> = HashMap::new();
        for c in m.names.values() {
            let r = m.target[c];
            for h in self.layout(c).chunks {
                let t = out.entry(h).or_default();
                *t = (*t).max(r);
            }
        }
        out
    }

    /// Run a sequence, then restore the cluster for the next one (restart what it
    /// killed, remove what it named), checking every step. The error names the step.
    async fn run(&mut self, prefix: &str, ops: &[Op]) -> Result<(), Failure> {
        let mut s = Seq {
            prefix: prefix.to_string(),
            model: Model::default(),
            down: BTreeSet::new(),
            disk: self.disk(),
        };
        for (i, op) in ops.iter().enumerate() {
            self.step(&mut s, op).await.map_err(|msg| Failure {
                step: format!("step {i}"),
                op: format!("{op:?}"),
                msg,
            })?;
        }
        let restarts = s.down.iter().map(|&peer| Op::Restart { peer });
        let rms = s.model.names.keys().map(|&name| Op::Rm { name });
        let epilogue: Vec<Op> = restarts.chain(rms).collect();
        for op in epilogue {
            self.step(&mut s, &op).await.map_err(|msg| Failure {
                step: "clean-up".into(),
                op: format!("{op:?}"),
                msg,
            })?;
        }
        Ok(())
    }

    fn name(s: &Seq, n: u8) -> String {
        format!("{}-{n}", s.prefix)
    }

    async fn step(&mut self, s: &mut Seq, op: &Op) -> Result<(), String> {
        let t0 = Instant::now();
        let r = self.apply_and_check(s, op).await;
        self.counts.steps += 1;
        let e = self.counts.time.entry(op.kind()).or_default();
        e.0 += 1;
        e.1 += t0.elapsed();
        r
    }

    async fn apply_and_check(&mut self, s: &mut Seq, op: &Op) -> Result<(), String> {
        let before = self.referenced(&s.model);
        match op {
            Op::Put { name, content, r } => self.put(s, *name, content, *r, false).await?,
            Op::Overwrite { name, content, r } | Op::RePut { name, content, r } => {
                self.put(s, *name, content, *r, true).await?
            }
            Op::Rm { name } => {
                let res = self.client.delete(&Self::name(s, *name)).await;
                match (s.model.names.contains_key(name), res) {
                    (true, Ok(_)) => s.model.unbind(*name),
                    (false, Err(e)) if e.code() == Some(tonic::Code::NotFound) => {}
                    (true, Err(e)) => return Err(format!("rm of a named file failed: {e}")),
                    (false, r) => return Err(format!("rm of an absent name: {r:?}")),
                }
            }
            Op::Get { name } => {
                let out = self.work.path().join("out");
                let res = self.client.get(&Self::name(s, *name), &out, quiet()).await;
                match (s.model.names.get(name), res) {
                    (Some(c), Ok(_)) => {
                        let got = std::fs::read(&out).map_err(|e| e.to_string())?;
                        if got != c.bytes() {
                            return Err(format!("get returned other bytes than {c:?}"));
                        }
                    }
                    (None, Err(_)) => {}
                    (Some(_), Err(e)) => return Err(format!("get of a named file failed: {e}")),
                    (None, Ok(_)) => return Err("get of an absent name succeeded".into()),
                }
            }
            Op::Kill { peer } => {
                if !s.down.contains(peer) && s.down.len() < MAX_DOWN {
                    self.cluster.kill_peer(*peer);
                    s.down.insert(*peer);
                    self.counts.kills += 1;
                }
            }
            Op::Restart { peer } => {
                if s.down.remove(peer) {
                    let held = self.cluster.chunks_on_disk(*peer);
                    self.restarted[*peer] = Some((Instant::now(), held));
                    self.cluster
                        .start_peer(*peer)
                        .await
                        .map_err(|e| format!("restart: {e:#}"))?;
                }
            }
            Op::ManagerRound => self.settle(s).await?,
        }
        let after = self.referenced(&s.model);
        let repairs_possible = matches!(
            op,
            Op::Rm { .. }
                | Op::Get { .. }
                | Op::Kill { .. }
                | Op::Restart { .. }
                | Op::ManagerRound
        );
        self.check(s, &before, &after, repairs_possible).await
    }

    async fn put(
        &mut self,
        s: &mut Seq,
        name: u8,
        content: &Content,
        r: u32,
        overwrite: bool,
    ) -> Result<(), String> {
        let path = self.work.path().join("src");
        std::fs::write(&path, content.bytes()).map_err(|e| e.to_string())?;
        let opts = PutOptions {
            name: Self::name(s, name),
            replicas: r,
            overwrite,
        };
        let res = self.client.put(&path, opts, quiet()).await;
        let allowed = overwrite || s.model.names.get(&name).is_none_or(|c| c == content);
        match (allowed, res) {
            (true, Ok(put)) => {
                if put.size > 0 {
                    match self.chunk_size {
                        None => {
                            // Layouts so far assumed `BLOCK`: the tracker's word wins.
                            self.chunk_size = Some(put.chunk_size);
                            self.layouts.clear();
                        }
                        Some(cs) if cs != put.chunk_size => {
                            return Err(format!("chunk size {} after {cs}", put.chunk_size));
                        }
                        Some(_) => {}
                    }
                }
                let want = self.layout(content).id;
                if put.id != want {
                    return Err(format!("put returned id {}, content is {want}", put.id));
                }
                self.counts.deduplicated_puts += put.deduplicated as u64;
                s.model.bind(name, content, r);
                Ok(())
            }
            (false, Err(_)) => {
                self.counts.refused_puts += 1;
                Ok(())
            }
            // Open findings (availability, not loss; see the module doc): counted and
            // shown, fatal with SHOAL_MODEL_STRICT_PUTS=1. The checks after the step
            // still see that the failed put changed nothing.
            (true, Err(e)) if !strict_puts() => {
                if s.down.is_empty() {
                    self.counts.failed_puts_all_up += 1;
                } else {
                    self.counts.failed_puts_peer_down += 1;
                }
                if self.counts.failed_put_errors.len() < 3 {
                    self.counts
                        .failed_put_errors
                        .push(format!("{:?}: {e}", s.down));
                }
                Ok(())
            }
            (true, Err(e)) => Err(format!("put failed: {e}")),
            (false, Ok(_)) => Err("put without overwrite replaced other content".into()),
        }
    }

    /// Wait until the manager has nothing left to do: the killed peers declared dead,
    /// then every named chunk at exactly its target on running peers (repair up, trim
    /// down) and no unnamed chunk on a running peer (GC). Every poll is checked too.
    async fn settle(&mut self, s: &mut Seq) -> Result<(), String> {
        for &p in &s.down {
            self.cluster
                .wait_peer_dead(p)
                .await
                .map_err(|e| format!("{e:#}"))?;
            self.counts.deaths_waited += 1;
        }
        let running: Vec<usize> = (0..ZONES.len()).filter(|p| !s.down.contains(p)).collect();
        let refd = self.referenced(&s.model);
        let deadline = Instant::now() + SETTLE;
        loop {
            let disk = self.disk();
            self.check_disk(s, &refd, &refd, &disk, true)?;
            s.disk = disk;
            let mut left = Vec::new();
            for (h, t) in &refd {
                let n = running.iter().filter(|&&p| s.disk[p].contains(h)).count();
                let want = (*t as usize).min(running.len());
                if n != want {
                    left.push(format!(
                        "chunk {} on {n} running peers, target {want}",
                        &h[..8]
                    ));
                }
            }
            for &p in &running {
                // Garbage a peer kept through a restart may be masked from GC (`MASKED`).
                let masked = |h: &String| {
                    self.restarted[p].as_ref().is_some_and(|(at, held)| {
                        at.elapsed() < MASKED + SETTLE && held.contains(h)
                    })
                };
                for h in s.disk[p]
                    .iter()
                    .filter(|h| !refd.contains_key(*h) && !masked(h))
                {
                    left.push(format!("unreferenced chunk {} still on peer {p}", &h[..8]));
                }
            }
            if left.is_empty() {
                self.counts.settled_rounds += 1;
                return Ok(());
            }
            if Instant::now() >= deadline {
                left.truncate(8);
                let why = self.explain(s, &refd).await;
                return Err(format!(
                    "the manager did not settle within {SETTLE:?}: {left:?}\n{why}"
                ));
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// For a failure report: where each chunk not at its target is on disk, where the
    /// tracker says it is, and the peers' states.
    async fn explain(&mut self, s: &Seq, refd: &HashMap<String, u32>) -> String {
        let mut out = String::new();
        let disk = self.disk();
        let states: Vec<String> = match self.client.peers().await {
            Ok(ps) => ps
                .iter()
                .map(|p| {
                    let id = p.peer.as_ref().map(|r| r.id.clone()).unwrap_or_default();
                    let i = self.ids.iter().position(|x| *x == id);
                    format!("peer {i:?}: state {} chunks {}", p.state, p.chunks)
                })
                .collect(),
            Err(e) => vec![format!("peers: {e}")],
        };
        out += &format!("  peers: {states:?}, down in the harness: {:?}\n", s.down);
        for n in s.model.names.keys() {
            let name = Self::name(s, *n);
            if let Ok(d) = self.client.stat(&name).await {
                for ch in &d.chunks {
                    let on: Vec<usize> = (0..ZONES.len())
                        .filter(|p| disk[*p].contains(&ch.hash))
                        .collect();
                    let listed: Vec<Option<usize>> = ch
                        .replicas
                        .iter()
                        .map(|r| self.ids.iter().position(|x| *x == r.id))
                        .collect();
                    out += &format!(
                        "  {name} chunk {} {}: target {:?}, on disks {on:?}, tracker lists {listed:?}\n",
                        ch.index,
                        &ch.hash[..8],
                        refd.get(&ch.hash)
                    );
                }
            }
        }
        out
    }

    /// After a step: the tracker's view against the model and the disks, then the disks.
    async fn check(
        &mut self,
        s: &mut Seq,
        before: &HashMap<String, u32>,
        after: &HashMap<String, u32>,
        repairs_possible: bool,
    ) -> Result<(), String> {
        let d1 = self.disk();
        let mut listed: Vec<(usize, String)> = Vec::new();
        for n in 0..NAMES {
            let name = Self::name(s, n);
            let res = self.client.stat(&name).await;
            let want = s.model.names.get(&n).cloned();
            match (want, res) {
                (Some(c), Ok(d)) => {
                    let l = self.layout(&c);
                    let sum = d.summary.clone().unwrap_or_default();
                    if sum.id != l.id {
                        return Err(format!("{name} is {}, model says {c:?} ({})", sum.id, l.id));
                    }
                    let hashes: Vec<&str> = d.chunks.iter().map(|c| c.hash.as_str()).collect();
                    if hashes != l.chunks.iter().map(String::as_str).collect::<Vec<_>>() {
                        return Err(format!("{name}: chunk hashes differ from the content's"));
                    }
                    if sum.replicas_target != s.model.target[&c] {
                        return Err(format!(
                            "{name}: target {}, model says {}",
                            sum.replicas_target, s.model.target[&c]
                        ));
                    }
                    for ch in &d.chunks {
                        for p in &ch.replicas {
                            let i =
                                self.ids.iter().position(|id| *id == p.id).ok_or_else(|| {
                                    format!("{name}: a copy on unknown peer {}", p.id)
                                })?;
                            listed.push((i, ch.hash.clone()));
                        }
                    }
                }
                (None, Err(e)) if e.code() == Some(tonic::Code::NotFound) => {}
                (Some(c), Err(e)) => return Err(format!("stat {name} (model: {c:?}): {e}")),
                (None, r) => {
                    return Err(format!("stat of absent {name}: {:?}", r.map(|d| d.summary)))
                }
            }
        }
        let d2 = self.disk();
        // I3: the tracker lists only copies that exist.
        for (p, h) in &listed {
            if !d1[*p].contains(h) && !d2[*p].contains(h) {
                return Err(format!(
                    "I3: the tracker lists a copy of chunk {h} on peer {p}, not on its disk"
                ));
            }
        }
        self.check_disk(s, before, after, &d2, repairs_possible)?;
        s.disk = d2;
        Ok(())
    }

    /// I1 and I2 between `s.disk` (before) and `now`; counts what vanished and appeared.
    fn check_disk(
        &mut self,
        s: &Seq,
        before: &HashMap<String, u32>,
        after: &HashMap<String, u32>,
        now: &Disk,
        repairs_possible: bool,
    ) -> Result<(), String> {
        let copies = |h: &str| now.iter().filter(|d| d.contains(h)).count();
        for h in after.keys() {
            if !(0..ZONES.len()).any(|p| !s.down.contains(&p) && now[p].contains(h)) {
                let names: Vec<u8> = s
                    .model
                    .names
                    .iter()
                    .filter(|(_, c)| self.layouts[*c].chunks.contains(h))
                    .map(|(n, _)| *n)
                    .collect();
                return Err(format!(
                    "I1: chunk {h} of names {names:?} is on no running peer's disk ({} copies on killed peers)",
                    copies(h)
                ));
            }
        }
        for (p, (was, is)) in s.disk.iter().zip(now).enumerate() {
            for h in was.difference(is) {
                match after.get(h) {
                    Some(&ta) => {
                        let t = before.get(h).map_or(ta.min(2), |&tb| tb.min(ta)) as usize;
                        let n = copies(h);
                        if n < t {
                            return Err(format!(
                                "I2: referenced chunk {h} deleted from peer {p}: {n} copies left on disk, at least {t} expected"
                            ));
                        }
                        self.counts.trimmed += 1;
                    }
                    None => self.counts.gc_deleted += 1,
                }
            }
            if repairs_possible {
                let appeared = is.difference(was);
                self.counts.repaired += appeared.filter(|h| after.contains_key(*h)).count() as u64;
            }
        }
        Ok(())
    }

    /// The tracker's own counters (repaired, trimmed, GC-deleted), from its metrics.
    async fn tracker_counters(&self) -> [u64; 3] {
        let mut out = [0; 3];
        let Some(addr) = self.cluster.opts.tracker.metrics_addr else {
            return out;
        };
        let body = scrape(&addr.to_string()).await.unwrap_or_default();
        let wanted = [
            "shoal_tracker_repaired_chunks_total ",
            "shoal_tracker_trimmed_copies_total ",
            "shoal_tracker_gc_deleted_chunks_total ",
        ];
        for l in body.lines() {
            for (k, w) in wanted.iter().enumerate() {
                if let Some(v) = l.strip_prefix(w) {
                    out[k] += v.trim().parse::<u64>().unwrap_or(0);
                }
            }
        }
        out
    }
}

async fn scrape(addr: &str) -> std::io::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut body = String::new();
    stream.read_to_string(&mut body).await?;
    Ok(body)
}

#[derive(Debug)]
struct Failure {
    step: String,
    op: String,
    msg: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.step, self.op, self.msg)
    }
}

fn print_ops(what: &str, ops: &[Op]) {
    eprintln!("{what} ({} ops):", ops.len());
    for (i, op) in ops.iter().enumerate() {
        eprintln!("  {i:2}: {op:?}");
    }
}

/// Replay `ops` on a fresh cluster.
async fn fails_fresh(ops: &[Op]) -> Option<Failure> {
    let mut h = match Harness::start().await {
        Ok(h) => h,
        Err(e) => {
            return Some(Failure {
                step: "start".into(),
                op: String::new(),
                msg: format!("{e:#}"),
            })
        }
    };
    // Safe mode (no trim or GC) ends one `dead_after` after the tracker starts, at once on
    // an empty cluster; the failure was seen on a cluster long past it.
    tokio::time::sleep(h.cluster.opts.tracker.liveness.dead_after).await;
    h.run("shrink", ops).await.err()
}

/// Replay `ops` on fresh clusters until one fails, at most `tries` times: placement
/// depends on the peers' load, so a fresh cluster need not fail at once.
async fn fails_again(ops: &[Op], tries: usize, deadline: Instant) -> Option<Failure> {
    for _ in 0..tries {
        if Instant::now() >= deadline {
            break;
        }
        if let Some(f) = fails_fresh(ops).await {
            return Some(f);
        }
    }
    None
}

/// Delta debugging: drop runs of ops (halves, then smaller) while the sequence still
/// fails on a fresh cluster, until `deadline`. Returns the smallest failing sequence and
/// its failure, or `None` if the original does not fail again on fresh clusters.
async fn shrink(ops: Vec<Op>, deadline: Instant) -> Option<(Vec<Op>, Failure)> {
    let mut failure = fails_again(&ops, 5, deadline).await?;
    let mut best = ops;
    eprintln!("replayed on a fresh cluster, it fails again: {failure}");
    let mut size = best.len().div_ceil(2);
    while size >= 1 && Instant::now() < deadline {
        let mut i = 0;
        let mut progress = false;
        while i < best.len() && Instant::now() < deadline {
            let mut cand = best.clone();
            cand.drain(i..(i + size).min(best.len()));
            match fails_again(&cand, 2, deadline).await {
                Some(f) => {
                    best = cand;
                    failure = f;
                    progress = true;
                    print_ops(&format!("still failing ({failure})"), &best);
                }
                None => i += size,
            }
        }
        if !progress {
            if size == 1 {
                break;
            }
            size = size.div_ceil(2).min(size - 1).max(1);
        }
    }
    if Instant::now() >= deadline {
        eprintln!("shrinking stopped at its deadline");
    }
    Some((best, failure))
}

/// `SHOAL_MODEL_STRICT_PUTS=1`: a put that fails is a failure of the run.
fn strict_puts() -> bool {
    std::env::var("SHOAL_MODEL_STRICT_PUTS").is_ok_and(|v| v == "1")
}

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    Some(
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
    )
}

/// A failed sequence: its index, seed, operations and failure.
type Failed = (u64, u64, Vec<Op>, Failure);

/// Run sequences `next..sequences` (shared counter) on one cluster of its own until they
/// are done or some cluster saw a failure.
async fn worker(
    next: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    sequences: u64,
    base: u64,
) -> (Counts, [u64; 3], Option<Failed>) {
    let mut h = Harness::start().await.expect("cluster starts");
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= sequences || stop.load(Ordering::Relaxed) {
            break;
        }
        let seed = base + i;
        let ops = generate(seed);
        if let Err(f) = h.run(&format!("m{seed}"), &ops).await {
            stop.store(true, Ordering::Relaxed);
            let counters = h.tracker_counters().await;
            return (h.counts, counters, Some((i, seed, ops, f)));
        }
    }
    let counters = h.tracker_counters().await;
    (h.counts, counters, None)
}

/// Sequences run on `SHOAL_MODEL_CLUSTERS` (default 6) clusters at once: a step mostly
/// waits (for RPCs, heartbeats, manager rounds), so independent clusters share the cores
/// well; each sequence runs whole on one cluster.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn random_sequences_never_lose_a_named_chunk() {
    let started = Instant::now();
    let sequences = env_u64("SHOAL_MODEL_SEQUENCES").unwrap_or(500);
    let clusters = env_u64("SHOAL_MODEL_CLUSTERS").unwrap_or(6).clamp(1, 16);
    let base =
        env_u64("SHOAL_MODEL_SEED").unwrap_or_else(|| u64::from(rand::rng().random::<u32>()));
    eprintln!(
        "model: {sequences} sequences from seed {base} on {clusters} clusters (sequence i has \
         seed {base}+i; SHOAL_MODEL_SEED=<seed> SHOAL_MODEL_SEQUENCES=1 runs one again)"
    );
    let (next, stop) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clusters {
        tasks.spawn(worker(next.clone(), stop.clone(), sequences, base));
    }
    let mut total = Counts::default();
    let mut tracker = [0u64; 3];
    let mut failed: Option<Failed> = None;
    while let Some(r) = tasks.join_next().await {
        let (counts, t, f) = r.expect("worker panicked");
        total.add(&counts);
        for k in 0..3 {
            tracker[k] += t[k];
        }
        if let Some(f) = f {
            if failed.as_ref().is_none_or(|g| f.0 < g.0) {
                failed = Some(f);
            }
        }
    }
    let c = &total;
    let ran = next.load(Ordering::Relaxed).min(sequences);
    eprintln!(
        "model: {ran} sequences, {} steps in {:?}; on disk: {} copies of unnamed chunks deleted, \
         {} of named ones trimmed, {} repaired; {} deduplicated puts, {} refused, {} kills, \
         {} settled rounds ({} waited for a death); tracker: {} repaired, {} trimmed, {} collected by GC",
        c.steps,
        started.elapsed(),
        c.gc_deleted,
        c.trimmed,
        c.repaired,
        c.deduplicated_puts,
        c.refused_puts,
        c.kills,
        c.settled_rounds,
        c.deaths_waited,
        tracker[0],
        tracker[1],
        tracker[2],
    );
    if c.failed_puts_peer_down + c.failed_puts_all_up > 0 {
        eprintln!(
            "  puts failed (tolerated; SHOAL_MODEL_STRICT_PUTS=1 makes them fatal): {} with a peer \
             down, {} with every peer up; first errors: {:#?}",
            c.failed_puts_peer_down, c.failed_puts_all_up, c.failed_put_errors
        );
    }
    for (k, (n, d)) in &c.time {
        eprintln!(
            "  {k:>13}: {n:5} steps, {:6.1} ms each",
            d.as_secs_f64() * 1e3 / *n as f64
        );
    }
    if let Some((i, seed, ops, f)) = failed {
        eprintln!("sequence {i} (seed {seed}) FAILED at {f}");
        print_ops("failing sequence", &ops);
        // Within nextest's limit (5 x 60 s) whatever the run took.
        let deadline = started + Duration::from_secs(280);
        match shrink(ops, deadline).await {
            Some((min, f)) => {
                print_ops(
                    &format!("minimal failing sequence (seed {seed}): {f}"),
                    &min,
                );
                panic!("model violated (seed {seed}): {f}");
            }
            None => panic!(
                "model violated (seed {seed}): {f}; it did not fail again on a fresh cluster"
            ),
        }
    }
    // Not vacuous: over a full run the manager really collected, trimmed and repaired.
    if sequences >= 200 {
        assert!(tracker[2] > 0, "GC never deleted a copy: {tracker:?}");
        assert!(
            tracker[1] > 0 && c.trimmed > 0,
            "trim never deleted a copy: {tracker:?} {c:?}"
        );
        assert!(
            tracker[0] > 0 && c.repaired > 0,
            "repair never made a copy: {tracker:?} {c:?}"
        );
    }
}
