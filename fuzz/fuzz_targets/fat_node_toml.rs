#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| edgeimg_fuzz::fat_node_toml(data));
