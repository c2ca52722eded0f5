//! VM test: the x86_64 image boots through the real path (OVMF -> systemd-boot
//! -> kernel -> initramfs -> systemd) on a disk larger than the image, twice.

use edgeimg_qemu_tests::*;

const GIB: u64 = 1024 * 1024 * 1024;
const MIB: u64 = 1024 * 1024;

#[test]
fn x86_64_boots_immutable_and_first_boot_runs_once() {
    let _guard = exclusive();
    let out = tempfile::tempdir().unwrap();
    let report = build("selfcheck.toml", None, out.path()).expect("build the x86_64 test image");
    let image_len = std::fs::metadata(&report.image).unwrap().len();
    let disk_len = image_len + 2 * GIB;
    let disk = out.path().join("disk.raw");
    disk_copy(&report.image, &disk, disk_len).unwrap();

    // First boot: the agent runs, grows the data partition, the node gets ready.
    let (first, ready) = boot_once("x86_64", &disk, out.path(), "x86_64-boot1.log").expect("first boot");
    assert!(ready.contains("edgeimg: node ready"), "{ready}");
    assert_eq!(first["usr_ro"], true, "/usr must be read-only: {first}");
    assert_eq!(first["root_fstype"], "erofs", "{first}");
    assert_eq!(first["etc_fstype"], "overlay", "{first}");
    assert_eq!(first["var_fstype"], "ext4", "{first}");
    assert_eq!(first["disk_bytes"].as_u64(), Some(disk_len), "{first}");
    let part_end = first["part_start"].as_u64().unwrap() + first["part_bytes"].as_u64().unwrap();
    // Grown to the end of the medium, less the backup GPT and 1 MiB alignment.
    assert!(part_end + 2 * MIB > disk_len && part_end <= disk_len, "data partition ends at {part_end} of {disk_len}: {first}");
    assert!(first["part_bytes"].as_u64().unwrap() > 2 * GIB, "data partition did not grow: {first}");
    assert!(first["fs_bytes"].as_u64().unwrap() * 100 > first["part_bytes"].as_u64().unwrap() * 90, "filesystem did not grow: {first}");
    assert_eq!(first["etc_marker"], "", "the /etc marker must not exist before the first boot: {first}");
    assert_eq!(first["firstboot_condition"], "yes", "{first}");
    assert_eq!(first["status"]["ready"], true, "{first}");
    assert_eq!(first["status"]["firstboot_this_boot"], true, "{first}");
    assert_eq!(first["status"]["boots"], 1, "{first}");
    assert!(first["hostname"].as_str().unwrap().starts_with("vm-"), "hostname from the pattern: {first}");
    assert_eq!(first["ops_keys"], 1, "user ops gets its key: {first}");
    assert!(first["ops_groups"].as_str().unwrap().split(',').any(|g| g == "sudo"), "{first}");
    assert_eq!(first["host_key"], true, "SSH host keys made on first boot: {first}");

    // Second boot of the same disk: /etc kept its change, the agent did not run again.
    let (second, _) = boot_once("x86_64", &disk, out.path(), "x86_64-boot2.log").expect("second boot");
    let boot1 = first["boot_id"].as_str().unwrap();
    assert_ne!(second["boot_id"], first["boot_id"]);
    assert_eq!(second["etc_marker"], format!("written-on-{boot1}"), "/etc change lost: {second}");
    assert_eq!(second["firstboot_condition"], "no", "first-boot unit ran again: {second}");
    assert_eq!(second["status"]["firstboot_boot_id"], first["boot_id"], "{second}");
    assert_eq!(second["status"]["firstboot_this_boot"], false, "{second}");
    assert_eq!(second["status"]["boots"], 2, "{second}");
    assert_eq!(second["hostname"], first["hostname"], "hostname must persist: {second}");
    assert_eq!(second["usr_ro"], true);
}
