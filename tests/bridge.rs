//! The one-time bridge: a device whose agent predates the update repository
//! (it cannot pull, and its parser refuses every header field it does not
//! know) installs its first update in the new format with its own `update
//! apply`; that update carries the agent that pulls from then on. These
//! tests run today's update files through frozen copies of the released
//! agents' verifiers (tests/released/), so a header change that would strand
//! those devices fails here first.

mod common;
use common::*;

#[path = "released/update_format_1.rs"]
mod released_1;
#[path = "released/update_format_2.rs"]
mod released_2;

use edgeimg_contract::update::format;
use std::path::{Path, PathBuf};

/// The payload sets today's builder writes: a UEFI image (kernel and
/// initrd), a Secure Boot image (a signed UKI per slot), a Raspberry Pi
/// image (boot partition files).
/// Named payload sets: (set name, [(payload name, bytes)]).
type PayloadSets = Vec<(&'static str, Vec<(&'static str, &'static [u8])>)>;

fn payload_sets() -> PayloadSets {
    vec![
        (
            "uefi",
            vec![
                ("root.erofs", &b"a root image"[..]),
                ("vmlinuz", b"a kernel"),
                ("initrd.img", b"an initrd"),
            ],
        ),
        (
            "secure-boot",
            vec![
                ("root.erofs", &b"a root image"[..]),
                ("uki-a.efi", b"slot a's UKI"),
                ("uki-b.efi", b"slot b's UKI"),
            ],
        ),
        (
            "rpi",
            vec![
                ("root.erofs", &b"a root image"[..]),
                ("boot/a/kernel8.img", b"a kernel"),
                ("boot/a/initramfs8", b"an initrd"),
                ("boot/start4.elf", b"firmware"),
            ],
        ),
    ]
}

fn build(
    dir: &Path,
    key: &Path,
    set: &str,
    generation: u64,
    payloads: &[(&str, &[u8])],
) -> PathBuf {
    let sub = dir.join(format!("{set}-{generation}"));
    std::fs::create_dir_all(&sub).unwrap();
    updates::make_update_with(
        &sub,
        key,
        "x86_64",
        "amd64",
        generation,
        payloads,
        "0123456789abcdef",
    )
}

fn public(p: &Path) -> ed25519_dalek::VerifyingKey {
    edgeimg_contract::update::keys::read_public(p).unwrap()
}

/// The agent before the repository reads format 1 and 2 (it knows the
/// generation): every update today's builder writes, of any generation and
/// payload set, verifies there as it does today, header for header.
#[test]
fn today_s_updates_verify_under_the_agent_before_the_repository() {
    let d = tempfile::tempdir().unwrap();
    let (key, pubkey) = updates::keygen(d.path(), "k");
    let vk = public(&pubkey);
    for (set, payloads) in payload_sets() {
        for generation in [0, 1, 42] {
            let u = build(d.path(), &key, set, generation, &payloads);
            let expect = released_2::Expect {
                board: Some("x86_64"),
                arch: Some("amd64"),
            };
            let old = released_2::verify_file(&u, &vk, &expect)
                .unwrap_or_else(|e| panic!("{set} generation {generation}: {e}"));
            let new = format::verify_file(&u, &vk, &format::Expect::default()).unwrap();
            assert_eq!(old.header.generation, generation);
            assert_eq!(old.payload_start, new.payload_start);
            assert_eq!(
                serde_json::to_value(&old.header).unwrap(),
                serde_json::to_value(&new.header).unwrap(),
                "{set} generation {generation}"
            );
            // And the old checks still bite: another board is refused.
            let e = released_2::verify_file(
                &u,
                &vk,
                &released_2::Expect {
                    board: Some("rpi4"),
                    arch: None,
                },
            )
            .unwrap_err()
            .to_string();
            assert!(e.contains("for board x86_64"), "{e}");
        }
    }
}

/// The first agent reads format 1 only: today's builder writes an update
/// of generation 0 in format 1, which that agent verifies; one with a
/// generation is format 2, which it refuses before writing anything. A
/// device that old is bridged by a generation-0 update (the default
/// `[update] generation`).
#[test]
fn the_first_agent_takes_a_generation_0_update_and_refuses_a_newer_format_cleanly() {
    let d = tempfile::tempdir().unwrap();
    let (key, pubkey) = updates::keygen(d.path(), "k");
    let vk = public(&pubkey);
    for (set, payloads) in payload_sets() {
        let u = build(d.path(), &key, set, 0, &payloads);
        let expect = released_1::Expect {
            board: Some("x86_64"),
            arch: Some("amd64"),
        };
        let v = released_1::verify_file(&u, &vk, &expect)
            .unwrap_or_else(|e| panic!("{set} generation 0: {e}"));
        assert_eq!(v.header.payloads.len(), payloads.len());
        let u = build(d.path(), &key, set, 3, &payloads);
        let e = released_1::verify_file(&u, &vk, &expect)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("update format version 2 is not supported"),
            "{set}: {e}"
        );
    }
}

/// Every field of today's header is one the agent before the repository
/// knows (it refuses unknown fields): a field added to
/// `edgeimg_contract::update::format::Header` fails here, and needs a bridge
/// of its own (omitted when unset, as `generation` is when 0, or a new
/// format version the old agents refuse by number).
#[test]
fn the_header_has_no_field_the_released_agents_do_not_know() {
    let h = format::Header {
        name: "n".into(),
        board: "b".into(),
        arch: "a".into(),
        build_id: "i".into(),
        edgeimg_version: "v".into(),
        kernel_version: "k".into(),
        cmdline: "c".into(),
        created: 1,
        key_id: "id".into(),
        generation: 2,
        payloads: vec![format::Payload {
            name: "root.erofs".into(),
            offset: 0,
            size: 1,
            sha256: "0".repeat(64),
        }],
    };
    let json = serde_json::to_value(&h).unwrap();
    let old: released_2::Header = serde_json::from_value(json.clone())
        .unwrap_or_else(|e| panic!("the agent before the repository cannot read {json}: {e}"));
    assert_eq!(serde_json::to_value(&old).unwrap(), json);
    // Without a generation, the header is the first agent's too.
    let h0 = format::Header { generation: 0, ..h };
    let json = serde_json::to_value(&h0).unwrap();
    let _: released_1::Header = serde_json::from_value(json.clone())
        .unwrap_or_else(|e| panic!("the first agent cannot read {json}: {e}"));
    assert_eq!(format::format_version(&h0), released_1::FORMAT_VERSION);
}
