//! `edgeimg publish`: a static TUF repository of a fleet's signed updates.
//!
//! ```text
//! DIR/<board>/metadata/root.json          the newest root (a copy of N.root.json)
//! DIR/<board>/metadata/N.root.json        every root version, for rotation
//! DIR/<board>/metadata/N.targets.json     consistent snapshots: never rewritten
//! DIR/<board>/metadata/N.snapshot.json
//! DIR/<board>/metadata/timestamp.json     the only file replaced in place
//! DIR/<board>/targets/<sha256>.<name>     update files and deltas
//! ```
//!
//! A target is `<name>-<board>-<generation>-<build id>.update` (the signed
//! update file as built) or `<that>.delta-from-<old build id>` (see
//! [`delta`]). Each carries `custom` metadata: `kind` (`full` or `delta`),
//! name, board, arch, generation, build_id, created, and for a delta its
//! base's build id and root image SHA-256.
//!
//! A publish signs everything in memory first, then writes the new target
//! files, then the new metadata files, the timestamp last, each through a
//! temporary file renamed into place: a reader sees the old repository or
//! the new one, and a publish that fails leaves the old one, byte for byte.

pub mod delta;

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use edgeimg_contract::update::{format, keys};
use tough::editor::RepositoryEditor;
use tough::schema::{RoleType, Target};
use tough::{ExpirationEnforcement, RepositoryLoader, TargetName};

/// Default validity of the targets and snapshot metadata.
pub const DEFAULT_EXPIRES: &str = "90d";
/// Default validity of the timestamp metadata: refresh it at least this often.
pub const DEFAULT_TIMESTAMP_EXPIRES: &str = "7d";

/// An expiry: `N` days (`Nd`) or hours (`Nh`) from now, or an RFC 3339 time.
pub fn parse_expiry(s: &str) -> Result<jiff::Timestamp> {
    let now = jiff::Timestamp::now();
    let rel = |n: &str, hours: i64| -> Result<jiff::Timestamp> {
        let n: i64 = n
            .parse()
            .ok()
            .filter(|n| *n > 0 && *n < 100 * 366)
            .with_context(|| format!("expiry {s:?}: the number must be a positive whole number"))?;
        Ok(now.checked_add(jiff::SignedDuration::from_hours(n * hours))?)
    };
    let t = if let Some(n) = s.strip_suffix('d') {
        rel(n, 24)?
    } else if let Some(n) = s.strip_suffix('h') {
        rel(n, 1)?
    } else {
        s.parse::<jiff::Timestamp>().map_err(|e| {
            anyhow::anyhow!(
                "expiry {s:?} is neither a duration (30d, 12h) nor an RFC 3339 time: {e}"
            )
        })?
    };
    if t <= now {
        bail!("expiry {s:?} is in the past");
    }
    Ok(t)
}

pub struct Options<'a> {
    pub update: &'a Path,
    pub repo: &'a Path,
    /// TUF key prefix (`edgeimg keygen --tuf`).
    pub keys: &'a Path,
    /// The update signing public key the devices trust.
    pub update_key: &'a Path,
    pub deltas: usize,
    pub expires: jiff::Timestamp,
    pub timestamp_expires: jiff::Timestamp,
}

/// What a publish did.
#[derive(Debug)]
pub struct Report {
    pub board: String,
    /// The full update's target name.
    pub target: String,
    /// Delta target names made (empty when already published).
    pub deltas: Vec<String>,
    pub already_published: bool,
}

fn board_dirs(repo: &Path, board: &str) -> (PathBuf, PathBuf) {
    let b = repo.join(board);
    (b.join("metadata"), b.join("targets"))
}

fn dir_url(p: &Path) -> Result<url::Url> {
    let abs = std::path::absolute(p).with_context(|| p.display().to_string())?;
    url::Url::from_directory_path(&abs)
        .map_err(|_| anyhow::anyhow!("{} cannot be a URL", abs.display()))
}

/// The board's repository as it is, checked as a client would (signatures,
/// versions, hashes; not expiry, so an expired timestamp can be refreshed),
/// or None if there is none yet.
async fn load(metadata: &Path, targets: &Path) -> Result<Option<tough::Repository>> {
    let ts = metadata.join("timestamp.json");
    if !ts.exists() {
        return Ok(None);
    }
    let root_file = metadata.join("root.json");
    let root = read_bounded(&root_file, 1 << 20)?;
    let cache = tempfile::tempdir().context("temporary directory")?;
    let repo = RepositoryLoader::new(&root, dir_url(metadata)?, dir_url(targets)?)
        .expiration_enforcement(ExpirationEnforcement::Unsafe)
        .datastore(cache.path())
        .load()
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "the repository in {} does not verify: {e}",
                metadata.display()
            )
        })?;
    Ok(Some(repo))
}

fn read_bounded(p: &Path, max: u64) -> Result<Vec<u8>> {
    use std::io::Read;
    let f = std::fs::File::open(p).with_context(|| format!("cannot read {}", p.display()))?;
    let mut v = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut v)
        .with_context(|| format!("cannot read {}", p.display()))?;
    if v.len() as u64 > max {
        bail!("{} is larger than {max} bytes", p.display());
    }
    Ok(v)
}

fn version_after(v: NonZeroU64) -> NonZeroU64 {
    v.checked_add(1).unwrap_or(v)
}

fn custom_str<'a>(t: &'a Target, key: &str) -> Option<&'a str> {
    t.custom.get(key).and_then(|v| v.as_str())
}

fn custom_u64(t: &Target, key: &str) -> Option<u64> {
    t.custom.get(key).and_then(|v| v.as_u64())
}

/// `targets/<sha256>.<name>` of a target.
fn target_file(targets: &Path, name: &str, t: &Target) -> PathBuf {
    targets.join(format!("{}.{}", hex::encode(&t.hashes.sha256), name))
}

fn sha256_file(p: &Path) -> Result<(String, u64)> {
    use sha2::Digest;
    let mut f = std::fs::File::open(p).with_context(|| format!("cannot read {}", p.display()))?;
    let mut h = sha2::Sha256::new();
    let n = std::io::copy(&mut f, &mut delta::HashWriter(&mut h))
        .with_context(|| format!("cannot read {}", p.display()))?;
    Ok((hex::encode(h.finalize()), n))
}

/// Files created by this publish, removed again unless it completes.
struct Created(Vec<PathBuf>);

impl Created {
    fn keep(mut self) {
        self.0.clear();
    }
}

impl Drop for Created {
    fn drop(&mut self) {
        for p in self.0.iter().rev() {
            let _ = if p.is_dir() {
                std::fs::remove_dir(p)
            } else {
                std::fs::remove_file(p)
            };
        }
    }
}

fn mkdir(p: &Path, created: &mut Created) -> Result<()> {
    if !p.is_dir() {
        std::fs::create_dir(p).with_context(|| format!("cannot create {}", p.display()))?;
        created.0.push(p.to_path_buf());
    }
    Ok(())
}

/// Renames `from` to the new name `to`, which must not exist yet.
fn place_new(from: &Path, to: &Path, created: &mut Created) -> Result<()> {
    if to.exists() {
        bail!(
            "{} already exists; the repository is not what its metadata says",
            to.display()
        );
    }
    std::fs::rename(from, to).with_context(|| format!("cannot write {}", to.display()))?;
    created.0.push(to.to_path_buf());
    Ok(())
}

fn sync_dir(p: &Path) {
    if let Ok(d) = std::fs::File::open(p) {
        let _ = d.sync_all();
    }
}

/// The update a publish was given, checked before the repository is touched.
struct Incoming {
    verified: format::Verified,
    update_key: ed25519_dalek::VerifyingKey,
    /// The full update's target name.
    name: String,
    tname: TargetName,
}

/// Verifies the update as a device would and names its target. Name, board
/// and build id become a file name and a directory: plain names only,
/// whatever a signed header says.
fn check_incoming(o: &Options) -> Result<Incoming> {
    let update_key = keys::read_public(o.update_key).map_err(|e| anyhow::anyhow!("{e}"))?;
    let verified = format::verify_file(o.update, &update_key, &format::Expect::default())
        .map_err(|e| anyhow::anyhow!("update refused: {e}"))?;
    let h = &verified.header;
    h.payload(format::ROOT)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    for (what, v) in [
        ("name", &h.name),
        ("board", &h.board),
        ("build_id", &h.build_id),
    ] {
        if !plain_name(v) {
            bail!(
                "{}: its {what} {v:?} cannot be part of a file name (letters, digits, '.', '_', '-')",
                o.update.display()
            );
        }
    }
    let name = edgeimg_contract::update::target_name(h);
    let tname = TargetName::new(name.clone()).map_err(|e| {
        anyhow::anyhow!(
            "{}: {name:?} cannot be a target name: {e}",
            o.update.display()
        )
    })?;
    Ok(Incoming {
        verified,
        update_key,
        name,
        tname,
    })
}

/// An editor for the board's repository (the loaded one with every role's
/// version raised, or a new one from the fleet's root metadata) with the
/// new expiry times, and the releases to make deltas from.
async fn open_editor(
    existing: Option<tough::Repository>,
    metadata: &Path,
    o: &Options<'_>,
    h: &format::Header,
) -> Result<(RepositoryEditor, Vec<(String, Target)>)> {
    let (mut e, prior) = match existing {
        Some(repo) => {
            let (tv, sv, ts) = (
                repo.targets().signed.version,
                repo.snapshot().signed.version,
                repo.timestamp().signed.version,
            );
            let prior = previous_releases(&repo, h, o.deltas);
            let mut e = RepositoryEditor::from_repo(metadata.join("root.json"), repo)
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", metadata.display()))?;
            e.targets_version(version_after(tv))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            e.snapshot_version(version_after(sv));
            e.timestamp_version(version_after(ts));
            (e, prior)
        }
        None => {
            let root_file = crate::tuf::root_path(o.keys);
            let mut e = RepositoryEditor::new(&root_file)
                .await
                .map_err(|e| anyhow::anyhow!("{}: {e}", root_file.display()))?;
            e.targets_version(NonZeroU64::MIN)
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            e.snapshot_version(NonZeroU64::MIN);
            e.timestamp_version(NonZeroU64::MIN);
            (e, vec![])
        }
    };
    e.targets_expires(o.expires)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    e.snapshot_expires(o.expires);
    e.timestamp_expires(o.timestamp_expires);
    Ok((e, prior))
}

/// A target file made in the staging directory: where it is, its target
/// name and its metadata.
type Staged = (PathBuf, String, Target);

/// Copies the update into `staging` and describes it as the full target.
/// The copy is what gets published: it is verified again and must be the
/// file whose hash (`sha`, `len`) and header the metadata will carry.
async fn stage_full(
    o: &Options<'_>,
    inc: &Incoming,
    staging: &Path,
    (sha, len): (&str, u64),
) -> Result<Staged> {
    let h = &inc.verified.header;
    let root = h
        .payload(format::ROOT)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut full = Target::from_path(o.update)
        .await
        .map_err(|e| anyhow::anyhow!("{}: {e}", o.update.display()))?;
    full.custom = release_custom(h, "full");
    full.custom
        .insert("root_sha256".into(), root.sha256.clone().into());
    full.custom.insert("root_size".into(), root.size.into());
    let staged = staging.join("full");
    std::fs::copy(o.update, &staged)
        .with_context(|| format!("cannot copy {}", o.update.display()))?;
    let again = format::verify_file(&staged, &inc.update_key, &format::Expect::default())
        .map_err(|e| anyhow::anyhow!("update refused: {e}"))?;
    if sha256_file(&staged)? != (sha.to_string(), len)
        || hex::encode(&full.hashes.sha256) != sha
        || full.length != len
        || again.header != *h
    {
        bail!(
            "{} changed while it was being published",
            o.update.display()
        );
    }
    Ok((staged, inc.name.clone(), full))
}

/// Makes a delta to the staged full update from each of `prior` (skipping
/// one signed with a key this publish does not trust) and describes it.
async fn stage_deltas(
    inc: &Incoming,
    prior: &[(String, Target)],
    targets: &Path,
    staging: &Path,
    full: &Staged,
) -> Result<Vec<Staged>> {
    let h = &inc.verified.header;
    let mut made = vec![];
    for (old_name, old) in prior {
        let dname = format!(
            "{}.delta-from-{}",
            inc.name,
            custom_str(old, "build_id").unwrap_or("?")
        );
        let staged = staging.join(format!("delta-{}", made.len()));
        if !make_delta(
            &target_file(targets, old_name, old),
            old_name,
            old,
            &inc.update_key,
            &full.0,
            &inc.verified,
            &staged,
        )? {
            continue;
        }
        let mut t = Target::from_path(&staged)
            .await
            .map_err(|e| anyhow::anyhow!("{}: {e}", staged.display()))?;
        t.custom = release_custom(h, "delta");
        t.custom.insert("target".into(), inc.name.clone().into());
        t.custom.insert(
            "target_sha256".into(),
            hex::encode(&full.2.hashes.sha256).into(),
        );
        t.custom
            .insert("target_length".into(), full.2.length.into());
        for (k, from) in [
            ("base_build_id", "build_id"),
            ("base_root_sha256", "root_sha256"),
            ("base_generation", "generation"),
        ] {
            if let Some(v) = old.custom.get(from) {
                t.custom.insert(k.into(), v.clone());
            }
        }
        made.push((staged, dname, t));
    }
    Ok(made)
}

/// `edgeimg publish FILE --repo DIR --keys PREFIX`: everything that can
/// refuse does so before the repository is touched; new files are made in a
/// staging directory, signed in memory, then placed (targets, metadata, the
/// timestamp last).
pub fn publish(o: &Options) -> Result<Report> {
    let signing = crate::tuf::load_keys(
        o.keys,
        &[RoleType::Targets, RoleType::Snapshot, RoleType::Timestamp],
    )?;
    let inc = check_incoming(o)?;
    let h = &inc.verified.header;
    let report = |deltas, already_published| Report {
        board: h.board.clone(),
        target: inc.name.clone(),
        deltas,
        already_published,
    };
    // One publish at a time per repository (the lock file is removed again).
    let _lock = crate::cache::Lock::acquire_transient(&o.repo.join(".publish.lock"))?;
    let (metadata, targets) = board_dirs(o.repo, &h.board);
    crate::tuf::block_on(async {
        let existing = load(&metadata, &targets).await?;
        let (update_sha, update_len) = sha256_file(o.update)?;
        if let Some(t) = existing
            .as_ref()
            .and_then(|repo| repo.targets().signed.targets.get(&inc.tname))
        {
            if hex::encode(&t.hashes.sha256) == update_sha {
                return Ok(report(vec![], true));
            }
            bail!(
                "{} is already in the repository with other contents (same name, generation and build id, different bytes)",
                inc.name
            );
        }
        let (mut editor, prior) = open_editor(existing, &metadata, o, h).await?;

        let board_dir = metadata.parent().unwrap().to_path_buf();
        std::fs::create_dir_all(o.repo)
            .with_context(|| format!("cannot create {}", o.repo.display()))?;
        let mut created = Created(vec![]);
        mkdir(&board_dir, &mut created)?;
        mkdir(&metadata, &mut created)?;
        mkdir(&targets, &mut created)?;
        let staging = tempfile::Builder::new()
            .prefix(".publish-")
            .tempdir_in(&board_dir)
            .with_context(|| format!("cannot create a directory in {}", board_dir.display()))?;
        let full = stage_full(o, &inc, staging.path(), (&update_sha, update_len)).await?;
        let deltas = stage_deltas(&inc, &prior, &targets, staging.path(), &full).await?;
        let delta_names = deltas.iter().map(|(_, n, _)| n.clone()).collect();
        let new_targets: Vec<Staged> = std::iter::once(full).chain(deltas).collect();
        for (_, n, t) in &new_targets {
            editor
                .add_target(n.as_str(), t.clone())
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        let signed = editor.sign(&signing).await.map_err(|e| {
            anyhow::anyhow!(
                "signing the repository metadata: {e} (are these the keys its root names?)"
            )
        })?;
        let meta_stage = staging.path().join("metadata");
        signed
            .write(&meta_stage)
            .await
            .map_err(|e| anyhow::anyhow!("writing the metadata: {e}"))?;

        // 1. target files, 2. metadata, 3. the timestamp.
        for (staged, n, t) in &new_targets {
            place_new(staged, &target_file(&targets, n, t), &mut created)?;
        }
        sync_dir(&targets);
        commit_metadata(&meta_stage, &metadata, staging.path(), &mut created)?;
        created.keep();
        Ok(report(delta_names, false))
    })?
}

/// Moves the signed metadata of `stage` into `metadata`: every versioned
/// file that is new, then `timestamp.json`. A versioned file that exists
/// already must have the same bytes (an unchanged role signs to the same
/// bytes: ed25519 signatures are deterministic).
fn commit_metadata(
    stage: &Path,
    metadata: &Path,
    scratch: &Path,
    created: &mut Created,
) -> Result<()> {
    let mut names: Vec<String> = vec![];
    for e in std::fs::read_dir(stage)? {
        let n = e?.file_name().to_string_lossy().into_owned();
        if n != "timestamp.json" {
            names.push(n);
        }
    }
    names.sort();
    for n in &names {
        let to = metadata.join(n);
        if to.exists() {
            if std::fs::read(&to)? != std::fs::read(stage.join(n))? {
                bail!(
                    "{} exists with other contents; refusing to replace it",
                    to.display()
                );
            }
            continue;
        }
        place_new(&stage.join(n), &to, created)?;
        if n.ends_with(".root.json") && !metadata.join("root.json").exists() {
            // A new repository: root.json is the newest root.
            let copy = scratch.join("root.json");
            std::fs::copy(&to, &copy)?;
            place_new(&copy, &metadata.join("root.json"), created)?;
        }
    }
    sync_dir(metadata);
    let ts = metadata.join("timestamp.json");
    std::fs::rename(stage.join("timestamp.json"), &ts)
        .with_context(|| format!("cannot write {}", ts.display()))?;
    sync_dir(metadata);
    Ok(())
}

/// `edgeimg publish --refresh-timestamp`: new snapshot and timestamp
/// versions with new expiries for every board of the repository, signed
/// with the snapshot and timestamp keys; the targets metadata is not
/// touched. Returns the boards refreshed.
pub fn refresh_timestamp(
    repo: &Path,
    keys_prefix: &Path,
    expires: jiff::Timestamp,
    timestamp_expires: jiff::Timestamp,
) -> Result<Vec<String>> {
    use tough::editor::signed::SignedRole;
    use tough::schema::{Hashes, KeyHolder, Metafile};
    let signing = crate::tuf::load_keys(keys_prefix, &[RoleType::Snapshot, RoleType::Timestamp])?;
    if !repo.is_dir() {
        bail!("{} is not a directory", repo.display());
    }
    let _lock = crate::cache::Lock::acquire_transient(&repo.join(".publish.lock"))?;
    let mut boards = vec![];
    for e in std::fs::read_dir(repo).with_context(|| format!("cannot read {}", repo.display()))? {
        let e = e?;
        let board = e.file_name().to_string_lossy().into_owned();
        if !board.starts_with('.') && e.path().join("metadata/timestamp.json").is_file() {
            boards.push(board);
        }
    }
    boards.sort();
    if boards.is_empty() {
        bail!(
            "{} holds no repository (no <board>/metadata/timestamp.json)",
            repo.display()
        );
    }
    // Every board is signed before any is written.
    let mut signed_all = vec![];
    crate::tuf::block_on(async {
        let rng = aws_lc_rs::rand::SystemRandom::new();
        for board in &boards {
            let (metadata, targets) = board_dirs(repo, board);
            let r = load(&metadata, &targets).await?.context("no repository")?;
            let holder = KeyHolder::Root(r.root().signed.clone());
            let mut snapshot = r.snapshot().signed.clone();
            snapshot.version = version_after(snapshot.version);
            snapshot.expires = expires;
            let snapshot_version = snapshot.version;
            let sign_err = |e: tough::error::Error| {
                anyhow::anyhow!(
                    "signing the metadata of {}: {e} (are these the keys its root names?)",
                    metadata.display()
                )
            };
            let snapshot = SignedRole::new(snapshot, &holder, &signing, &rng)
                .await
                .map_err(sign_err)?;
            let mut ts = r.timestamp().signed.clone();
            ts.version = version_after(ts.version);
            ts.expires = timestamp_expires;
            ts.meta.insert(
                "snapshot.json".into(),
                Metafile {
                    length: Some(*snapshot.length()),
                    hashes: Some(Hashes {
                        sha256: snapshot.sha256().to_vec().into(),
                        _extra: HashMap::new(),
                    }),
                    version: snapshot_version,
                    _extra: HashMap::new(),
                },
            );
            let ts = SignedRole::new(ts, &holder, &signing, &rng)
                .await
                .map_err(sign_err)?;
            signed_all.push((metadata, snapshot, ts));
        }
        anyhow::Ok(())
    })??;
    for (metadata, snapshot, ts) in signed_all {
        let board_dir = metadata.parent().unwrap();
        let staging = tempfile::Builder::new()
            .prefix(".publish-")
            .tempdir_in(board_dir)
            .with_context(|| format!("cannot create a directory in {}", board_dir.display()))?;
        let stage = staging.path().join("metadata");
        crate::tuf::block_on(async {
            snapshot.write(&stage, true).await?;
            ts.write(&stage, true).await
        })?
        .map_err(|e| anyhow::anyhow!("writing the metadata: {e}"))?;
        let mut created = Created(vec![]);
        commit_metadata(&stage, &metadata, staging.path(), &mut created)?;
        created.keep();
    }
    Ok(boards)
}

/// `edgeimg publish` from its command line.
pub fn run(a: crate::cli::PublishArgs, quiet: bool) -> Result<()> {
    let expires = parse_expiry(&a.expires)?;
    let timestamp_expires = parse_expiry(&a.timestamp_expires)?;
    if a.refresh_timestamp {
        for b in refresh_timestamp(&a.repo, &a.keys, expires, timestamp_expires)? {
            if !quiet {
                println!(
                    "{}: snapshot and timestamp re-signed",
                    a.repo.join(b).display()
                );
            }
        }
        return Ok(());
    }
    let (Some(file), Some(update_key)) = (a.file.as_deref(), a.update_key.as_deref()) else {
        bail!("publish needs the update file and --update-key");
    };
    for p in [file, update_key] {
        std::fs::File::open(p).map_err(|cause| crate::exit::Unreadable {
            path: p.to_path_buf(),
            cause,
        })?;
    }
    let r = publish(&Options {
        update: file,
        repo: &a.repo,
        keys: &a.keys,
        update_key,
        deltas: a.deltas,
        expires,
        timestamp_expires,
    })?;
    if !quiet {
        let dir = a.repo.join(&r.board);
        if r.already_published {
            println!(
                "{}: {} is already published; nothing changed",
                dir.display(),
                r.target
            );
        } else {
            println!("{}: {}", dir.display(), r.target);
            for d in &r.deltas {
                println!("{}: {d}", dir.display());
            }
        }
    }
    Ok(())
}

/// A name that is safe as one path component and in a URL.
fn plain_name(s: &str) -> bool {
    !s.is_empty()
        && !s.starts_with('.')
        && s.len() <= 100
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn release_custom(h: &format::Header, kind: &str) -> HashMap<String, serde_json::Value> {
    let mut m = HashMap::new();
    m.insert("kind".into(), kind.into());
    m.insert("name".into(), h.name.clone().into());
    m.insert("board".into(), h.board.clone().into());
    m.insert("arch".into(), h.arch.clone().into());
    m.insert("generation".into(), h.generation.into());
    m.insert("build_id".into(), h.build_id.clone().into());
    m.insert("created".into(), h.created.into());
    m
}

/// The `n` newest full releases of the board older than `h` (by
/// generation, then build time), newest first.
fn previous_releases(
    repo: &tough::Repository,
    h: &format::Header,
    n: usize,
) -> Vec<(String, Target)> {
    let key = |g: u64, c: u64| (g, c);
    let mine = key(h.generation, h.created);
    let mut v: Vec<(String, Target)> = repo
        .all_targets()
        .filter(|(_, t)| custom_str(t, "kind") == Some("full"))
        .filter(|(_, t)| custom_str(t, "board") == Some(h.board.as_str()))
        .filter(|(_, t)| custom_str(t, "build_id") != Some(h.build_id.as_str()))
        .filter(|(_, t)| {
            key(
                custom_u64(t, "generation").unwrap_or(0),
                custom_u64(t, "created").unwrap_or(0),
            ) <= mine
        })
        .map(|(n, t)| (n.raw().to_string(), t.clone()))
        .collect();
    v.sort_by_key(|(n, t)| {
        std::cmp::Reverse((
            custom_u64(t, "generation").unwrap_or(0),
            custom_u64(t, "created").unwrap_or(0),
            n.clone(),
        ))
    });
    v.truncate(n);
    v
}

/// Makes the delta from the published update `old_file` to `new_file`;
/// false (and a warning) if the old update does not verify with
/// `update_key`.
#[allow(clippy::too_many_arguments)]
fn make_delta(
    old_file: &Path,
    old_name: &str,
    old: &Target,
    update_key: &ed25519_dalek::VerifyingKey,
    new_file: &Path,
    new: &format::Verified,
    out: &Path,
) -> Result<bool> {
    // The old file is the repository's: check it is what its metadata
    // signed, and still a valid update, before reading its root image.
    let (sha, len) = sha256_file(old_file)?;
    if sha != hex::encode(&old.hashes.sha256) || len != old.length {
        bail!(
            "{}: not the {old_name} the repository metadata signed (corrupt or modified)",
            old_file.display()
        );
    }
    let mut of = std::fs::File::open(old_file)?;
    let ov = match format::verify_header(&mut of, len, update_key, &format::Expect::default()) {
        Ok(v) => v,
        Err(e) => {
            // Signed with an update key this publish does not trust (one
            // rotated away): no delta from it, the full update still serves.
            tracing::warn!("no delta from {old_name}: {e}");
            return Ok(false);
        }
    };
    let mut nf = std::fs::File::open(new_file)?;
    let mut w = std::io::BufWriter::new(
        std::fs::File::create(out).with_context(|| format!("cannot create {}", out.display()))?,
    );
    delta::make(&mut of, &ov, &mut nf, new, &mut w)
        .with_context(|| format!("making the delta from {old_name}"))?;
    let f = w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?;
    f.sync_all()?;
    Ok(true)
}
