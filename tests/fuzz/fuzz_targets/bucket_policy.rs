#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| fuzz_targets::s3::bucket_policy(data));
