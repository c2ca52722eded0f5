//! Replays every committed fuzz input (fuzz/seeds and the minimised
//! fuzz/corpus) through the fuzz targets' own functions, on stable: CI runs
//! each target's code on each input without cargo-fuzz. A panic fails the
//! test and names the input.

#[path = "../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod harness;

use std::path::Path;

#[test]
fn every_committed_fuzz_input_replays_without_a_panic() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    for (name, target) in harness::TARGETS {
        let mut inputs = 0;
        for dir in ["seeds", "corpus"] {
            let Ok(entries) = std::fs::read_dir(fuzz.join(dir).join(name)) else {
                continue;
            };
            for entry in entries {
                let path = entry.unwrap().path();
                let data = std::fs::read(&path).unwrap();
                let ok = std::panic::catch_unwind(|| target(&data));
                assert!(
                    ok.is_ok(),
                    "fuzz target {name} panicked on {}",
                    path.display()
                );
                inputs += 1;
            }
        }
        assert!(inputs > 0, "fuzz target {name} has no committed inputs");
    }
}

/// The regression inputs the fuzz targets found, kept even if the corpora
/// are re-minimised.
#[test]
fn fuzz_findings_stay_fixed() {
    // bmap: an end tag before the start tag crossed the slice bounds.
    harness::bmap(b"<bmap version=\"1.4\"><ImageSize>8192</ImageSize><BlockSize>4096</BlockSize><BlocksCount>2</BlocksCount><MappedBlocksCount>1</MappedBlocksCount></BlockMap><BlockMap></bmap>");
    // partition_table: a used MBR entry at sector 0 made mbrman panic.
    let mut disk = vec![0u8; 1 + 64 * 512];
    disk[0] = 1;
    disk[1 + 446 + 4] = 0x83;
    disk[1 + 446 + 12] = 8;
    disk[1 + 510] = 0x55;
    disk[1 + 511] = 0xaa;
    harness::partition_table(&disk);
}
